"""Schemathesis against the detection service's own OpenAPI, over real HTTP (uvicorn) on two real
replicating stores with the detector engine running: no 5xx, and every response is documented
(status code, content type, headers) and matches its schema. Bounded: a few examples per operation."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from conftest import Links, serving, wait_until
from frauddemo.access import RateLimit
from frauddemo.config import StoreRef
from frauddemo.retail import TerminalKeys
from frauddemo.servers import Server, ServerSpec
from frauddemo.store import Store
from frauddemo.web.app import create_app

MAX_EXAMPLES = 10  # per operation (4 for the controls with a token): about a minute and a half in all


TOKEN = "fuzz-token"


def openapi(token: str | None = None) -> dict:
    """The service's own OpenAPI document (it does not depend on the stores it is given)."""
    app = create_app([StoreRef("a", "redis://127.0.0.1:1", None)], engine=False, api_token=token)
    return app.openapi()


# The event stream never ends by design (tests/test_api.py covers it).
schema = schemathesis.openapi.from_dict(openapi()).exclude(path="/api/events")
# With a token (as in Kubernetes), the controls: schemathesis also sends them without it (ignored_auth).
controls = schemathesis.openapi.from_dict(openapi(TOKEN)).include(method="POST")
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def fuzz_refs(tmp_path_factory, server_binary):
    """Stores a and b on free ports with both links: the detector's refs."""
    servers, opened, links = [], [], Links()
    try:
        for n in "ab":
            servers.append(Server(ServerSpec.create(n, tmp_path_factory.mktemp(f"fuzz-{n}"), server_binary)))
            opened.append(Store.connect(servers[-1].url, servers[-1].password, replica=n))  # loads the library
        links.mesh(servers)
        yield [StoreRef(s.spec.name, *s.credentials("detector")) for s in servers]
    finally:
        links.stop_all()
        for st in opened:
            st.close()
        for s in servers:
            s.kill()


def served(refs, **kw):
    app = create_app(refs, TerminalKeys(bytes(range(32))), workers=1, rate_limit=RateLimit(rate=0), **kw)
    app.state.demo.scenario_timeout = 5.0
    return serving(app)


@pytest.fixture(scope="module")
def api_base(fuzz_refs):
    """The service (engine + API, no rate limit, no token) on the stores."""
    with served(fuzz_refs, detector_name="fuzz") as http:
        wait_until(
            lambda: all(l["state"] == "up" for l in http.get("/api/status").json()["links"]),
            30,
            what="the links to report",
        )
        yield str(http.base_url).rstrip("/")


@pytest.fixture(scope="module")
def token_base(fuzz_refs, api_base):
    """A second service on the same stores with an API token (the first one's engine judges)."""
    with served(fuzz_refs, engine=False, api_token=TOKEN) as http:
        yield str(http.base_url).rstrip("/")


def heal(base: str) -> None:
    """An earlier case may have partitioned the link: the scenario then rightly answers 503 (documented)."""
    assert (
        httpx.post(
            base + "/api/link", json={"action": "heal"}, headers={"Authorization": f"Bearer {TOKEN}"}
        ).status_code
        == 200
    )


@schema.parametrize()
@SETTINGS
def test_every_operation_answers_within_its_schema(case, api_base):
    heal(api_base)
    case.call_and_validate(base_url=api_base, timeout=30)


@controls.parametrize()
@settings(SETTINGS, max_examples=4)
def test_every_control_with_a_token_answers_within_its_schema(case, token_base):
    heal(token_base)
    case.call_and_validate(base_url=token_base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"})


# --- regressions found by the fuzzer ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path, allow",
    [
        ("/api/hacked-pos", "GET, POST"),
        ("/api/purchases", "GET, POST"),
        ("/api/reset", "POST"),
        ("/api/purchases/r-1", "GET"),
    ],
)
def test_405_lists_every_method_of_the_path(api_base, path, allow):
    """Starlette answered OPTIONS /api/hacked-pos with `Allow: POST` (only the first route's)."""
    r = httpx.request("OPTIONS", api_base + path)
    assert r.status_code == 405 and r.headers["Allow"] == allow and r.json()["detail"]


def test_readyz_bodies_match_their_schema(tmp_path, server_binary):
    """/readyz's 503 was documented as a Problem but answers {ready, problems}. A store down is not a
    reason for 503 (the process serves the page that shows the outage): it is listed as degraded."""
    srv = Server(ServerSpec.create("a", tmp_path, server_binary))
    try:
        Store.connect(srv.url, srv.password, replica="a").close()
        refs = [StoreRef("a", *srv.credentials("detector")), StoreRef("b", "redis://127.0.0.1:1", None)]
        app = create_app(refs, engine=False)
        with serving(app) as http:
            r = http.get("/readyz")
    finally:
        srv.kill()
    assert r.status_code == 200 and r.json()["ready"] is True and "store b down" in r.json()["degraded"]
    doc = openapi()["paths"]["/readyz"]["get"]["responses"]
    assert doc["503"]["content"]["application/json"]["schema"] == doc["200"]["content"]["application/json"]["schema"]


def test_a_body_that_is_not_utf8_is_a_documented_400(api_base):
    """Bytes that are not UTF-8 JSON got FastAPI's 400, which no POST documented."""
    r = httpx.post(api_base + "/api/link", content=b"\xff", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"]
    assert "400" in openapi()["paths"]["/api/link"]["post"]["responses"]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/hacked-pos", {"running": 0}),
        ("/api/purchases", {"store": "a", "customer": "c", "items": {"shirt": "1"}}),
        ("/api/returns", {"store": "a", "receipt": "r-1", "capture": "yes"}),
    ],
)
def test_bodies_are_not_coerced(api_base, path, body):
    """{"running": 0} used to stop the hacked POS (pydantic's lax mode read 0 as False)."""
    r = httpx.post(api_base + path, json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body"


def test_photo_ids_are_documented_as_sha256_hex():
    """GET /api/photos/0 was schema-valid (any string) but refused with 422."""
    for path in ("/api/photos/{sha}", "/api/photos/{sha}/thumbnail"):
        (param,) = [p for p in openapi()["paths"][path]["get"]["parameters"] if p["name"] == "sha"]
        assert param["schema"]["pattern"] == "^[0-9a-f]{64}$"
