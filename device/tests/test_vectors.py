"""The shared test vectors: the server's tests check the same files against the same results."""

from __future__ import annotations

import importlib.util
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import VECTORS, load_vectors

from entitle_device import KeyRing, LicenseError, read_system_file, verify

DOCUMENT = load_vectors()
RING = KeyRing.loads((VECTORS / DOCUMENT["keyring"]).read_text())


@pytest.mark.parametrize("vector", DOCUMENT["vectors"], ids=lambda vector: vector["file"])
def test_vector(vector: dict[str, Any]) -> None:
    # R-CORE-9, R-AX-11: every vector gives its expected result
    data = (VECTORS / vector["file"]).read_bytes()
    try:
        if vector["kind"] == "license":
            result: Any = verify(data, RING, datetime.fromisoformat(vector["now"]),
                                 vector["expected_subject"])
        else:
            result = read_system_file(data)
    except LicenseError as error:
        assert error.code == vector["expect"]
    else:
        assert vector["expect"] == "ok"
        expected = DOCUMENT["expected"].get(vector["file"].replace("-crlf", ""))
        if expected and vector["kind"] == "license":
            assert result.kid == expected["kid"] and result.ttl == expected["ttl"]
            assert result.issued == datetime.fromisoformat(expected["issued"])
            assert result.expires == datetime.fromisoformat(expected["expires"])
            assert list(result.subject) == expected["subject"]
            assert result.payload == expected["payload"]
        elif expected:
            assert (result.system_id, result.product) == (expected["system_id"], expected["product"])
            assert result.created == datetime.fromisoformat(expected["created"])
            assert (result.nonce.hex(), result.public_key.hex()) == (expected["nonce_hex"],
                                                                     expected["public_key_hex"])
            assert (result.need, list(result.devices)) == (expected["need"], expected["devices"])


def test_every_result_is_covered_by_a_vector() -> None:
    # R-CORE-9: each failure the verifier tells apart has a vector the server can check too
    expected = {vector["expect"] for vector in DOCUMENT["vectors"]}
    assert expected == {"ok", "malformed", "unsupported_version", "unknown_key", "bad_signature",
                        "not_for_this_system", "expired", "issued_in_future",
                        "malformed_system_file"}


def test_the_vectors_are_what_the_generator_writes(tmp_path: Path) -> None:
    # Signatures are deterministic: regenerating must give byte-identical files, so the vectors
    # cannot drift from the library without this test saying so.
    spec = importlib.util.spec_from_file_location("generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.HERE = tmp_path
    generate.main()
    written = sorted(path.name for path in tmp_path.iterdir())
    committed = [path.name for path in VECTORS.iterdir() if path.suffix in {".lic", ".sys", ".json"}]
    assert written == sorted(committed)
    for name in written:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name
