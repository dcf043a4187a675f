"""Who may see a customer's face: purchase and return photos (and their thumbnails) are personal data.

A photo is served only to an authorised viewer, never to whoever knows a receipt id or a photo hash:
  - with an API token configured, the request must carry it (`Authorization: Bearer <token>`):
    401 without one, 403 with a wrong one;
  - without a token, only over loopback (the connection's both ends are loopback addresses: the local
    demo, which binds 127.0.0.1); a service reached on any other address answers 403 and says why,
    unless photos were made public on purpose with FRAUDDEMO_PHOTOS_PUBLIC=1.
Listings and stories link a photo (url, thumbnail_url) only for a viewer who may open it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

PUBLIC_ENV = "FRAUDDEMO_PHOTOS_PUBLIC"


class PhotoDenied(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _loopback(host) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return str(host) == "localhost"


def public_from_env(env=None) -> bool:
    env = os.environ if env is None else env
    raw = (env.get(PUBLIC_ENV) or "").strip().lower()
    if raw not in ("", "0", "false", "no", "1", "true", "yes"):
        raise ValueError(f"{PUBLIC_ENV}={raw!r}: use 1 or 0")
    return raw in ("1", "true", "yes")


class PhotoAccess:
    """The policy. `token`: None (no token), a string, or a callable giving the current token."""

    def __init__(self, token=None, public: bool | None = None):
        self._token = token
        self.public = public_from_env() if public is None else public

    def token(self) -> str | None:
        t = self._token() if callable(self._token) else self._token
        return t or None

    def check(self, scope: dict, authorization: str | None) -> None:
        """Raise PhotoDenied unless this request may see photos."""
        expected = self.token()
        if expected:
            if not authorization:
                raise PhotoDenied(401, "photos need the API token (Authorization: Bearer <token>)")
            scheme, _, given = authorization.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
                raise PhotoDenied(403, "this API token may not see photos (wrong token)")
            return
        if self.public:
            return
        server = (scope.get("server") or (None,))[0]
        client = (scope.get("client") or (None,))[0]
        if not (_loopback(server) and _loopback(client)):
            raise PhotoDenied(
                403,
                "photos are private: this service has no API token and is reached over a "
                "non-loopback address; configure FRAUDDEMO_API_TOKEN[_FILE] (or, on purpose, "
                f"{PUBLIC_ENV}=1)",
            )

    def allowed(self, scope: dict, authorization: str | None) -> bool:
        try:
            self.check(scope, authorization)
        except PhotoDenied:
            return False
        return True
