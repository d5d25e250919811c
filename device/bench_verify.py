"""File verification against one raw Ed25519 verify, same process, one core.

Target (PERFORMANCE.md): verifying a license file costs at most 1.3x a raw
``Ed25519PublicKey.verify`` of a message of the same size. Run: ``make -C device bench``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle_device import KeyRing, sign_license, verify
from entitle_device.licensefile import DOMAIN

BATCH = 200  # calls per timed batch
SECONDS = 10.0  # total run time


def measure(raw: Callable[[], object], full: Callable[[], object]) -> tuple[float, float, float]:
    """Alternate short batches of both, so both see the same machine (other processes, CPU clock).

    Returns the median raw rate, the median file rate and the median of per-pair cost ratios.
    """
    raw_rates, full_rates, ratios = [], [], []
    deadline = time.perf_counter() + SECONDS
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(BATCH):
            raw()
        middle = time.perf_counter()
        for _ in range(BATCH):
            full()
        end = time.perf_counter()
        raw_rates.append(BATCH / (middle - start))
        full_rates.append(BATCH / (end - middle))
        ratios.append((end - middle) / (middle - start))
    return statistics.median(raw_rates), statistics.median(full_rates), statistics.median(ratios)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    ring = KeyRing({"20261123-bench": public})
    issued = datetime(2026, 11, 23, 19, tzinfo=timezone.utc)
    payload = {  # a realistic AXIS-style payload, about 0.9 KB of JSON
        "organization": {"id": "org_7f3a2c", "name": "Example Security Integrators s.r.o."},
        "product": "axis",
        "system": "SYS-ACCC8E-000042",
        "licenses": [
            {"type": f"core-{n}", "count": 25, "period": {"start": "2026-11-23", "end": "2027-11-22"}}
            for n in range(8)
        ],
        "features": ["ldap", "csv-sync", "attendance"],
        "devices": [f"ACCC8E{n:06X}" for n in range(8)],
    }
    text = sign_license(private, "20261123-bench", payload, issued, issued + timedelta(days=365),
                        2_592_000, "SYS-ACCC8E-000042")
    now = issued + timedelta(days=1)
    from entitle_device.licensefile import _read

    _, message, signature = _read(text)
    assert message.startswith(DOMAIN)
    verify(text, ring, now, "SYS-ACCC8E-000042")  # it works before we time it

    raw, full, ratio = measure(
        lambda: public.verify(signature, message),
        lambda: verify(text, ring, now, "SYS-ACCC8E-000042"),
    )
    print(f"license file: {len(text)} bytes ({len(message)} signed); one core; "
          f"medians over {SECONDS:.0f} s of alternating {BATCH}-call batches")
    print(f"raw Ed25519PublicKey.verify: {raw:10,.0f} /s")
    print(f"entitle_device.verify:       {full:10,.0f} /s")
    print(f"cost ratio (file / raw):     {ratio:10.3f}   (target <= 1.3)")

if __name__ == "__main__":
    main()
