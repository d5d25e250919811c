"""``python -m bench.run cli``: how long the console takes to answer, against ``import typer``.

    python -m bench.run cli [--runs N] [--limit X]

Each case is a cold process, a fresh interpreter as a shell starts one: `python -c "import typer"`
(the reference), the ``--help`` of a two-command Typer app (what drawing any help costs),
`entitle --help`, `entitle ac --help`, `entitle ac calculate --devices 17
--attendance-users 69` and `entitle license show FILE`, the last two with no database (one that
does not exist is configured). The cases take turns, N rounds (default 15) after one unmeasured
round, so that all of them see the same machine; the median and p90 of each are printed with
their ratio to the reference's. Fails (exit 1) when `entitle --help` takes more than X (default 3)
times the reference, medians. Writes the figures, with the machine, to
``bench/results/cli-<UTC time>.json``. docs/benchmarks.md ("The console") says what they mean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "python -c 'import typer'"
HELP = "entitle --help"
FLOOR = "a two-command Typer app --help"
# What any Typer app's --help costs: importing typer.rich_utils (rich, markdown-it, pygments) to draw it.
TWO_COMMANDS = """
import typer
app = typer.Typer()
app.command("one")(lambda: None)
app.command("two")(lambda: None)
app(["--help"])
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run cli", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=15, help="measured rounds of every case (default 15)")
    p.add_argument("--limit", type=float, default=3.0,
                   help="fail when `entitle --help` takes more than this many times the reference (default 3)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def license_file(where: Path) -> Path:
    """A signed license file, as `entitle license show` reads it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from entitle_device import sign_license

    issued = datetime.now(UTC).replace(microsecond=0)
    path = where / "device.lic"
    path.write_text(sign_license(Ed25519PrivateKey.generate(), "k1", {"features": ["integration"]}, issued,
                                 issued + timedelta(days=365), 0, "SYS-BENCH-1"))
    return path


def cases(workdir: Path) -> dict[str, list[str]]:
    python = sys.executable
    script = Path(python).with_name("entitle")  # the console script, as a user runs it
    entitle = [python, str(script)] if script.exists() else [python, "-m", "entitle.cli.main"]
    return {
        REFERENCE: [python, "-c", "import typer"],
        FLOOR: [python, "-c", TWO_COMMANDS],
        HELP: [*entitle, "--help"],
        "entitle ac --help": [*entitle, "ac", "--help"],
        "entitle ac calculate --devices 17 --attendance-users 69":
            [*entitle, "ac", "calculate", "--devices", "17", "--attendance-users", "69"],
        "entitle license show FILE": [*entitle, "license", "show", str(license_file(workdir))],
    }


def measure(commands: dict[str, list[str]], runs: int, workdir: Path) -> dict[str, list[float]]:
    # No ENTITLE_* setting from the caller's shell; a database that does not exist (the offline
    # cases need none, and must create none: checked after the run).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLE_")}
    env["ENTITLE_DATABASE_URL"] = f"sqlite:///{workdir / 'absent' / 'entitle.db'}"
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(runs + 1):  # round 0 warms the file cache and writes the .pyc files
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            if round_:
                seconds[name].append(time.perf_counter() - start)
    if (workdir / "absent").exists() or (workdir / "var").exists():
        raise SystemExit("an offline command created a database")
    return seconds


def p90(values: list[float]) -> float:
    ranked = sorted(values)
    return ranked[math.ceil(0.9 * len(ranked)) - 1]


def summary(seconds: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    ref = statistics.median(seconds[REFERENCE])
    ref_p90 = p90(seconds[REFERENCE])
    return {name: {"median_s": round(statistics.median(v), 4), "p90_s": round(p90(v), 4),
                   "median_ratio": round(statistics.median(v) / ref, 2), "p90_ratio": round(p90(v) / ref_p90, 2)}
            for name, v in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    from rich.table import Table

    from bench.run import busy, console, cpu_speed, machine

    args = parse_args(argv)
    started = datetime.now(UTC)
    report: dict[str, Any] = {"benchmark": "cli", "started_at": started.isoformat(timespec="seconds"),
                              "machine": machine(), "options": vars(args)}
    m = report["machine"]
    console.print(f"[bold]Entitle console benchmark[/] — {m['cpus']} CPUs, Python {m['python']}, "
                  f"{args.runs} cold processes per case")
    busy(m["load_average_at_start"][0], m["sha256_1kib_per_s_at_start"])
    with tempfile.TemporaryDirectory(prefix="entitle-bench-cli-") as tmp:
        report["cases"] = summary(measure(cases(Path(tmp)), args.runs, Path(tmp)))
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["machine"]["sha256_1kib_per_s_at_end"] = cpu_speed()

    table = Table(title=f"Cold processes, {args.runs} each (ratio: to `{REFERENCE}` in the same run)")
    for col in ("command", "median s", "p90 s", "median ratio", "p90 ratio"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for name, c in report["cases"].items():
        table.add_row(name, f"{c['median_s']:.3f}", f"{c['p90_s']:.3f}", f"{c['median_ratio']:.2f}",
                      f"{c['p90_ratio']:.2f}")
    console.print(table)
    ratio = report["cases"][HELP]["median_ratio"]
    report["ok"] = ratio <= args.limit
    verdict = "[green]ok[/]" if report["ok"] else "[red]TOO SLOW[/]"
    console.print(f"`{HELP}` takes {ratio:.2f}× `{REFERENCE}` (limit {args.limit:g}×): {verdict}")
    busy(report["machine"]["load_average_at_end"][0], report["machine"]["sha256_1kib_per_s_at_end"])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"cli-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    console.print(f"Written to {path.relative_to(ROOT)}.")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
