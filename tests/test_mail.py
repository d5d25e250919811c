"""Notifications by e-mail (R-CORE-8) through the real SMTP adapter, against a local SMTP server
on 127.0.0.1 (aiosmtpd) that accepts, refuses (5xx) or is down: every notification is mailed
once, a failure is kept and retried after a back-off, for a bounded number of attempts."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from entitle.config import Settings
from entitle.db import transaction
from entitle.delivery import mail
from entitle.delivery.mail import LocalMailer, MailError, SmtpMailer, send_pending
from entitle.delivery.models import Notification
from entitle.platform import events
from entitle.tenancy.models import Role
from helpers import join, org_with_owner

FROM = "Entitle <alerts@entitle.example>"


# --- a local SMTP server -----------------------------------------------------------------------

@dataclass
class SmtpInbox:
    """What the server received; ``refuse`` answers every recipient with a 5xx."""

    refuse: str | None = None
    delay: float = 0.0
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"

    def to(self) -> list[str]:
        with self.lock:
            return sorted(m["To"] for m in self.messages)

    def ids(self) -> list[str]:
        with self.lock:
            return [m["Message-ID"] for m in self.messages]


class _ReusePortController(Controller):
    """aiosmtpd's controller, listening with SO_REUSEPORT beside the port's reservation."""

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, host=self.hostname, port=self.port,
                                       ssl=self.ssl_context, reuse_port=True)


class SmtpServer:
    """Started, stopped ("down": connections refused) and started again on one port. The port
    stays reserved the whole time (a socket bound with SO_REUSEPORT that never listens), so that
    no parallel test worker can take it while this server is down."""

    def __init__(self, **options: Any) -> None:
        self.inbox = SmtpInbox()
        self.reservation = socket.socket()
        self.reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.reservation.bind(("127.0.0.1", 0))
        self.port = self.reservation.getsockname()[1]
        self.options = options
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = _ReusePortController(self.inbox, hostname="127.0.0.1", port=self.port, **self.options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def close(self) -> None:
        self.stop()
        self.reservation.close()

    def mailer(self, **options: Any) -> SmtpMailer:
        return SmtpMailer(host="127.0.0.1", port=self.port, from_address=FROM, timeout=5, **options)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.close()


# --- data --------------------------------------------------------------------------------------

def lapse(world, org_id: int, apartment: str) -> None:  # noqa: ANN001
    """An event admins are told about (one notification per owner and admin)."""
    with transaction(world.ctx.sessions) as s:
        events.emit(s, org_id=org_id, type="my2n.apartment.lapsed", now=world.now, apartment=apartment, site="Riverside")


def notifications(world) -> list[Notification]:  # noqa: ANN001
    with world.ctx.sessions() as s:
        return list(s.scalars(select(Notification).order_by(Notification.id)))


def send(world, mailer: Any, limit: int = 100) -> dict[str, int]:  # noqa: ANN001
    return send_pending(world.ctx.sessions, mailer, now=world.ctx.clock.now, limit=limit)


@pytest.fixture
def staffed(world):  # noqa: ANN001
    """An organization with an owner, an admin and a viewer."""
    org, _owner = org_with_owner(world, "Riverside Homes", "owner@example.com")
    join(world, org, "admin@example.com", Role.admin)
    join(world, org, "viewer@example.com", Role.viewer)
    return org


# --- the tests ---------------------------------------------------------------------------------

def test_every_notification_is_mailed_once_to_its_admin(world, smtp, staffed):  # R-CORE-8
    lapse(world, staffed, "A-101")
    lapse(world, staffed, "A-102")
    mailer = smtp.mailer()

    assert send(world, mailer) == {"sent": 4, "retry": 0, "failed": 0}
    # owners and admins, once per event; the viewer is not told
    assert smtp.inbox.to() == ["admin@example.com"] * 2 + ["owner@example.com"] * 2
    subjects = sorted({m["Subject"] for m in smtp.inbox.messages})
    assert subjects == [f"My2N: the license of apartment {a} (Riverside) lapsed; its paid devices stopped."
                        for a in ("A-101", "A-102")]
    first = smtp.inbox.messages[0]
    assert first["From"] == FROM
    assert first["Message-ID"] == f"<notification.{notifications(world)[0].id}@entitle.example>"
    assert "Organization: Riverside Homes" in first.get_content()
    assert all(n.emailed_at == world.now and n.mail_error is None for n in notifications(world))

    # nothing is mailed twice, later runs or not
    world.ctx.clock.advance(dt.timedelta(hours=3))
    assert send(world, mailer) == {"sent": 0, "retry": 0, "failed": 0}
    lapse(world, staffed, "A-103")
    assert send(world, mailer) == {"sent": 2, "retry": 0, "failed": 0}
    assert len(smtp.inbox.messages) == 6 and len(set(smtp.inbox.ids())) == 6


def test_a_refused_message_is_kept_and_retried_after_a_back_off(world, smtp, staffed):  # R-CORE-8
    lapse(world, staffed, "A-101")
    mailer = smtp.mailer()
    smtp.inbox.refuse = "550 5.1.1 Mailbox unavailable"

    assert send(world, mailer) == {"sent": 0, "retry": 2, "failed": 0}
    assert smtp.inbox.messages == []
    for n in notifications(world):
        assert n.emailed_at is None and n.mail_attempts == 1
        assert n.mail_error == "SMTP 550: 5.1.1 Mailbox unavailable"
        assert n.mail_next_at == world.now + dt.timedelta(minutes=1)

    # not before the back-off ...
    smtp.inbox.refuse = None
    world.ctx.clock.advance(dt.timedelta(seconds=59))
    assert send(world, mailer) == {"sent": 0, "retry": 0, "failed": 0}
    # ... then once, under the same Message-ID
    world.ctx.clock.advance(dt.timedelta(seconds=1))
    assert send(world, mailer) == {"sent": 2, "retry": 0, "failed": 0}
    assert smtp.inbox.to() == ["admin@example.com", "owner@example.com"]
    assert sorted(smtp.inbox.ids()) == sorted(f"<notification.{n.id}@entitle.example>" for n in notifications(world))
    assert all(n.emailed_at == world.now and n.mail_error is None for n in notifications(world))
    assert send(world, mailer) == {"sent": 0, "retry": 0, "failed": 0}


def test_a_server_that_is_down_is_tried_again_later(world, smtp, staffed):  # R-CORE-8
    lapse(world, staffed, "A-101")
    mailer = smtp.mailer()
    smtp.stop()

    assert send(world, mailer) == {"sent": 0, "retry": 2, "failed": 0}
    assert all(n.mail_error and n.mail_error.startswith("ConnectionRefusedError") for n in notifications(world))

    # still down at the first retry: the wait doubles
    world.ctx.clock.advance(dt.timedelta(minutes=1))
    assert send(world, mailer) == {"sent": 0, "retry": 2, "failed": 0}
    assert all(n.mail_attempts == 2 and n.mail_next_at == world.now + dt.timedelta(minutes=2)
               for n in notifications(world))

    smtp.start()
    world.ctx.clock.advance(dt.timedelta(minutes=2))
    assert send(world, mailer) == {"sent": 2, "retry": 0, "failed": 0}
    assert smtp.inbox.to() == ["admin@example.com", "owner@example.com"]


def test_retries_are_bounded_and_the_last_error_is_kept(world, smtp, staffed):  # R-CORE-8
    lapse(world, staffed, "A-101")
    mailer = smtp.mailer()
    smtp.inbox.refuse = "554 5.7.1 Relay access denied"
    outcomes = []
    waits = []
    for _ in range(mail.MAX_ATTEMPTS + 2):
        counts = send(world, mailer)
        outcomes.append((counts["retry"], counts["failed"]))
        [n, _] = notifications(world)
        if n.mail_next_at is not None and n.mail_next_at > world.now:
            waits.append(n.mail_next_at - world.now)
            world.ctx.clock.set(n.mail_next_at)
    assert outcomes == [(2, 0)] * (mail.MAX_ATTEMPTS - 1) + [(0, 2), (0, 0), (0, 0)]
    assert waits[:7] == [dt.timedelta(minutes=m) for m in (1, 2, 4, 8, 16, 32, 60)]
    for n in notifications(world):
        assert n.emailed_at is None and n.mail_attempts == mail.MAX_ATTEMPTS
        assert n.mail_error == "SMTP 554: 5.7.1 Relay access denied"
    # given up for mail, but still in the admin's notifications
    world.ctx.clock.advance(dt.timedelta(days=2))
    smtp.inbox.refuse = None
    assert send(world, mailer) == {"sent": 0, "retry": 0, "failed": 0}
    assert smtp.inbox.messages == []


def test_two_workers_at_once_never_mail_the_same_notification(world, smtp, staffed):  # R-CORE-8
    for i in range(15):
        lapse(world, staffed, f"A-{i}")
    smtp.inbox.delay = 0.01  # both workers are mid-send at the same time
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            mailer = smtp.mailer()
            while True:
                counts = send(world, mailer, limit=4)
                results.append(counts)
                if not any(counts.values()):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sum(r["sent"] for r in results) == 30
    ids = smtp.inbox.ids()
    assert len(ids) == 30 and len(set(ids)) == 30
    assert all(n.emailed_at is not None for n in notifications(world))


def test_a_claim_is_a_lease_that_a_dead_workers_successor_takes_over(world, staffed):  # R-CORE-8
    lapse(world, staffed, "A-101")
    factory, now = world.ctx.sessions, world.now
    first = mail._claim(factory, now=now, limit=10)
    assert len(first) == 2
    assert mail._claim(factory, now=now, limit=10) == []  # the second worker finds nothing
    # the first worker died without recording; after the lease the notifications are due again
    world.ctx.clock.advance(mail.LEASE - dt.timedelta(seconds=1))
    assert mail._claim(factory, now=world.now, limit=10) == []
    world.ctx.clock.advance(dt.timedelta(seconds=1))
    again = mail._claim(factory, now=world.now, limit=10)
    assert [c.notification_id for c in again] == [c.notification_id for c in first]


def test_the_mailer_is_chosen_by_the_settings(monkeypatch):
    assert isinstance(mail.mailer_for(Settings()), LocalMailer)
    for name, value in {"MAIL": "smtp", "SMTP_HOST": "mail.internal", "SMTP_PORT": "587", "SMTP_USER": "entitle",
                        "SMTP_PASSWORD": "s3cret", "SMTP_FROM": FROM, "SMTP_STARTTLS": "true"}.items():
        monkeypatch.setenv(f"ENTITLE_{name}", value)
    chosen = mail.mailer_for(Settings())
    assert isinstance(chosen, SmtpMailer)
    assert (chosen.host, chosen.port, chosen.username, chosen.password, chosen.from_address, chosen.starttls) == \
        ("mail.internal", 587, "entitle", "s3cret", FROM, True)


def test_the_local_mailer_keeps_the_messages(world, staffed):  # R-CORE-8
    lapse(world, staffed, "A-101")
    local = LocalMailer(FROM)
    assert send(world, local) == {"sent": 2, "retry": 0, "failed": 0}
    assert sorted(m["To"] for m in local.outbox) == ["admin@example.com", "owner@example.com"]


# --- STARTTLS and login ------------------------------------------------------------------------

def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_starttls_and_login_as_configured(tmp_path):  # R-CORE-8
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"entitle", b"s3cret")
        return AuthResult(success=ok, handled=False)

    smtp = SmtpServer(tls_context=server_tls, require_starttls=True, auth_required=True,
                      authenticator=authenticator)
    smtp.start()
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        message = mail.message_for(mail.Claimed(7, "owner@example.com", "Hello", "Riverside Homes", 3,
                                                "my2n.apartment.lapsed", dt.datetime(2026, 1, 15, tzinfo=dt.UTC), 0),
                                   FROM)
        smtp.mailer(starttls=True, username="entitle", password="s3cret", tls_context=trusting).send(message)
        assert smtp.inbox.to() == ["owner@example.com"]

        with pytest.raises(MailError, match=r"^SMTP 535"):
            smtp.mailer(starttls=True, username="entitle", password="wrong", tls_context=trusting).send(message)
        # without STARTTLS this server offers no login (and takes no mail without one)
        with pytest.raises(MailError, match="AUTH extension not supported"):
            smtp.mailer(username="entitle", password="s3cret").send(message)
        with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED"):  # an unknown certificate is refused
            smtp.mailer(starttls=True, username="entitle", password="s3cret").send(message)
        assert len(smtp.inbox.messages) == 1
    finally:
        smtp.close()
