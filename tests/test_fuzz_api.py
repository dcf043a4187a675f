"""Schemathesis against the detection service's own OpenAPI, over real HTTP (uvicorn) on two real
replicating stores with the detector engine running: no 5xx, and every response is documented
(status code, content type, headers) and matches its schema. Bounded: a few examples per operation."""
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from frauddemo.access import RateLimit
from frauddemo.config import StoreRef
from frauddemo.retail import TerminalKeys
from frauddemo.servers import Server, ServerSpec
from frauddemo.service import create_app
from frauddemo.store import Store

from conftest import Links, serving, wait_until

MAX_EXAMPLES = 12  # per operation: the whole run stays around a minute on this machine


def openapi() -> dict:
    """The service's own OpenAPI document (it does not depend on the stores it is given)."""
    app = create_app([StoreRef("a", "redis://127.0.0.1:1", None)], engine=False)
    return app.openapi()


# The event stream never ends by design (tests/test_api.py covers it).
schema = schemathesis.openapi.from_dict(openapi()).exclude(path="/api/events")


@pytest.fixture(scope="module")
def api_base(tmp_path_factory, server_binary):
    """Stores a and b on free ports, both links, and the service (engine + API, no rate limit)."""
    servers, opened, links = [], [], Links()
    try:
        for n in "ab":
            servers.append(Server(ServerSpec.create(n, tmp_path_factory.mktemp(f"fuzz-{n}"), server_binary)))
            opened.append(Store.connect(servers[-1].url, servers[-1].password, replica=n))  # loads the library
        links.mesh(servers)
        refs = [StoreRef(s.spec.name, *s.credentials("detector")) for s in servers]
        app = create_app(refs, TerminalKeys(bytes(range(32))), workers=1, detector_name="fuzz",
                         rate_limit=RateLimit(rate=0))
        app.state.demo.scenario_timeout = 5.0
        with serving(app) as http:
            wait_until(lambda: http.get("/readyz").status_code == 200, 30, what="the links to report")
            yield str(http.base_url).rstrip("/")
    finally:
        links.stop_all()
        for st in opened:
            st.close()
        for s in servers:
            s.kill()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_every_operation_answers_within_its_schema(case, api_base):
    # An earlier case may have partitioned the link: the scenario then rightly answers 503 (documented).
    assert httpx.post(api_base + "/api/link", json={"action": "heal"}).status_code == 200
    case.call_and_validate(base_url=api_base, timeout=30)


# --- regressions found by the fuzzer ----------------------------------------------------------------

@pytest.mark.parametrize("path, allow", [("/api/hacked-pos", "GET, POST"), ("/api/purchases", "GET, POST"),
                                         ("/api/reset", "POST"), ("/api/purchases/r-1", "GET")])
def test_405_lists_every_method_of_the_path(api_base, path, allow):
    """Starlette answered OPTIONS /api/hacked-pos with `Allow: POST` (only the first route's)."""
    r = httpx.request("OPTIONS", api_base + path)
    assert r.status_code == 405 and r.headers["Allow"] == allow and r.json()["detail"]


def test_readyz_bodies_match_their_schema(tmp_path, server_binary):
    """/readyz's 503 was documented as a Problem but answers {ready, problems}."""
    srv = Server(ServerSpec.create("a", tmp_path, server_binary))
    try:
        Store.connect(srv.url, srv.password, replica="a").close()
        refs = [StoreRef("a", *srv.credentials("detector")), StoreRef("b", "redis://127.0.0.1:1", None)]
        app = create_app(refs, engine=False)
        with serving(app) as http:
            r = http.get("/readyz")
    finally:
        srv.kill()
    assert r.status_code == 503 and r.json()["ready"] is False and "store b down" in r.json()["problems"]
    doc = openapi()["paths"]["/readyz"]["get"]["responses"]
    assert doc["503"]["content"]["application/json"]["schema"] == doc["200"]["content"]["application/json"]["schema"]


def test_a_body_that_is_not_utf8_is_a_documented_400(api_base):
    """Bytes that are not UTF-8 JSON got FastAPI's 400, which no POST documented."""
    r = httpx.post(api_base + "/api/link", content=b"\xff", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"]
    assert "400" in openapi()["paths"]["/api/link"]["post"]["responses"]


@pytest.mark.parametrize("path, body", [("/api/hacked-pos", {"running": 0}),
                                        ("/api/purchases", {"store": "a", "customer": "c", "items": {"shirt": "1"}}),
                                        ("/api/returns", {"store": "a", "receipt": "r-1", "capture": "yes"})])
def test_bodies_are_not_coerced(api_base, path, body):
    """{"running": 0} used to stop the hacked POS (pydantic's lax mode read 0 as False)."""
    r = httpx.post(api_base + path, json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body"


def test_photo_ids_are_documented_as_sha256_hex():
    """GET /api/photos/0 was schema-valid (any string) but refused with 422."""
    for path in ("/api/photos/{sha}", "/api/photos/{sha}/thumbnail"):
        (param,) = [p for p in openapi()["paths"][path]["get"]["parameters"] if p["name"] == "sha"]
        assert param["schema"]["pattern"] == "^[0-9a-f]{64}$"
