"""Notifications by e-mail (R-CORE-8): each notification is mailed to its user once, through a
:class:`Mailer` chosen by the settings (``ENTITLE_MAIL=local|smtp``).

**Once, even with several workers.** ``send_pending`` claims the due notifications the way
``webhooks._claim`` claims deliveries: in a short transaction of its own it moves each one's
``mail_next_at`` a lease ahead with a compare-and-set on the value it read, so two workers never
both win the same notification; it then talks to the mail server outside any transaction, and
records the outcome in another short one. A worker killed after claiming leaves the notification
to whoever comes after the lease (it may then be mailed twice: the same ``Message-ID`` both
times, which mail clients use to show it once).

**Failures are kept and retried, for a bounded time.** A refused or undeliverable message (the
server down, a 4xx or 5xx answer) keeps its error in ``mail_error`` and is tried again after a
back-off (1 minute, doubling up to an hour); after ``MAX_ATTEMPTS`` failures it is given up:
it stays in the web UI, unmailed, with its last error.
"""

from __future__ import annotations

import smtplib
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Protocol

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from entitle.config import Settings
from entitle.delivery.models import Notification
from entitle.logs import log
from entitle.platform.models import Event
from entitle.tenancy.models import Organization, User

LEASE = timedelta(minutes=5)  # a claimed notification is one worker's for this long
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)
MAX_ATTEMPTS = 8  # about 2 hours of retries (1, 2, 4, 8, 16, 32, 60 minutes)


class MailError(Exception):
    """The message was not accepted (server down, refused, time-out); worth trying again."""


