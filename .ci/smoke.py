#!/usr/bin/env python3
"""CI smoke test: the README's first command, `make run`, on a clean checkout, in a venv of its own.

The tree's files (as a fresh clone would have them: tracked and new, nothing ignored, so no
.venv, var/, .env or *.egg-info) are copied to a temp dir, where the real `make run` runs with
VENV, PORT, ENTITLE_DATABASE_URL and ENTITLE_SECRET_KEY_FILE pointed into that temp dir: the
venv holds the runtime dependencies alone (no [dev]). Then, over HTTP:

  1. /healthz answers;
  2. the API signs in with the password first-run printed (POST /api/v1/auth/token) and the
     token works (GET /api/v1/me);
  3. the web signs in (GET /login for the login CSRF cookie and field, POST /login);
  4. when the server asks for a new password (a 303 to /account/password) it is changed;
  5. the dashboard opens with that session.

The server is stopped at the end. Any failure exits 1 and prints the output of `make run`.
Only the standard library is used: this must not depend on the dev tools.

    python3 .ci/smoke.py [--keep]      # or: make smoke
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ADMIN = "admin@localhost"
INSTALL_TIMEOUT = 600  # seconds for `make run` to install, migrate and print the first sign-in
START_TIMEOUT = 60  # seconds from the first sign-in line to /healthz answering
PASSWORD_LINE = re.compile(r"Sign in as (?P<email>\S+) with the password (?P<password>\S+)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class SmokeFailure(Exception):
    pass


def step(message: str) -> None:
    print(f"smoke: ok    {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_checkout(target: Path) -> Path:
    """The files a fresh clone of this tree would hold (and the new files not yet committed):
    nothing git ignores. Falls back to the repo itself outside a git checkout."""
    try:
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        print("smoke: not a git checkout: running in the tree itself", flush=True)
        return REPO
    tree = target / "checkout"
    count = 0
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if not source.is_file():  # listed but deleted in the working tree
            continue
        dest = tree / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
        count += 1
    step(f"clean checkout of {count} files in {tree}")
    return tree


class Server:
    """`make run` in the background; its output is kept (and echoed) line by line."""

    def __init__(self, tree: Path, tmp: Path, port: int) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLE_")}
        env.update({
            "ENTITLE_DATABASE_URL": f"sqlite:///{tmp / 'entitle.db'}",
            "ENTITLE_SECRET_KEY_FILE": str(tmp / "secret.key"),
            "COLUMNS": "200",  # rich wraps at the terminal's width (80 without one)
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("VIRTUAL_ENV", None)
        env.pop("MAKEFLAGS", None)  # not the settings of a `make smoke` around us
        env.pop("MFLAGS", None)
        self.command = ["make", "--no-print-directory", "run", f"VENV={tmp / 'venv'}", f"PORT={port}"]
        print(f"smoke: {' '.join(self.command)}  (in {tree})", flush=True)
        self.proc = subprocess.Popen(self.command, cwd=tree, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = ANSI.sub("", raw.decode(errors="replace")).rstrip("\r\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    if match := pattern.search(line):
                        return match
                seen = len(self.lines)
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise SmokeFailure(f"`make run` exited with {self.proc.returncode} before printing "
                                       f"{pattern.pattern!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SmokeFailure(f"`make run` printed no {pattern.pattern!r} within {timeout:.0f} s")
                self.cond.wait(min(left, 1.0))

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise SmokeFailure(f"`make run` exited with {self.proc.returncode}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.reader.join(timeout=5)
        return self.proc.wait()

    def log(self) -> str:
        with self.cond:
            return "\n".join(self.lines)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer to look at, not to follow


class Client:
    """HTTP with a cookie jar; redirects are returned, not followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def request(self, method: str, path: str, *, form: dict[str, str] | None = None,
                body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        data, head = None, dict(headers or {})
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            head["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            head["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=head)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers.items()), resp.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            with err:
                return err.code, dict(err.headers.items()), err.read().decode(errors="replace")

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


def expect(what: str, ok: bool, detail: str) -> None:
    if not ok:
        raise SmokeFailure(f"{what}: {detail}")


def location(headers: dict[str, str]) -> str:
    """The redirect target's path (the server may send an absolute URL)."""
    value = next((v for k, v in headers.items() if k.lower() == "location"), "")
    parts = urllib.parse.urlsplit(value)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def hidden_field(page: str, name: str) -> str:
    for tag in re.findall(r"<input\b[^>]*>", page):
        if re.search(rf'\bname="{re.escape(name)}"', tag):
            value = re.search(r'\bvalue="([^"]*)"', tag)
            if value:
                return value.group(1)
    raise SmokeFailure(f"no <input name={name!r} value=…> in the page:\n{page[:2000]}")


def wait_healthy(server: Server, base: str) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        server.alive()
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return dict(json.loads(resp.read()))
                last = f"HTTP {resp.status}"
        except (OSError, ValueError) as err:
            last = str(err)
        time.sleep(0.25)
    raise SmokeFailure(f"/healthz did not answer 200 within {START_TIMEOUT} s ({last})")


