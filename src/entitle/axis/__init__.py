"""The AXIS License Manager model (SPEC §3). ``rules`` holds the rules as plain code; the
models, services and interfaces come with the rest of the AXIS issue."""
