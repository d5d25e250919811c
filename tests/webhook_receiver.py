"""A webhook receiver on 127.0.0.1 for the delivery tests: it keeps every request it gets (path,
headers, raw body) and answers as it is told -- ``ok`` (200), ``fail`` (500) or ``slow`` (keeps
the request and answers 200 only after ``slow_seconds``, longer than the test client's timeout).

``script`` answers the next requests in order before ``mode`` applies again, so a test can say
"the first attempt fails, the second times out, then answer".
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from entitle.delivery.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int  # the status the receiver answered (a slow answer arrives after the client gave up)

    @property
    def event_id(self) -> str:
        return self.headers[EVENT_ID_HEADER]

    @property
    def signature(self) -> str:
        return self.headers[SIGNATURE_HEADER]

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    port: int = 0
    mode: str = "ok"
    modes: dict[str, str] = field(default_factory=dict)  # per path, over ``mode``
    script: list[str] = field(default_factory=list)
    slow_seconds: float = 1.0
    delay: float = 0.0  # every answer waits this long (to widen races between workers)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _answer(self, path: str) -> str:
        with self.lock:
            if self.script:
                return self.script.pop(0)
            return self.modes.get(path, self.mode)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def ids(self, path: str | None = None) -> list[str]:
        """Entitle-Event-Id of each request, in the order they arrived."""
        with self.lock:
            return [r.event_id for r in self.received if path is None or r.path == path]

    def acknowledged(self, path: str | None = None) -> list[str]:
        """The event ids this receiver answered 2xx in time, in order."""
        with self.lock:
            return [r.event_id for r in self.received if (path is None or r.path == path) and r.answered == 200]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = receiver._answer(self.path)
            status = 500 if answer == "fail" else 200
            got = Received(self.path, dict(self.headers.items()), body, status if answer != "slow" else 0)
            with receiver.lock:
                receiver.received.append(got)
            if receiver.delay:
                time.sleep(receiver.delay)
            if answer == "slow":
                time.sleep(receiver.slow_seconds)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")
            except OSError:  # the client gave up (time-out)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
