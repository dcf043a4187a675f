"""Process helpers shared by the supervisor, tests and benchmarks."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: be killed when the parent thread goes (PR_SET_PDEATHSIG), even by kill -9."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass


def child_preexec() -> None:
    """Run in a child before exec: die with the parent (Linux), and keep out of the terminal's
    process group so that Ctrl-C reaches only the supervisor, which then stops children in order."""
    os.setpgrp()
    die_with_parent()


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
