"""The dashboard's secret, its session cookies and CSRF tokens.

Policy:

* One secret per home, ``logs/state/web-token``: 32 random bytes as hex, created once with mode 0600 and
  then only read (a file readable by others is refused, since the token is the key to the dashboard).
  Deleting the file and restarting ``web`` rotates it, which signs everybody out.
* A session cookie is ``ISSUED.NONCE.MAC`` where MAC = HMAC-SHA256(token, ISSUED.NONCE): no server-side
  session store, so sessions survive a restart of the web process, and it expires after
  :data:`SESSION_SECONDS`.
* The CSRF token of a session is HMAC-SHA256(token, "csrf:" + cookie): a page of another site can neither read
  it nor compute it, and it dies with the session.
* Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from ..errors import TaskAutomationError

SESSION_SECONDS = 30 * 24 * 3600
COOKIE_NAME = "ta_session"


class TokenFileError(TaskAutomationError):
    """The token file cannot be made or trusted."""


def load_or_create_token(path: Path) -> str:
    """The home's web token; made once (0600) when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _read_token(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return _read_token(path)


def _read_token(path: Path) -> str:
    info = os.stat(path)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(
            f"{path}: readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run chmod 600 {path} or delete it to make a new token"
        )
    token = path.read_text().strip()
    if len(token) < 32:
        raise TokenFileError(f"{path}: token too short ({len(token)} characters); delete it to make a new one")
    return token


def _mac(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def token_matches(token: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(token.encode(), given.strip().encode())


def new_session(token: str, *, now: float) -> str:
    body = f"{int(now)}.{secrets.token_hex(16)}"
    return f"{body}.{_mac(token, body)}"


def session_valid(token: str, cookie: str | None, *, now: float) -> bool:
    if not cookie or cookie.count(".") != 2:
        return False
    issued, nonce, mac = cookie.split(".")
    if not hmac.compare_digest(mac.encode(), _mac(token, f"{issued}.{nonce}").encode()):
        return False
    return issued.isdigit() and 0 <= now - int(issued) <= SESSION_SECONDS


def csrf_token(token: str, session: str) -> str:
    return _mac(token, "csrf:" + session)


def csrf_valid(token: str, session: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(csrf_token(token, session).encode(), given.encode())
