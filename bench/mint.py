"""One mint, measured in a process of its own so that its peak RSS is its own.

``python -m bench.mint URL COUNT CSV`` mints COUNT keys with ``keys.services.mint`` in one
transaction, the codes streamed to CSV by ``keys.services.csv_sink``, and prints one JSON line:
seconds (mint + commit), keys per second, the RSS just before and the peak RSS during it.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from entitle.actors import operator
from entitle.db import make_engine, make_session_factory, transaction
from entitle.keys import services as keys
from entitle.models import load_all

from bench.world import PART


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset the peak to the current RSS (Linux: clear_refs 5) and return it, in KiB.

    Without that the peak would still hold whatever start-up once used. Elsewhere the
    process-lifetime peak stands in, which can only hide growth, never invent it.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        now = _status_kib("VmRSS")
        if now is not None:
            return now
    except OSError:
        pass
    return peak_rss_kib()


def peak_rss_kib() -> int:
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(url: str, count: int, csv_path: Path) -> dict[str, float | int]:
    load_all()
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    actor = operator("bench")
    # Warm up imports, the connection pool and SQLAlchemy's statement cache: a small mint,
    # rolled back, so that the baseline below already holds everything but the batch itself.
    with sessions() as s, s.begin() as txn:
        keys.mint(s, sku_part=PART, quantity_per_key=1, count=10, actor=actor, now=datetime.now(UTC),
                  sink=lambda chunk: None)
        txn.rollback()
    before = reset_peak_rss()
    started = time.perf_counter()
    with csv_path.open("w", newline="") as out, transaction(sessions) as s:
        keys.mint(s, sku_part=PART, quantity_per_key=1, count=count, actor=actor,
                  now=datetime.now(UTC), name=f"bench {count}",
                  sink=keys.csv_sink(out, PART, 1))
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"count": count, "seconds": seconds, "keys_per_s": count / seconds,
            "rss_before_kib": before, "peak_rss_after_kib": peak_rss_kib()}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))))
