"""What the tests that run real programs share: the `frauddemo up` command line, stopping a child
process, and Debian's Chromium with the flags that keep it on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# headless, and nothing that reaches outside the machine (updates, sync, QUIC probes)
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def up_argv(port: int, data_dir: Path | str | None, *flags: str) -> list[str]:
    """`frauddemo up --headless` on `port` (and `data_dir`, unless None), as a user runs it."""
    data = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return [sys.executable, "-m", "frauddemo", "up", "--headless", "--port", str(port), *data, *flags]


def stop(proc: subprocess.Popen, timeout: float = 30, group: bool = False) -> None:
    """SIGTERM `proc` (its whole process group when `group`), SIGKILL it after `timeout` seconds."""

    def send(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except ProcessLookupError:
            pass

    if proc.poll() is None:
        send(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait(10)
