"""``python -m bench.run verify``: license-file verification against a raw Ed25519 verify, one core.

    python -m bench.run verify [--seconds S] [--batch N]

The measurement is device/bench_verify.py, the device library's own benchmark (also
``make -C device bench``, in the library's venv); this runs it from the repository's bench command:
file verifies/s, raw ``Ed25519PublicKey.verify`` calls/s on the same signed bytes, and their ratio
(target <= 1.3), and writes the figures with the machine to ``bench/results/verify-<UTC time>.json``.
docs/benchmarks.md ("License-file verification") says what each figure means.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SCRIPT = ROOT / "device" / "bench_verify.py"


def device_bench() -> ModuleType:
    """device/bench_verify.py as a module (it is a script beside the library, not in a package)."""
    spec = importlib.util.spec_from_file_location("entitle_device_bench_verify", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    bench = device_bench()
    args = bench.parse_args(argv, prog="python -m bench.run verify")
    started = datetime.now(UTC)
    result = bench.run(args.seconds, args.batch)
    for line in bench.report(result):
        print(line)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"verify-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report = {"started_at": started.isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "verify": result}
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Written to {path.relative_to(ROOT)}.")
    return 0
