"""Secrets kept in files: passwords and keys written 0600, read back without their trailing newline.

Its own module so that acl (the store agent) and servers (which renders the ACL file) both use it without
importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def read_secret(path: str | Path) -> str:
    return Path(path).read_text().strip()
