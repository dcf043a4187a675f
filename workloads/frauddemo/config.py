"""How processes are told where the stores are and how to authenticate (never via argv secrets)."""

from __future__ import annotations

import dataclasses
import os
import re
from urllib.parse import urlparse

from .secretfiles import read_secret

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class StoreRef:
    name: str
    url: str
    password: str | None

    def connect(self, **kw):
        from .store import Store

        return Store.connect(self.url, self.password, replica=self.name, **kw)


def check_url(url: str) -> str:
    u = urlparse(url)
    if u.scheme not in ("redis", "rediss") or not u.hostname:
        raise ConfigError(f"{url!r} is not a redis:// or rediss:// URL with a host")
    if u.password:
        raise ConfigError(
            f"{u.scheme}://{u.hostname}: put the password in a file or the environment, "
            "not in the URL (command lines are visible to every user)"
        )
    return url


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"store name {name!r} must match {NAME_RE.pattern}")
    return name


def password_for(env_var: str, file: str | None) -> str | None:
    """A password from a file (preferred) or an environment variable; None when neither is set."""
    if file:
        try:
            return read_secret(file)
        except OSError as e:
            raise ConfigError(f"cannot read password file {file}: {e.strerror}") from None
    return os.environ.get(env_var) or None


def store_env_var(name: str) -> str:
    return f"FRAUDDEMO_STORE_{name.upper().replace('-', '_')}_PASSWORD"


def parse_stores(specs: list[str], password_files: list[str] | None = None) -> list[StoreRef]:
    """`NAME=URL` specs, with `NAME=PATH` password files or FRAUDDEMO_STORE_<NAME>_PASSWORD."""
    files = {}
    for spec in password_files or []:
        name, sep, path = spec.partition("=")
        if not sep:
            raise ConfigError(f"--password-file wants NAME=PATH, got {spec!r}")
        files[name] = path
    refs, seen = [], set()
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep:
            raise ConfigError(f"--store wants NAME=URL, got {spec!r}")
        check_name(name)
        if name in seen:
            raise ConfigError(f"store {name!r} given twice")
        seen.add(name)
        refs.append(StoreRef(name, check_url(url), password_for(store_env_var(name), files.get(name))))
    if len(refs) < 1:
        raise ConfigError("give at least one --store NAME=URL")
    return refs


def terminal_keys():
    """The terminals' provisioning secret from $FRAUDDEMO_TERMINAL_KEY_FILE or
    $FRAUDDEMO_TERMINAL_KEY. Without one, tills sign nothing and the detector's terminal rule is off."""
    import logging

    from .retail import InvalidInput, TerminalKeys

    path = os.environ.get("FRAUDDEMO_TERMINAL_KEY_FILE")
    try:
        value = read_secret(path) if path else os.environ.get("FRAUDDEMO_TERMINAL_KEY")
    except OSError as e:
        raise ConfigError(f"cannot read terminal key file {path}: {e.strerror}") from None
    if not value:
        logging.getLogger("frauddemo").warning("no terminal key (FRAUDDEMO_TERMINAL_KEY[_FILE]): signatures are off")
    try:
        return TerminalKeys.from_secret(value)
    except InvalidInput as e:
        raise ConfigError(str(e)) from None
