"""Who may change the demo through the API: an optional bearer token for every POST (the controls:
tills, scenario, partition/heal, hacked POS, reset) and a token-bucket rate limit on POSTs per
client address. Reads (GET) stay open.

Locally the service binds 127.0.0.1 and needs no token. In Kubernetes the operator generates one
into a Secret and mounts it as a file (FRAUDDEMO_API_TOKEN_FILE); FRAUDDEMO_API_TOKEN also works.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .config import ConfigError

TOKEN_ENV, TOKEN_FILE_ENV = "FRAUDDEMO_API_TOKEN", "FRAUDDEMO_API_TOKEN_FILE"
RATE_ENV, BURST_ENV = "FRAUDDEMO_API_POST_RATE", "FRAUDDEMO_API_POST_BURST"
log = logging.getLogger(__name__)


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description="The service's API token (FRAUDDEMO_API_TOKEN_FILE), when it has one",
)


class AccessError(ConfigError):
    """The access settings cannot be used (unreadable token file, bad rate)."""


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise AccessError(f"cannot read the API token file {path}: {e.strerror}") from None
    if not token:
        raise AccessError(f"the API token file {path} is empty")
    return token


def token_from_env(env=os.environ) -> str | None:
    """The API token from FRAUDDEMO_API_TOKEN_FILE (preferred) or FRAUDDEMO_API_TOKEN; None: no auth."""
    path = env.get(TOKEN_FILE_ENV)
    if path:
        return _read_token(path)
    return env.get(TOKEN_ENV) or None


class TokenFile:
    """A token kept in a file and read again whenever the file changes: Kubernetes updates a mounted
    Secret in place, so a recreated or edited `<name>-api-token` takes effect without a restart. A file
    that turns unreadable or empty later keeps the last good token (and says so in the log)."""

    def __init__(self, path: str):
        self.path = path
        try:
            stamp = self._stat()  # before reading: a change in between is read again on the next POST
        except OSError:
            stamp = None
        self._token, self._stamp = _read_token(path), stamp  # a bad file fails at start

    def _stat(self):
        st = os.stat(self.path)  # follows the Secret volume's symlinks: a new version is a new inode
        return st.st_ino, st.st_mtime_ns, st.st_size

    def __call__(self) -> str:
        try:
            stamp = self._stat()
            if stamp != self._stamp:
                self._token, self._stamp = _read_token(self.path), stamp
        except (OSError, AccessError) as e:
            log.warning("keeping the last API token: %s", getattr(e, "strerror", None) or e)
        return self._token


def api_token_from_env(env=os.environ) -> TokenFile | str | None:
    """What the service checks POSTs against: a TokenFile (FRAUDDEMO_API_TOKEN_FILE), a fixed token
    (FRAUDDEMO_API_TOKEN) or None (no auth)."""
    path = env.get(TOKEN_FILE_ENV)
    return TokenFile(path) if path else (env.get(TOKEN_ENV) or None)


@dataclass(frozen=True)
class RateLimit:
    """`rate` POSTs per second per client address, in bursts of up to `burst`; rate 0 turns it off."""

    rate: float = 100.0
    burst: int = 500

    @classmethod
    def from_env(cls, env=os.environ) -> RateLimit:
        try:
            out = cls(float(env.get(RATE_ENV, cls.rate)), int(env.get(BURST_ENV, cls.burst)))
        except ValueError:
            raise AccessError(f"{RATE_ENV} must be a number and {BURST_ENV} an integer") from None
        if not (math.isfinite(out.rate) and out.rate >= 0 and out.burst >= 1):
            raise AccessError(f"{RATE_ENV} must be >= 0 and {BURST_ENV} >= 1")
        return out


class Buckets:
    """One token bucket per client address (bounded: the fullest buckets are forgotten first)."""

    MAX_CLIENTS = 10_000

    def __init__(self, limit: RateLimit, clock=time.monotonic):
        self.limit, self.clock = limit, clock
        self._lock = threading.Lock()
        self._b: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """0 when a POST from `client` may go ahead, else the seconds until it may."""
        rate, burst = self.limit.rate, self.limit.burst
        now = self.clock()
        with self._lock:
            tokens, at = self._b.get(client, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens >= 1:
                self._b[client] = (tokens - 1, now)
                self._forget()
                return 0.0
            self._b[client] = (tokens, now)
            return (1 - tokens) / rate

    def _forget(self) -> None:
        if len(self._b) > self.MAX_CLIENTS:
            for client, _ in sorted(self._b.items(), key=lambda kv: -kv[1][0])[: len(self._b) // 2]:
                del self._b[client]


def guards(token: TokenFile | str | None, limit: RateLimit) -> list:
    """FastAPI dependencies for every state-changing route: rate limit first, then the token (a
    TokenFile is asked for the current one on every POST)."""
    buckets = Buckets(limit) if limit.rate > 0 else None
    current = token if callable(token) else (lambda: token)

    def rate_limited(request: Request) -> None:
        if buckets is None:
            return
        wait = buckets.take(request.client.host if request.client else "?")
        if wait:
            raise HTTPException(
                429,
                f"too many POSTs from this client: at most {limit.rate:g} per second "
                f"(bursts of {limit.burst}); retry in {wait:.1f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def authorised(given: HTTPAuthorizationCredentials | None = Depends(BEARER)) -> None:
        expected = current()
        if given is None or not hmac.compare_digest(given.credentials.strip().encode(), expected.encode()):
            raise HTTPException(
                401,
                "this control needs the API token (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": 'Bearer realm="frauddemo"'},
            )

    # Only with a token does the OpenAPI declare the bearer scheme on the POSTs.
    return [rate_limited, authorised] if token else [rate_limited]