def change_password(web: Client, current: str) -> str:
    """The forced change after the first sign-in: GET the form, POST it, expect a 303 to /."""
    status, _, page = web.request("GET", "/account/password")
    expect("GET /account/password", status == 200, f"HTTP {status}\n{page[:2000]}")
    new = secrets.token_urlsafe(24)  # 32 characters
    status, headers, page = web.request("POST", "/account/password", form={
        "csrf_token": hidden_field(page, "csrf_token"), "current_password": current,
        "new_password": new, "new_password_confirm": new})
    expect("POST /account/password", status == 303 and location(headers) == "/",
           f"HTTP {status}, Location {location(headers)!r} (expected 303 to /)\n{page[:2000]}")
    step("password changed (POST /account/password: 303 to /)")
    return new


def check(server: Server, base: str) -> None:
    first = server.wait_for(PASSWORD_LINE, INSTALL_TIMEOUT)
    email, password = first["email"], first["password"]
    expect("first-run", email == ADMIN, f"signs in as {email!r}, expected {ADMIN!r}")
    step(f"first-run printed the sign-in for {email} (a {len(password)}-character password)")
    answer = server.wait_for(re.compile(r"Entitle will answer at (\S+)"), START_TIMEOUT)[1]
    expect("first-run", answer == base, f"prints the URL {answer!r}, expected {base!r}")

    health = wait_healthy(server, base)
    expect("/healthz", health.get("status") == "ok" and health.get("database") == "sqlite", str(health))
    step(f"/healthz: {health}")

    api = Client(base)
    status, _, body = api.request("POST", "/api/v1/auth/token", body={"email": email, "password": password})
    expect("POST /api/v1/auth/token", status == 201, f"HTTP {status}: {body}")
    token = json.loads(body)["token"]
    status, _, body = api.request("GET", "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    expect("GET /api/v1/me", status == 200 and json.loads(body).get("email") == email, f"HTTP {status}: {body}")
    orgs = [o["name"] for o in json.loads(body)["organizations"]]
    step(f"API sign-in: token issued, /api/v1/me is {email} in {orgs}")

    web = Client(base)
    status, _, page = web.request("GET", "/login")
    expect("GET /login", status == 200, f"HTTP {status}\n{page[:2000]}")
    csrf = hidden_field(page, "csrf_token")
    expect("GET /login", web.cookie("entitle_login_csrf") == csrf,
           "the login CSRF cookie does not match the form's field")
    status, headers, page = web.request("POST", "/login", form={
        "csrf_token": csrf, "email": email, "password": password, "next": "/"})
    expect("POST /login", status == 303, f"HTTP {status}\n{page[:2000]}")
    target = location(headers)
    step(f"web sign-in: POST /login answered 303 to {target}")

    changed = False
    for _ in range(3):
        if target == "/account/password":
            password, changed = change_password(web, password), True
            target = "/"
            continue
        status, headers, page = web.request("GET", target)
        if status == 303 and location(headers) == "/account/password" and not changed:
            step(f"GET {target}: 303 to /account/password (a new password is required)")
            target = "/account/password"
            continue
        break
    expect(f"GET {target}", status == 200, f"HTTP {status}, Location {location(headers)!r}\n{page[:2000]}")
    for text in ("<title>Home · Entitle</title>", "<h1>My organization</h1>", "Recent history",
                 f'<p class="who">{email}</p>'):
        expect(f"GET {target}", text in page, f"the dashboard does not show {text!r}:\n{page[:3000]}")
    step(f"dashboard: GET {target} answered 200 with 'My organization' for {email}"
         f"{' after the password change' if changed else ' (no password change was asked for)'}")

    if changed:  # the API takes the new password, and no longer the old one
        status, _, body = api.request("POST", "/api/v1/auth/token", body={"email": email, "password": password})
        expect("POST /api/v1/auth/token (new password)", status == 201, f"HTTP {status}: {body}")
        status, _, body = api.request("POST", "/api/v1/auth/token",
                                      body={"email": email, "password": first["password"]})
        expect("POST /api/v1/auth/token (old password)", status == 401, f"HTTP {status}: {body}")
        step("API sign-in takes the new password and refuses the first-run one")
    server.alive()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (checkout, venv, database)")
    args = parser.parse_args()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="entitle-smoke-"))
    server: Server | None = None
    try:
        tree = clean_checkout(tmp)
        port = free_port()
        server = Server(tree, tmp, port)
        check(server, f"http://127.0.0.1:{port}")
        code = server.stop()
        expect("stopping `make run`", server.proc.returncode is not None, "it did not stop")
        step(f"server stopped (make exited with {code})")
        server = None
        print(f"smoke: passed in {time.monotonic() - started:.0f} s", flush=True)
        return 0
    except (SmokeFailure, OSError, ValueError, KeyError) as err:
        print(f"smoke: FAILED {type(err).__name__ if not isinstance(err, SmokeFailure) else ''}{err}",
              file=sys.stderr, flush=True)
        if server is not None:
            server.stop()
            print("smoke: ---- output of `make run` ----", file=sys.stderr)
            print(server.log(), file=sys.stderr)
            print("smoke: ---- end of output ----", file=sys.stderr, flush=True)
            server = None
        return 1
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"smoke: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
