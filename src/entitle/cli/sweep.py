"""The sweep from the console (R-CORE-8): `entitle sweep` records the time-driven transitions due
by now (grace periods ending, protective periods running out, apartment licenses lapsing, wallet
units expiring), each exactly once, however often and however many at a time it runs.

``entitle serve --sweep-every SECONDS`` runs the same work on a schedule in the serving process
(:class:`Ticker`): every SECONDS, the sweep, then the webhook deliveries that are due (`entitle
deliver`), then the notification mails that are due. One loop per `entitle serve`, however many
``--workers``; a failing job is logged and tried again at the next tick. Instead, `entitle sweep`
and `entitle deliver` can run from cron or as services of their own: several of each at once are
safe (marks, leases).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from entitle.cli.common import DatabaseUrl, JsonOut, context, err, handles_errors, plain, print_json
from entitle.cli.webhooks import deliver_round
from entitle.context import Context
from entitle.delivery import mail, webhooks
from entitle.delivery import sweep as sweeping
from entitle.logs import log
from entitle.text import plural

Batch = Annotated[int, typer.Option(
    "--batch", min=1, max=10_000,
    help="Transitions recorded per transaction: a sweep killed midway undoes only its unfinished one, which the "
         "next sweep records.")]
MAIL_BATCH = 100
MAIL_ROUNDS = 100


@contextmanager
def _progress(*, shown: bool) -> Iterator[Callable[[int], None]]:
    """Transitions recorded so far, on stderr (not with --json: stderr then carries only an
    error's JSON). How many are due is known only as they are recorded: the bar pulses."""
    progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("transitions"),
                        TimeElapsedColumn(), console=err, disable=not shown, transient=True)
    with progress:
        task = progress.add_task("sweep", total=None)
        yield lambda n: progress.advance(task, n)


@handles_errors
def sweep(batch: Batch = 200, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Record the events of the time-driven transitions due by now that no sweep has recorded yet:
    run it as often as you like, two at once, or again after one was killed; each transition's
    event is recorded once."""
    with context(database_url) as ctx:
        now = ctx.clock.now()
        with _progress(shown=not as_json) as advance:
            result = sweeping.sweep(ctx.sessions, now=now, batch=batch, on_batch=advance)
    if as_json:
        print_json({"at": now.isoformat(), **result})
        return
    earlier = result["found"] - result["recorded"] - result["skipped"]
    plain(f"Swept at {now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: {plural(result['found'], 'transition')} due, "
          f"{result['recorded']} recorded now, {earlier} recorded by earlier sweeps, "
          f"{result['skipped']} recorded meanwhile by another sweep.")


# --- on a schedule, in the serving process ------------------------------------------------------

Job = tuple[str, Callable[[], Any]]


def default_jobs(ctx: Context) -> list[Job]:
    """What each tick runs, in order: the sweep records the events due (with their webhook
    deliveries and notifications), then the webhook deliveries due are sent (as `entitle
    deliver` does), then the notifications due are mailed (``ENTITLE_MAIL``)."""
    mailer = mail.mailer_for(ctx.settings)

    def deliver() -> dict[str, int]:
        with httpx.Client(timeout=webhooks.TIMEOUT_SECONDS, follow_redirects=False) as client:
            return dict(deliver_round(ctx, client))

    def send_mail() -> dict[str, int]:
        total: Counter[str] = Counter()
        for _ in range(MAIL_ROUNDS):  # while rounds come back full
            counts = mail.send_pending(ctx.sessions, mailer, now=ctx.clock.now, limit=MAIL_BATCH)
            total.update(counts)
            if sum(counts.values()) < MAIL_BATCH:
                break
        return dict(total)

    return [("sweep", lambda: sweeping.sweep(ctx.sessions, now=ctx.clock.now())), ("webhooks", deliver),
            ("mail", send_mail)]


class Ticker:
    """Runs ``jobs`` every ``every`` seconds in a daemon thread, the first tick at once. A job
    that fails is logged and tried again at the next tick; nothing it does ends the server."""

    def __init__(self, jobs: list[Job], every: float) -> None:
        if every <= 0:
            raise ValueError("every is a positive number of seconds")
        self.jobs, self.every = jobs, every
        self.ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="entitle-ticker", daemon=True)

    def tick(self) -> dict[str, Any]:
        """One round of every job; the result of each, or None for one that failed."""
        results: dict[str, Any] = {}
        for name, job in self.jobs:
            try:
                results[name] = job()
            except Exception as exc:  # the database is down, a bug: the next tick tries again
                log.error(f"{name}.failed", error=f"{type(exc).__name__}: {exc}", retry_in_seconds=self.every)
                results[name] = None
        self.ticks += 1
        return results

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.every)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        """Ends after the job that runs now (a sweep commits whole batches only)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