class Mailer(Protocol):
    """Where notification e-mails go. ``send`` returns once the server has accepted the message
    and raises :class:`MailError` otherwise."""

    from_address: str

    def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """The real adapter: one SMTP connection per message to the configured host, STARTTLS and a
    login when configured."""

    def __init__(self, *, host: str, port: int, from_address: str, username: str | None = None,
                 password: str | None = None, starttls: bool = False, timeout: float = 30.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.from_address = host, port, from_address
        self.username, self.password = username, password
        self.starttls, self.timeout = starttls, timeout
        self.tls_context = tls_context

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpMailer:
        return cls(host=settings.smtp_host, port=settings.smtp_port, from_address=settings.smtp_from,
                   username=settings.smtp_user, password=settings.smtp_password, starttls=settings.smtp_starttls,
                   timeout=settings.smtp_timeout_seconds)

    def send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self.tls_context or ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise MailError(f"SMTP {code}: {_text(text)}") from exc
        except smtplib.SMTPResponseException as exc:  # refused: sender, data, login, ...
            raise MailError(f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}") from exc
        except (smtplib.SMTPException, OSError) as exc:  # down, time-out, TLS, connection lost
            raise MailError(f"{type(exc).__name__}: {exc}") from exc


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class LocalMailer:
    """Development and tests: the messages stay in the process (the last ``keep``) and are
    logged; nothing leaves the machine."""

    def __init__(self, from_address: str = "Entitle <entitle@localhost>", keep: int = 1000) -> None:
        self.from_address = from_address
        self.outbox: deque[EmailMessage] = deque(maxlen=keep)

    def send(self, message: EmailMessage) -> None:
        self.outbox.append(message)
        log.info("mail.local", to=message["To"], subject=message["Subject"])


def mailer_for(settings: Settings) -> Mailer:
    """The mailer the settings choose (``ENTITLE_MAIL``)."""
    if settings.mail == "smtp":
        return SmtpMailer.from_settings(settings)
    return LocalMailer(settings.smtp_from)


# --- what is mailed ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claimed:
    notification_id: int
    to: str
    title: str
    org_name: str
    event_id: int
    event_type: str
    event_created_at: datetime
    attempts: int


def message_for(claimed: Claimed, from_address: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = claimed.to
    message["Subject"] = claimed.title[:200]
    domain = parseaddr(from_address)[1].rpartition("@")[2] or "localhost"
    # The same id on every attempt: a message sent twice (a lost answer) is shown once.
    message["Message-ID"] = f"<notification.{claimed.notification_id}@{domain}>"
    message["X-Entitle-Event-Id"] = f"evt_{claimed.event_id}"
    message.set_content(
        f"{claimed.title}\n\n"
        f"Organization: {claimed.org_name}\n"
        f"Event: {claimed.event_type} (evt_{claimed.event_id}), "
        f"{claimed.event_created_at.strftime('%Y-%m-%d %H:%M UTC')}\n\n"
        f"You receive this because you are an owner or admin of {claimed.org_name}. "
        "It is also under Notifications in Entitle.\n")
    return message


# --- the worker -------------------------------------------------------------------------------------

def backoff(attempts: int) -> timedelta:
    """The wait after ``attempts`` failed attempts: a minute, doubling up to an hour."""
    return min(MAX_RETRY, FIRST_RETRY * (2 ** max(0, attempts - 1)))


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (Notification.emailed_at.is_(None), Notification.mail_attempts < MAX_ATTEMPTS,
            or_(Notification.mail_next_at.is_(None), Notification.mail_next_at <= now))


def _claim(factory: sessionmaker[Session], *, now: datetime, limit: int) -> list[Claimed]:
    """Take up to ``limit`` due notifications by moving their ``mail_next_at`` a lease ahead, a
    compare-and-set on the value read: of two workers, one wins each notification."""
    with factory.begin() as s:
        due = s.execute(select(Notification.id, Notification.mail_next_at).where(*_due(now))
                        .order_by(Notification.id).limit(limit)).all()
        won = []
        for notification_id, seen in due:
            same = Notification.mail_next_at.is_(None) if seen is None else Notification.mail_next_at == seen
            taken = s.execute(update(Notification).where(Notification.id == notification_id,
                                                         Notification.emailed_at.is_(None), same)
                              .values(mail_next_at=now + LEASE)
                              .execution_options(synchronize_session=False)).rowcount
            if taken == 1:
                won.append(notification_id)
        if not won:
            return []
        rows = s.execute(select(Notification, User.email, Organization.name, Event)
                         .join(User, User.id == Notification.user_id)
                         .join(Organization, Organization.id == Notification.org_id)
                         .join(Event, Event.id == Notification.event_id)
                         .where(Notification.id.in_(won)).order_by(Notification.id)).all()
        return [Claimed(n.id, email, n.title, org_name, event.id, event.type, event.created_at, n.mail_attempts)
                for n, email, org_name, event in rows]


def _record(factory: sessionmaker[Session], claimed: Claimed, error: str | None, now: datetime) -> str:
    with factory.begin() as s:
        n = s.get(Notification, claimed.notification_id)
        if n is None:  # the user was removed meanwhile
            return "failed"
        if error is None:
            n.emailed_at, n.mail_error, n.mail_next_at = now, None, None
            return "sent"
        n.mail_attempts += 1
        n.mail_error = error[:500]
        n.mail_next_at = now + backoff(n.mail_attempts)
        return "failed" if n.mail_attempts >= MAX_ATTEMPTS else "retry"


def send_pending(factory: sessionmaker[Session], mailer: Mailer, *, now: Callable[[], datetime],
                 limit: int = 100) -> dict[str, int]:
    """Mail every due notification once (at most ``limit``); returns how many were sent, will be
    retried, and were given up."""
    counts = {"sent": 0, "retry": 0, "failed": 0}
    for claimed in _claim(factory, now=now(), limit=limit):
        try:
            mailer.send(message_for(claimed, mailer.from_address))
            error = None
        except MailError as exc:
            error = str(exc)
        outcome = _record(factory, claimed, error, now())
        if error is not None:
            log.warning("mail.failed", notification=claimed.notification_id, attempts=claimed.attempts + 1,
                        error=error, given_up=outcome == "failed")
        counts[outcome] += 1
    return counts
