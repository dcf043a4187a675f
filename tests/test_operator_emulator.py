"""The API emulator's fixes to kmock's KubernetesEmulator (the gaps docs/testing.md lists), over real HTTP."""

from __future__ import annotations

import json

import httpx

from frauddemo_operator import crd

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)

CM = "/api/v1/namespaces/{ns}/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


def cm(name, **labels):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def test_create_sets_identity_and_takes_the_namespace_from_the_url(kube_cluster, kube_ns):
    r = kube_cluster.http.post(CM.format(ns=kube_ns), json=cm("one"))
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/json"
    meta = r.json()["metadata"]
    assert meta["namespace"] == kube_ns
    assert meta["uid"] and meta["resourceVersion"].isdigit() and meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z")
    r2 = kube_cluster.http.post(CM.format(ns=kube_ns), json={"metadata": {"generateName": "gen-"}, "data": {}})
    assert r2.status_code == 201 and r2.json()["metadata"]["name"].startswith("gen-")
    assert int(r2.json()["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    dup = kube_cluster.http.post(CM.format(ns=kube_ns), json=cm("one"))
    assert dup.status_code == 409 and dup.json()["reason"] == "AlreadyExists"
    assert dup.headers["content-type"] == "application/json"
    assert kube_cluster.http.get(CM.format(ns=kube_ns) + "/nope").status_code == 404


def test_patches_merge_json_and_preconditions(kube_cluster, kube_ns):
    base = kube_cluster.http.post(CM.format(ns=kube_ns), json=cm("p")).json()
    rv = base["metadata"]["resourceVersion"]
    r = kube_cluster.http.patch(CM.format(ns=kube_ns) + "/p", json={"data": {"k": None, "n": "1"}}, headers=MERGE)
    assert r.json()["data"] == {"n": "1"}
    assert r.json()["metadata"]["generation"] == 2
    # a no-op patch changes nothing, not even the resourceVersion
    same = kube_cluster.http.patch(CM.format(ns=kube_ns) + "/p", json={"data": {"n": "1"}}, headers=MERGE).json()
    assert same["metadata"]["resourceVersion"] == r.json()["metadata"]["resourceVersion"]
    # a failed JSON-patch test is 422, as kopf's finalizer patches expect
    bad = kube_cluster.http.patch(
        CM.format(ns=kube_ns) + "/p",
        content=json.dumps(
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/data/x", "value": "1"},
            ]
        ),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert bad.status_code == 422
    good = kube_cluster.http.patch(
        CM.format(ns=kube_ns) + "/p",
        content=json.dumps(
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": same["metadata"]["resourceVersion"]},
                {"op": "add", "path": "/data/x", "value": "1"},
            ]
        ),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert good.status_code == 200 and good.json()["data"]["x"] == "1"
    stale = kube_cluster.http.patch(
        CM.format(ns=kube_ns) + "/p", json={"metadata": {"resourceVersion": rv}, "data": {}}, headers=MERGE
    )
    assert stale.status_code == 409
    assert (
        kube_cluster.http.patch(
            CM.format(ns=kube_ns) + "/p", content="x: 1", headers={"Content-Type": "application/apply-patch+yaml"}
        ).status_code
        == 415
    )


def test_status_is_a_subresource(kube_cluster, kube_ns):
    path = f"/apis/{crd.API_VERSION}/namespaces/{kube_ns}/frauddemos"
    body = {
        "apiVersion": crd.API_VERSION,
        "kind": "FraudDemo",
        "metadata": {"name": "s"},
        "spec": {"stores": [{"name": "a"}, {"name": "b"}], "pos": {"hacked": {"store": "nowhere"}}},
        "status": {"phase": "Ready"},
    }
    created = kube_cluster.http.post(path, json=body).json()
    assert "status" not in created or created["status"].get("phase") != "Ready"  # status ignored on create
    assert created["spec"]["replication"]["batchMax"] == 512  # defaulted by the schema
    r = kube_cluster.http.patch(
        path + "/s", json={"status": {"phase": "Degraded"}, "spec": {"image": "x:1"}}, headers=MERGE
    ).json()
    assert r["spec"]["image"] == "x:1" and (r.get("status") or {}).get("phase") != "Degraded"
    gen = r["metadata"]["generation"]
    s = kube_cluster.http.patch(
        path + "/s/status", json={"status": {"phase": "Degraded"}, "spec": {"image": "y:1"}}, headers=MERGE
    ).json()
    assert s["status"]["phase"] == "Degraded" and s["spec"]["image"] == "x:1"
    assert s["metadata"]["generation"] == gen  # status writes do not bump the generation


def test_custom_resources_are_validated_with_causes(kube_cluster, kube_ns):
    path = f"/apis/{crd.API_VERSION}/namespaces/{kube_ns}/frauddemos"
    r = kube_cluster.http.post(
        path,
        json={
            "apiVersion": crd.API_VERSION,
            "kind": "FraudDemo",
            "metadata": {"name": "v"},
            "spec": {"stores": [{"name": "a", "replicas": 0}, {"name": "b"}]},
        },
    )
    assert r.status_code == 422
    assert [c["field"] for c in r.json()["details"]["causes"]] == ["spec.stores[0].replicas"]
    ok = kube_cluster.http.post(
        path,
        json={
            "apiVersion": crd.API_VERSION,
            "kind": "FraudDemo",
            "metadata": {"name": "v"},
            "spec": {"stores": [{"name": "a"}, {"name": "b"}], "bogus": 1},
        },
    )
    assert ok.status_code == 201 and "bogus" not in ok.json()["spec"]  # unknown fields pruned
    kube_cluster.delete_fd(kube_ns, "v")


def test_list_and_watch_with_selectors_and_resume(kube_cluster, kube_ns):
    http = kube_cluster.http
    http.post(CM.format(ns=kube_ns), json=cm("x1", team="red"))
    http.post(CM.format(ns=kube_ns), json=cm("x2", team="blue"))
    listed = http.get(CM.format(ns=kube_ns), params={"labelSelector": "team in (red,green)"}).json()
    assert [o["metadata"]["name"] for o in listed["items"]] == ["x1"]
    assert (
        http.get(CM.format(ns=kube_ns), params={"labelSelector": "team!=red"}).json()["items"][0]["metadata"]["name"]
        == "x2"
    )
    assert http.get(CM.format(ns=kube_ns), params={"fieldSelector": "metadata.name=x2"}).json()["items"][0]["data"]
    rv = listed["metadata"]["resourceVersion"]
    http.patch(CM.format(ns=kube_ns) + "/x1", json={"data": {"k": "2"}}, headers=MERGE)
    http.patch(CM.format(ns=kube_ns) + "/x2", json={"data": {"k": "2"}}, headers=MERGE)
    http.delete(CM.format(ns=kube_ns) + "/x1")
    # resuming from the list's resourceVersion replays exactly what happened since, filtered
    events = []
    with httpx.stream(
        "GET",
        kube_cluster.emu.url + CM.format(ns=kube_ns),
        params={"watch": "true", "resourceVersion": rv, "labelSelector": "team=red", "timeoutSeconds": "1"},
    ) as s:
        for line in s.iter_lines():
            if line:
                events.append(json.loads(line))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("MODIFIED", "x1"), ("DELETED", "x1")]
    # without a resourceVersion: the snapshot as ADDED
    with httpx.stream(
        "GET", kube_cluster.emu.url + CM.format(ns=kube_ns), params={"watch": "true", "timeoutSeconds": "1"}
    ) as s:
        names = [json.loads(line)["object"]["metadata"]["name"] for line in s.iter_lines() if line]
    assert names == ["x2"]
    # far too old a resourceVersion is 410 Gone (kopf then relists)
    emu = kube_cluster.emu.emulator
    key = ("", "v1", "configmaps")
    old_floor = kube_cluster.emu.call(lambda: emu._floor[key])
    kube_cluster.emu.call(lambda: emu._floor.__setitem__(key, int(rv) + 10))
    try:
        with httpx.stream(
            "GET",
            kube_cluster.emu.url + CM.format(ns=kube_ns),
            params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"},
        ) as s:
            first = json.loads(next(iter(s.iter_lines())))
        assert first["type"] == "ERROR" and first["object"]["code"] == 410
    finally:
        kube_cluster.emu.call(lambda: emu._floor.__setitem__(key, old_floor))


def test_garbage_collection_and_finalizers(kube_cluster, kube_ns):
    http = kube_cluster.http
    owner = http.post(CM.format(ns=kube_ns), json=cm("owner")).json()
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    dep = cm("dep")
    dep["metadata"]["ownerReferences"] = [ref]
    http.post(CM.format(ns=kube_ns), json=dep)
    held = cm("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    http.post(CM.format(ns=kube_ns), json=held)
    http.delete(CM.format(ns=kube_ns) + "/owner")
    from frauddemo_testkit.testing import wait_for

    wait_for(lambda: http.get(CM.format(ns=kube_ns) + "/dep").status_code == 404, 5, what="dependent collected")
    # finalizers: deletion marks, removing the finalizer deletes
    r = http.delete(CM.format(ns=kube_ns) + "/held").json()
    assert r["metadata"]["deletionTimestamp"]
    assert http.get(CM.format(ns=kube_ns) + "/held").status_code == 200
    http.patch(CM.format(ns=kube_ns) + "/held", json={"metadata": {"finalizers": None}}, headers=MERGE)
    assert http.get(CM.format(ns=kube_ns) + "/held").status_code == 404
    # an object created for an owner that no longer exists is collected too
    orphan = cm("orphan")
    orphan["metadata"]["ownerReferences"] = [ref]
    http.post(CM.format(ns=kube_ns), json=orphan)
    wait_for(lambda: http.get(CM.format(ns=kube_ns) + "/orphan").status_code == 404, 5, what="orphan collected")


def test_discovery_namespaces_and_faults(kube_cluster, kube_ns):
    http = kube_cluster.http
    assert http.get("/api/v1/namespaces").status_code == 200
    assert http.post("/api/v1/namespaces", json={"metadata": {"name": kube_ns}}).status_code == 201
    assert kube_ns in [n["metadata"]["name"] for n in http.get("/api/v1/namespaces").json()["items"]]
    res = http.get(f"/apis/{crd.API_VERSION}").json()
    fd = next(r for r in res["resources"] if r["name"] == "frauddemos")
    assert fd["kind"] == "FraudDemo" and fd["namespaced"] and "fd" in fd["shortNames"]
    assert any(r["name"] == "frauddemos/status" for r in res["resources"])
    assert http.get("/apis/monitoring.coreos.com/v1").status_code == 200
    assert http.get("/apis/nothere.example.com/v1").status_code == 404
    kube_cluster.emu.fail("POST", "configmaps", 503, times=1)
    assert http.post(CM.format(ns=kube_ns), json=cm("f")).status_code == 503
    assert http.post(CM.format(ns=kube_ns), json=cm("f")).status_code == 201
