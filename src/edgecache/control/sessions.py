"""Console sessions: an API token exchanged for a short-lived session, held server-side.

Rules:
- Signing in verifies the API token once (:meth:`CredentialService.verify_token`); the session then
  carries that token's principal, so the console allows exactly what the API allows the token.
- The session id is a random 256-bit secret handed to the browser in a cookie; only its SHA-256 is
  kept here, so a memory dump or a log of this table does not yield a usable session.
- A session ends at its deadline (sign-in + lifetime, never after the token's own expiry), at sign
  out, or when a periodic check finds its token revoked or expired (at most ``RECHECK`` seconds
  after the revocation).
- Each session has its own CSRF token, compared in constant time.
- Sessions live in this process's memory: a restart signs everyone out, which costs a person one
  paste of their token (decision 0011).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from edgecache.control.credentials import CredentialService, Principal

RECHECK = 10.0
"""Seconds between checks that a session's token is still active (as ``VERIFIED_TTL`` for the API)."""
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    """A signed-in console user."""

    principal: Principal
    csrf: str
    deadline: float
    """Wall-clock time (epoch seconds) after which the session is over."""
    checked: float
    """Monotonic time of the last check that the token is still active."""

    def csrf_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is this session's CSRF token."""
        return hmac.compare_digest(self.csrf.encode(), candidate.encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionService:
    """Creates, finds and ends console sessions. Thread-safe: called from worker threads."""

    def __init__(
        self,
        credentials: CredentialService,
        lifetime: float,
        *,
        clock: Callable[[], float] = time.time,
        recheck: float = RECHECK,
    ) -> None:
        self._credentials = credentials
        self._lifetime = lifetime
        self._clock = clock
        self._recheck = recheck
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def sign_in(self, token: str) -> tuple[str, Session] | None:
        """Verify an API token and open a session for it; returns the session id (to put in the
        cookie, never stored) and the session, or None when the token is not valid."""
        principal = self._credentials.verify_token(token.strip())
        if principal is None:
            return None
        deadline = self._clock() + self._lifetime
        info = self._credentials.get_token(principal.id)
        if info is not None and info.expires_at is not None:
            deadline = min(deadline, info.expires_at.timestamp())
        session_id = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), deadline, time.monotonic())
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._drop_expired()
            if len(self._sessions) >= MAX_SESSIONS:
                # Full of live sessions: the oldest one makes room.
                del self._sessions[next(iter(self._sessions))]
            self._sessions[_digest(session_id)] = session
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        """The live session for this id, or None (unknown, expired, or its token revoked)."""
        digest = _digest(session_id)
        with self._lock:
            session = self._sessions.get(digest)
        if session is None:
            return None
        if session.deadline <= self._clock():
            self._end(digest)
            return None
        if time.monotonic() - session.checked >= self._recheck:
            info = self._credentials.get_token(session.principal.id)
            if info is None or info.status(datetime.now(UTC)) != "active":
                self._end(digest)
                return None
            session.checked = time.monotonic()
        return session

    def sign_out(self, session_id: str) -> None:
        """End a session (nothing happens for an unknown id)."""
        self._end(_digest(session_id))

    def __len__(self) -> int:
        return len(self._sessions)

    def _end(self, digest: str) -> None:
        with self._lock:
            self._sessions.pop(digest, None)

    def _drop_expired(self) -> None:
        now = self._clock()
        for digest in [d for d, s in self._sessions.items() if s.deadline <= now]:
            del self._sessions[digest]
