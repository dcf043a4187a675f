"""The images `make images` builds (tools/images.sh), run for real through containerd and runc the way
the operator's pods run them: the FraudDemo image's entry points as UID 10001 on a read-only root file
system; the store image's server started by the StatefulSet's own command and configuration, its
readiness probe, and the store agent (from the FraudDemo image, in the store's network namespace, as in
the pod) loading the function library and the ACL file, which then holds for a client of the `pos` role.

The session fixture runs tools/images.sh (a warm run takes seconds), so the images are the current ones.
Without buildah: skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from frauddemo import acl
from frauddemo_operator import builders

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tools" / "images.sh"
CONTAINERD = ROOT / "tools" / "containerd.sh"


def _sh(script: str, timeout: float = 60) -> str:
    """Output of a bash snippet run with tools/images.sh's functions sourced."""
    proc = subprocess.run(["bash", "-c", f". {IMAGES}; {script}"], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script}: {proc.stderr}"
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def images():
    if shutil.which("buildah") is None and os.environ.get("CI") != "true":
        pytest.skip("buildah is not installed (apt-get install buildah, or run `make images` as root)")
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("tools/images.sh starts a private containerd and runs containers: needs root")
    proc = subprocess.run([str(IMAGES)], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, f"tools/images.sh failed:\n{proc.stderr[-4000:]}"
    app = _sh("chart_image")
    return {
        "app": app,
        "store": _sh(f"full_ref frauddemo-store:{app.rsplit(':', 1)[1]}"),
        "address": _sh("echo $CONTAINERD_ADDRESS"),
    }


class Ctr:
    """ctr in the k8s.io namespace of tools/images.sh's containerd; removes every container it made."""

    def __init__(self, address: str):
        self.address = address
        self.made: list[str] = []

    def cmd(self, *args: str) -> list[str]:
        return ["ctr", "--address", self.address, "--namespace", "k8s.io", *args]

    def run(
        self, image: str, *command: str, mounts=(), detach=False, netns: str | None = None, env=(), timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """As the image's own USER (ctr 1.6 has no --user), on a read-only root with a tmpfs /tmp."""
        name = f"fd-test-{uuid.uuid4().hex[:10]}"
        self.made.append(name)
        args = ["run", "--read-only", "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev"]
        for src, dst, mode in mounts:
            args += ["--mount", f"type=bind,src={src},dst={dst},options=rbind:{mode}"]
        for e in env:
            args += ["--env", e]
        if netns:
            args += ["--with-ns", f"network:{netns}"]
        args += ["-d"] if detach else ["--rm"]
        proc = subprocess.run(self.cmd(*args, image, name, *command), capture_output=True, text=True, timeout=timeout)
        if not detach:
            self.made.remove(name)
        return proc

    def pid(self, name: str) -> int:
        out = subprocess.run(self.cmd("tasks", "ls"), capture_output=True, text=True, check=True).stdout
        for line in out.splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == name:
                return int(parts[1])
        raise AssertionError(f"no task {name}: {out}")

    def exec(self, name: str, *command: str, user: str | None = None, detach=False) -> subprocess.CompletedProcess:
        """In the container's environment (ctr 1.6 exec has no --env)."""
        args = ["tasks", "exec", "--exec-id", f"x{uuid.uuid4().hex[:8]}"] + (["--detach"] if detach else [])
        if user:
            args += ["--user", user]
        return subprocess.run(self.cmd(*args, name, *command), capture_output=True, text=True, timeout=60)

    def cleanup(self):
        for name in self.made:
            subprocess.run(self.cmd("tasks", "kill", "-s", "SIGKILL", name), capture_output=True)
        time.sleep(0.3)
        for name in self.made:
            subprocess.run(self.cmd("tasks", "delete", "-f", name), capture_output=True)
            subprocess.run(self.cmd("containers", "delete", name), capture_output=True)


@pytest.fixture
def ctr(images):
    c = Ctr(images["address"])
    yield c
    c.cleanup()


@pytest.mark.parametrize(("image", "uid"), [("app", builders.APP_UID), ("store", builders.STORE_UID)])
def test_images_run_as_the_operators_numeric_users(images, ctr, image, uid):
    proc = ctr.run(images[image], "id")
    assert proc.returncode == 0 and proc.stdout.startswith(f"uid={uid}(") and f"gid={uid}(" in proc.stdout, proc


@pytest.mark.parametrize(
    "command", [["frauddemo", "--help"], ["frauddemo", "detector", "--help"], ["frauddemo", "operator", "--help"]]
)
def test_app_entry_points_run_as_10001_on_a_read_only_root(images, ctr, command):
    proc = ctr.run(images["app"], *command)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usage" in proc.stdout.lower()


def test_app_image_holds_every_package_the_pods_import(images, ctr):
    """The detector decodes photos (OpenCV) and the runtime's subpackages must be in the wheel."""
    script = (
        "import importlib, pkgutil, frauddemo, cv2, numpy; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(frauddemo.__path__, 'frauddemo.')"
        " if not m.name.endswith('__main__')]; "
        "import frauddemo_operator.main; print('ok', cv2.__version__)"
    )
    proc = ctr.run(images["app"], "python", "-c", script)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout + proc.stderr[-3000:]


def test_store_image_serves_the_statefulsets_config_probe_acl_and_functions(images, ctr, tmp_path):
    uid = builders.STORE_UID
    admin_pw, pos_pw = secrets.token_hex(16), secrets.token_hex(16)
    # The pod's volumes: the ConfigMap's template, the config emptyDir, the ACL and admin Secrets, /data.
    template, config, acl_dir, admin_dir, data = (tmp_path / d for d in ("template", "config", "acl", "admin", "data"))
    for d in (template, config, acl_dir, admin_dir, data):
        d.mkdir()
    (template / "store.conf").write_text(builders.STORE_CONF)
    (template / "init.sh").write_text(builders.STORE_INIT)
    (acl_dir / builders.ACL_KEY).write_text(acl.render({acl.ADMIN: [admin_pw], "pos": [pos_pw]}))
    (admin_dir / builders.PASSWORD_KEY).write_text(admin_pw)
    for d in (config, data):
        os.chown(d, uid, uid)
    for f in (acl_dir / builders.ACL_KEY, admin_dir / builders.PASSWORD_KEY):
        os.chown(f, 0, uid)
        f.chmod(0o440)

    # the init container, then the server, with the StatefulSet's own commands
    init = ctr.run(
        images["store"],
        "sh",
        "/etc/frauddemo/init.sh",
        mounts=[(template, "/etc/frauddemo", "ro"), (config, "/config", "rw")],
        env=[
            "POD_NAME=store-0",
            "PRIMARY_HOST=store-0.h",
            f"STORE_PORT={builders.STORE_PORT}",
            f"STORE_PASSWORD={admin_pw}",
        ],
    )
    assert init.returncode == 0, init.stderr
    assert (config / "store.conf").read_text().startswith(builders.STORE_CONF)

    server = ctr.run(
        images["store"],
        "sh",
        "-c",
        builders.STORE_RUN,
        detach=True,
        mounts=[(config, "/config", "rw"), (acl_dir, builders.ACL_DIR, "ro"), (data, "/data", "rw")],
        env=[f"REDISCLI_AUTH={admin_pw}", f"VALKEYCLI_AUTH={admin_pw}"],
    )
    assert server.returncode == 0, server.stderr
    name = ctr.made[-1]
    netns = f"/proc/{ctr.pid(name)}/ns/net"

    # the readiness probe, exactly as the kubelet runs it
    deadline = time.monotonic() + 30
    while True:
        probe = ctr.exec(name, "sh", "-c", builders.STORE_PING)  # with the container's env, as the kubelet's
        if probe.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert probe.returncode == 0, f"probe: {probe.stdout}{probe.stderr}"
    maps = Path(f"/proc/{ctr.pid(name)}/maps").read_text()
    assert "libmimalloc" in maps, "the server runs on mimalloc, as the local stores do"

    # the store agent (FraudDemo image, the store's network namespace, the store's UID) loads the
    # functions and applies the ACL file
    holder = ctr.run(
        images["app"],
        "sleep",
        "3600",
        detach=True,
        netns=netns,
        mounts=[(acl_dir, builders.ACL_DIR, "ro"), (admin_dir, builders.ADMIN_DIR, "ro")],
    )
    assert holder.returncode == 0, holder.stderr
    agent = ctr.exec(
        ctr.made[-1],
        "frauddemo",
        "store-agent",
        "--url",
        f"redis://127.0.0.1:{builders.STORE_PORT}",
        "--password-file",
        f"{builders.ADMIN_DIR}/{builders.PASSWORD_KEY}",
        "--acl-file",
        f"{builders.ACL_DIR}/{builders.ACL_KEY}",
        user=f"{uid}:{uid}",
        detach=True,
    )
    assert agent.returncode == 0, agent.stderr

    # a till's client: the pos role may call the functions, not administer the server
    check = f"""
import sys, time, redis
r = redis.Redis(host="127.0.0.1", port={builders.STORE_PORT}, username="pos", password="{pos_pw}")
for _ in range(60):
    try:
        r.execute_command("FCALL_RO", "fd_version", 0)
        break
    except redis.ResponseError as e:
        err = e
        time.sleep(0.5)
else:
    sys.exit(f"fd_version never answered: {{err}}")
for denied in (("FLUSHALL",), ("CONFIG", "GET", "dir"), ("FUNCTION", "FLUSH"), ("ACL", "LIST")):
    try:
        r.execute_command(*denied)
    except redis.exceptions.NoPermissionError:
        continue
    sys.exit(f"pos may run {{denied}}")
admin = redis.Redis(host="127.0.0.1", port={builders.STORE_PORT}, password="{admin_pw}")
libs = admin.execute_command("FUNCTION", "LIST")
assert libs, "the agent loaded no function library"
info = admin.info("server")
print("ok", info.get("valkey_version") or info.get("redis_version"), len(libs))
"""
    proc = ctr.run(images["app"], "python", "-c", check, netns=netns)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout + proc.stderr[-3000:]
