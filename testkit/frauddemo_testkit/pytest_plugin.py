"""pytest fixtures for the operator's tests: one API emulator (own thread) and one real kopf operator
(own thread) for the whole session, the CRD registered from crd.yaml over HTTP, and a fake detector
API. Load with `pytest_plugins = ("frauddemo_testkit.pytest_plugin",)`.

Every thread started here is stopped and joined at the end of the session.
"""

from __future__ import annotations

import itertools

import httpx
import pytest

from frauddemo_operator import crd
from frauddemo_operator.main import OperatorThread
from frauddemo_operator.settings import Settings

from .emulator import EmulatorThread
from .testing import FD_PATH, Cluster, FakeDetector

_ns_counter = itertools.count(1)


@pytest.fixture(scope="session")
def fake_detector():
    with FakeDetector() as fd:
        yield fd


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory, fake_detector):
    tmp = tmp_path_factory.mktemp("operator")
    with EmulatorThread(controllers=True, monitoring=True) as emu, httpx.Client(base_url=emu.url, timeout=30) as http:
        r = http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd.load())
        assert r.status_code == 201, r.text
        settings = Settings(
            kubeconfig=emu.kubeconfig(tmp / "kubeconfig"),
            liveness=None,
            stats_seconds=0.25,
            stats_timeout=1.0,
            detector_url=fake_detector.url + "/{namespace}/{name}",
            status_debounce=0.02,
            backoff_base=0.2,
            backoff_cap=2.0,
            resync_seconds=3600,
            password_grace=3.0,
        )
        with OperatorThread(settings) as op:
            yield Cluster(emu, op, http, fake_detector)


@pytest.fixture
def kube_ns(request) -> str:
    """A fresh namespace name per test (the emulator needs no Namespace object); its FraudDemos are
    deleted afterwards so that later tests do not share the operator with them."""
    name = f"t{next(_ns_counter)}"
    yield name
    if "kube_cluster" in request.fixturenames:
        kube_cluster = request.getfixturevalue("kube_cluster")
        for fd in kube_cluster.emu.list("frauddemos", name):
            kube_cluster.http.delete(FD_PATH.format(ns=name) + f"/{fd['metadata']['name']}")
