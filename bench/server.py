"""The app under test: ``uvicorn --factory entitle.api.app:app_from_env`` in a subprocess."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


@dataclass(frozen=True)
class Server:
    port: int
    pid: int  # the uvicorn process; its workers are in its process group

    def cpu_seconds(self) -> float:
        """User + system CPU time of every process of the server (its process group) so far."""
        return group_cpu_seconds(self.pid)


def group_cpu_seconds(pgid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # after the command: state, ppid, pgrp, …; utime and stime are fields 14 and 15 of stat
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


@contextmanager
def serving(database_url: str, *, workers: int, workdir: Path) -> Iterator[int]:
    """Start the server, wait until every worker can answer, yield its port, stop it."""
    with server_process(database_url, workers=workers, workdir=workdir) as server:
        yield server.port


@contextmanager
def server_process(database_url: str, *, workers: int, workdir: Path,
                   env: dict[str, str] | None = None,
                   factory: str = "entitle.api.app:app_from_env") -> Iterator[Server]:
    """``serving``, yielding the port and the process (for its CPU time); ``env`` is added to the
    server's environment (e.g. ``PYTHONPATH`` to serve another source tree); ``factory``: the app (``bench.floor`` adds
    the API benchmark's floor routes to the product's)."""
    port = free_port()
    env = {
        **os.environ,
        "ENTITLE_DATABASE_URL": database_url,
        # Off for the benchmark: with limits on, nearly every request would be a 429.
        "ENTITLE_RATE_LIMITS_ENABLED": "false",
        "ENTITLE_LOG_LEVEL": "WARNING",
        "ENTITLE_SECRET_KEY_FILE": str(workdir / "secret.key"),
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "uvicorn", factory, "--factory",
           "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", "--no-access-log"]
    # Its own session: stopping it stops its worker processes too, and nothing else.
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _healthy(port):
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {proc.returncode}: {' '.join(cmd)}")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /healthz within 60 s")
            time.sleep(0.1)
        # Every worker imports the app on its own; give the later ones time to be ready too.
        for _ in range(workers * 20):
            _healthy(port)
        yield Server(port, proc.pid)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:
        # The parent is gone; make sure no orphaned worker of this session lingers.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
