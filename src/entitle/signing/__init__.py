"""The issuer's Ed25519 signing keys (R-CORE-9): a ring with key ids, rotation, encryption at rest."""
