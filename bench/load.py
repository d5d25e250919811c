"""A small HTTP/1.1 load generator: asyncio protocols (uvloop when installed), keep-alive.

Each connection sends one request, waits for the whole answer, then sends the next (no
pipelining), for a warm-up and then a measured window of fixed length. Only answers that arrive
inside the window count; their latency is from the first byte sent to the last byte received.
It runs in one process on one core, next to the server: on a 2-core machine it takes CPU from
the server, the same for every endpoint measured in a run, which is why figures are compared
as ratios within a run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

# next_request(connection_index) -> the raw request bytes, or None when there is nothing left.
RequestSource = Callable[[int], bytes | None]


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int]
    latencies_ms: list[float] = field(repr=False)
    ran_out: bool  # the request source was exhausted before the window ended
    all_statuses: dict[int, int] = field(default_factory=dict)  # warm-up and stragglers too

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def not_ok(self, ok: int = 200) -> int:
        return sum(n for status, n in self.statuses.items() if status != ok)


class _Run:
    def __init__(self, source: RequestSource, warmup: float, duration: float) -> None:
        self.source = source
        now = time.perf_counter()
        self.window_start = now + warmup
        self.window_end = self.window_start + duration
        self.last_in_window = self.window_start
        self.statuses: Counter[int] = Counter()
        self.all_statuses: Counter[int] = Counter()  # warm-up and stragglers included
        self.latencies: list[float] = []
        self.ran_out = False

    def next_request(self, index: int) -> bytes | None:
        if time.perf_counter() >= self.window_end:
            return None
        request = self.source(index)
        if request is None:
            self.ran_out = True
        return request

    def record(self, status: int, sent_at: float, done_at: float) -> None:
        self.all_statuses[status] += 1
        if self.window_start <= done_at < self.window_end:
            self.statuses[status] += 1
            self.latencies.append((done_at - sent_at) * 1000)
            self.last_in_window = done_at


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run, index: int, closed: asyncio.Future[None]) -> None:
        self.run = run
        self.index = index
        self.closed = closed
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        request = self.run.next_request(self.index)
        if request is None:
            self.transport.close()
            return
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17:stop if stop >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[:end + 4 + length]
        self.run.record(int(head[9:12]), self.sent_at, time.perf_counter())
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.buffer or exc is not None:
            self.run.record(0, self.sent_at, time.perf_counter())  # 0: the connection broke
        if not self.closed.done():
            self.closed.set_result(None)


async def _drive(port: int, source: RequestSource, connections: int, warmup: float,
                 duration: float) -> LoadResult:
    loop = asyncio.get_running_loop()
    run = _Run(source, warmup, duration)
    closed = [loop.create_future() for _ in range(connections)]
    for i in range(connections):
        await loop.create_connection(lambda i=i: _Connection(run, i, closed[i]), "127.0.0.1", port)
    # A request sent just before the window closed may still be answered; wait a little for it.
    await asyncio.wait(closed, timeout=warmup + duration + 30)
    end = run.last_in_window if run.ran_out else run.window_end
    return LoadResult(sum(run.statuses.values()), max(0.0, end - run.window_start),
                      dict(run.statuses), run.latencies, run.ran_out, dict(run.all_statuses))


def run_load(port: int, source: RequestSource, *, connections: int, warmup: float,
             duration: float) -> LoadResult:
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_drive(port, source, connections, warmup, duration))


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def post_json(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{lines}\r\n").encode() + body
