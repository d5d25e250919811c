"""License-file verification against a raw Ed25519 verify of the same signed bytes, on one core.

Target: ``verify`` of a license file costs at most 1.3x a bare ``Ed25519PublicKey.verify`` of the
file's signed message with the same key and signature (raw rate / file rate <= 1.3).

Both run in this process, pinned to one CPU where the OS allows, in short batches that alternate
(raw, file, raw, file, ...) for the whole run, so both see the same machine: other processes, CPU
clock, caches. Reported per side: the best batch (the least disturbed one: the figure to compare
on a shared machine) and the median batch; and the ratio of the best rates beside the median of
the ratios of paired batches.

Run: ``make -C device bench`` (only the device venv), or ``python -m bench.run verify`` from the
repository (bench/verify.py); ``--seconds`` and ``--batch`` change the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle_device import KeyRing, sign_license, verify
from entitle_device.licensefile import DOMAIN, _read

TARGET = 1.3  # raw rate / file rate
SECONDS = 10.0  # measured time, both sides together
BATCH = 50  # calls per timed batch (~5-10 ms): short enough for some to run undisturbed
KID = "20261123-bench"
SYSTEM_ID = "SYS-ACCC8E-000042"


def pin_to_one_cpu() -> int | None:
    """Run on one CPU from now on (Linux); the CPU's number, or None where that is not possible."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def workload() -> tuple[Callable[[], object], Callable[[], object], dict[str, int]]:
    """The two calls to time (raw, file) on one realistic license file, and its sizes."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    ring = KeyRing({KID: public})
    issued = datetime(2026, 11, 23, 19, tzinfo=timezone.utc)
    payload = {  # a realistic AXIS-style payload, about 0.9 KB of JSON
        "organization": {"id": "org_7f3a2c", "name": "Example Security Integrators s.r.o."},
        "product": "axis",
        "system": SYSTEM_ID,
        "licenses": [
            {"type": f"core-{n}", "count": 25, "period": {"start": "2026-11-23", "end": "2027-11-22"}}
            for n in range(8)
        ],
        "features": ["ldap", "csv-sync", "attendance"],
        "devices": [f"ACCC8E{n:06X}" for n in range(8)],
    }
    expires = issued + timedelta(days=365)
    text = sign_license(private, KID, payload, issued, expires, 2_592_000, SYSTEM_ID)
    now = issued + timedelta(days=1)
    _, message, signature = _read(text)  # exactly the bytes verify hands to the key
    assert message.startswith(DOMAIN)
    public.verify(signature, message)
    assert verify(text, ring, now, SYSTEM_ID).payload == payload  # it works before it is timed

    def raw() -> None:
        public.verify(signature, message)

    def file() -> object:
        return verify(text, ring, now, SYSTEM_ID)

    return raw, file, {"file_bytes": len(text), "signed_bytes": len(message)}


def measure(
    raw: Callable[[], object], file: Callable[[], object], seconds: float = SECONDS, batch: int = BATCH
) -> dict[str, Any]:
    """Alternate timed batches of both calls for ``seconds``; rates are calls per second."""
    for _ in range(batch):  # warm-up, untimed
        raw()
        file()
    raw_times: list[float] = []
    file_times: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    while clock() < deadline:
        start = clock()
        for _ in range(batch):
            raw()
        middle = clock()
        for _ in range(batch):
            file()
        end = clock()
        raw_times.append(middle - start)
        file_times.append(end - middle)
    raw_best, file_best = batch / min(raw_times), batch / min(file_times)
    return {
        "rounds": len(raw_times),
        "batch": batch,
        "seconds": seconds,
        "raw_per_s_best": raw_best,
        "file_per_s_best": file_best,
        "raw_per_s_median": batch / statistics.median(raw_times),
        "file_per_s_median": batch / statistics.median(file_times),
        "ratio_best": raw_best / file_best,
        "ratio_median_of_pairs": statistics.median(f / r for r, f in zip(raw_times, file_times)),
        "target": TARGET,
    }


def run(seconds: float = SECONDS, batch: int = BATCH) -> dict[str, Any]:
    """Pin, build the workload, measure; every figure in one dict (for bench/verify.py)."""
    cpu = pin_to_one_cpu()
    raw, file, sizes = workload()
    load_start = os.getloadavg()[0]
    result = measure(raw, file, seconds, batch)
    return {**sizes, "pinned_cpu": cpu, "cpus": os.cpu_count(), **result,
            "load_average_start": load_start, "load_average_end": os.getloadavg()[0]}


def report(r: dict[str, Any]) -> list[str]:
    cpu = f"pinned to CPU {r['pinned_cpu']}" if r["pinned_cpu"] is not None else "not pinned"
    verdict = "within" if r["ratio_best"] <= r["target"] else "OVER"
    return [
        f"license file: {r['file_bytes']} bytes ({r['signed_bytes']} signed); one core ({cpu} of "
        f"{r['cpus']}); {r['rounds']} alternating rounds of {r['batch']} calls per side in "
        f"{r['seconds']:g} s; load average {r['load_average_start']:.1f} -> "
        f"{r['load_average_end']:.1f}",
        f"{'':32}{'best':>10}{'median':>10}",
        f"{'file verifies/s (verify)':32}{r['file_per_s_best']:10,.0f}{r['file_per_s_median']:10,.0f}",
        f"{'raw verifies/s (Ed25519 only)':32}{r['raw_per_s_best']:10,.0f}"
        f"{r['raw_per_s_median']:10,.0f}",
        f"ratio raw/file: {r['ratio_best']:.3f} (best rates; target <= {r['target']}: {verdict}); "
        f"median of paired batches {r['ratio_median_of_pairs']:.3f}",
    ]


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=SECONDS,
                   help=f"measured time, both sides together (default {SECONDS:g})")
    p.add_argument("--batch", type=int, default=BATCH, help=f"calls per timed batch (default {BATCH})")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.batch < 1:
        p.error("--seconds must be positive and --batch at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for line in report(run(args.seconds, args.batch)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
