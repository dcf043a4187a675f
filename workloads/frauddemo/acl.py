"""Redis ACL users, one per role, each with the least commands and keys it needs.

Every role is data in `ROLES`; `render` turns roles and their passwords into an ACL file with SHA-256
hashes only (`user pos on #<sha256> ...`), so no server configuration holds a plaintext password.

ACLs also apply to the commands a function runs (`redis.call` inside `store.lua`), so a role that
calls a writing function (`fd_write`, `fd_merge`, ...) needs those commands and the keys they touch;
the key patterns are what keep it to its own part of the store. Functions are called with no
declared keys (`FCALL name 0 ...`), so FCALL's own check passes and every key is checked inside.
Limits of Redis ACLs, accepted here: a role allowed a command inside a function may also send it
directly (no "only from a script"), and SCAN lists every key name whatever the key patterns.

The `default` user is the administrator (the supervisor, the operator's store agent, tests and
tools): it alone loads functions and runs admin commands. The store agent (`frauddemo store-agent`,
store_agent.py) applies a changed ACL file to a running server.
"""

from __future__ import annotations

import dataclasses
import hashlib

ADMIN = "default"

# What the functions in store.lua run (`redis.call`), for the roles that call them: the writing ones
# (fd_init, fd_write, fd_merge, fd_import, fd_checkpoint, fd_link; only fd_write appends to the op log)
# and the reading ones (fd_position, fd_export). fd_version runs nothing.
WRITE_FUNCTIONS = (
    "time",
    "exists",
    "get",
    "set",
    "hget",
    "hmget",
    "hgetall",
    "hset",
    "hdel",
    "hincrby",
    "sadd",
    "sismember",
)
READ_FUNCTIONS = ("hmget", "hgetall", "xrevrange", "smembers", "get", "pttl")
CONNECTION = ("auth", "hello", "ping", "client|setinfo")
DATA = ("h:*", "s:*", "x:*", "c:*", "b:*")  # replicated data (the key schema in docs/architecture.md)
# What a till writes (retail.py, returns.py, photos/storage.py): receipts, return attempts and their gates,
# the sets that index them, photos; it reads verdicts (was the refund paid?) but may not write one.
# A till never writes an embedding (b:emb:*): it could pair a purchase photo with another face.
POS_WRITES = ("h:rcpt:*", "h:ret:*", "h:gate:*", "s:ret:*", "s:cret:*", "s:wallet:*", "b:photo:*")
POS_READS = ("x:ret:*", "x:cret:*", "x:wallet:*", "h:verdict:*", "b:emb:*")  # x: the sets' tombstones


@dataclasses.dataclass(frozen=True)
class Role:
    name: str
    does: str
    commands: tuple[str, ...]
    read_write: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def __post_init__(self):  # the function groups overlap: each command once
        object.__setattr__(self, "commands", tuple(dict.fromkeys(self.commands)))

    def rule(self, hashes: list[str]) -> str:
        """The role's ACL rule with these password hashes (hex SHA-256); no hash: the user is off."""
        parts = ["user", self.name, "reset", "on" if hashes else "off", *(f"#{h}" for h in hashes)]
        if self.name == ADMIN:
            return " ".join(parts + ["~*", "&*", "+@all"])
        parts += [f"%RW~{k}" for k in self.read_write] + [f"%R~{k}" for k in self.read]
        parts += [f"%W~{k}" for k in self.write]
        parts += ["resetchannels", "-@all"]
        parts += [c if c[0] in "+-" else f"+{c}" for c in CONNECTION + self.commands]
        return " ".join(parts)


ROLES = {
    r.name: r
    for r in [
        Role(ADMIN, "supervisor, operator's store agent, tests and tools: loads functions, applies ACLs", ("@all",)),
        Role(
            "pos",
            "a till (and the hacked till): writes purchases, returns and photos through fd_write; "
            "reads receipts, wallets, verdicts, photos, link states and its control flag; never writes a "
            "verdict or an alert",
            ("fcall", "fcall_ro", "hvals", "scan", "xadd", *WRITE_FUNCTIONS),
            read_write=(*POS_WRITES, "fd:meta"),
            read=(*POS_READS, "fd:link:*", "fd:ctl"),
            write=("fd:log", "fd:ev:purchases", "fd:ev:returns", "fd:ev:labels"),
        ),
        Role(
            "syncer",
            "one directed link: reads the source's op log and state (XREAD, fd_position, "
            "fd_export), merges into the target (fd_merge, fd_import), keeps its checkpoint and link state",
            ("fcall", "fcall_ro", "xread", "scan", *WRITE_FUNCTIONS, *READ_FUNCTIONS),
            read_write=(*DATA, "fd:meta", "fd:ckpt:*"),
            read=("fd:log", "fd:pause:*"),
            write=("fd:link:*",),
        ),
        Role(
            "detector",
            "the detection engine and the API service: consumes the event streams in group "
            "`detectors`, writes verdicts, alerts and API purchases/returns, and runs the controls "
            "(partition/heal, hacked POS on/off, idempotency records, reset: a script that wipes data keys "
            "and moves checkpoints); reads the stores' memory and persistence state (INFO)",
            (
                "fcall",
                "fcall_ro",
                "eval",
                "scan",
                "type",
                "mget",
                "hvals",
                "del",
                "unlink",
                "info",
                "xadd",
                "xrevrange",
                "xrange",
                "xread",
                "xlen",
                "xtrim",
                "xreadgroup",
                "xack",
                "xautoclaim",
                "xpending",
                "xgroup|create",
                *WRITE_FUNCTIONS,
            ),
            read_write=(
                *DATA,
                "fd:meta",
                "fd:ev:purchases",
                "fd:ev:returns",
                "fd:ev:verdicts",
                "fd:ev:alerts",
                "fd:pause:*",
                "fd:ctl",
                "fd:idem:*",
                "fd:reset",
                "fd:log",
            ),
            read=("fd:link:*",),
            write=("fd:ckpt:*", "fd:ev:labels"),
        ),
        Role(
            "dashboard",
            "read-only: inspecting a store (data, events, link states, checkpoints)",
            ("fcall_ro", "@read", "-@dangerous"),
            read=(*DATA, "fd:meta", "fd:ev:*", "fd:link:*", "fd:ckpt:*"),
        ),
    ]
}
CLIENT_ROLES = tuple(r for r in ROLES if r != ADMIN)


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def render(passwords: dict[str, list[str]]) -> str:
    """An ACL file: every role, accepting each of its listed passwords (two during a rotation).
    A role without passwords is switched off."""
    lines = [ROLES[name].rule([password_hash(p) for p in passwords.get(name, [])]) for name in ROLES]
    return "\n".join(lines) + "\n"


def load(admin) -> None:
    """Make a running server apply its ACL file now (`admin`: a client of the default user)."""
    admin.execute_command("ACL", "LOAD")


def roles_table() -> str:
    """docs/security.md's table of roles (tests/test_acl.py checks it holds exactly this)."""
    rows = ["| Role | Used by | Commands | Keys (R read, W write) |", "|---|---|---|---|"]
    for r in ROLES.values():
        if r.name == ADMIN:
            cmds, keys = "all", "all"
        else:
            cmds = " ".join(c.upper().replace("|", " ") for c in r.commands)
            keys = " ".join(
                [f"RW `{k}`" for k in r.read_write] + [f"R `{k}`" for k in r.read] + [f"W `{k}`" for k in r.write]
            )
        rows.append(f"| `{r.name}` | {r.does} | {cmds} | {keys} |")
    return "\n".join(rows) + "\n"
