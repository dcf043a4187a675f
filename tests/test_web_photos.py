"""Issue 19: every bad photo on every route that takes one (a purchase, a return) is a 422 with the
reason, never a 500, and nothing is recorded; and the service serves no /docs or /redoc (Swagger UI
and ReDoc load from a CDN that the service's own Content-Security-Policy blocks), links to neither,
and still describes itself at /openapi.json. Real stores, real HTTP (uvicorn)."""

import base64
import random
import re

import pytest

from conftest import serving
from frauddemo.access import RateLimit
from frauddemo.config import StoreRef
from frauddemo.retail import TerminalKeys, attempts_key
from frauddemo.till import capture
from frauddemo.web.app import SECURITY_HEADERS, STATIC, create_app

KEYS = TerminalKeys(bytes(range(32)))


def _jpeg() -> bytes:
    return capture("cust-00001", random.Random(1))


# (what, the photo field as sent, what the reason names)
BAD = [
    ("not-an-image", base64.b64encode(b"hello, I am a photo").decode(), "unknown_format"),
    ("not-an-image-gif", base64.b64encode(b"GIF89a not really an image").decode(), "unknown_format"),
    ("bad-base64", "%%% not base64 %%%", "base64"),
    ("bad-base64-padding", "abc", "base64"),
    ("empty", "", "empty"),
    ("truncated-jpeg", base64.b64encode(_jpeg()[: len(_jpeg()) // 2]).decode(), "truncated"),
    ("jpeg-header-only", base64.b64encode(_jpeg()[:20]).decode(), "photo rejected"),
]


@pytest.fixture
def http(stores):
    st = stores("a")
    refs = [StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()]
    app = create_app(refs, KEYS, engine=False, rate_limit=RateLimit(rate=0))
    with serving(app) as client:
        yield client, st["a"][1]


def _refused(r, why):
    assert r.status_code == 422, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "photo rejected" in detail and why in detail, detail


@pytest.mark.parametrize("what, photo, why", BAD, ids=[b[0] for b in BAD])
def test_a_purchase_with_a_bad_photo_is_422_and_records_nothing(http, what, photo, why):
    client, _ = http
    r = client.post(
        "/api/purchases", json={"store": "a", "customer": "cust-00001", "items": {"shirt": 1}, "photo": photo}
    )
    _refused(r, why)
    r = client.post(
        "/api/purchases",
        json={"store": "a", "customer": "cust-00001", "items": {"shirt": 1}, "photo": photo},
        headers={"Idempotency-Key": f"k-{what}"},
    )
    _refused(r, why)
    assert client.get("/api/purchases").json()["items"] == []


@pytest.mark.parametrize("what, photo, why", BAD, ids=[b[0] for b in BAD])
def test_a_return_with_a_bad_photo_is_422_and_records_nothing(http, what, photo, why):
    client, store = http
    p = client.post("/api/purchases", json={"store": "a", "customer": "cust-00001", "items": {"shirt": 1}})
    assert p.status_code == 201, p.text
    receipt = p.json()["receipt"]
    for body in (
        {"store": "a", "receipt": receipt, "photo": photo},
        {"store": "a", "receipt": receipt, "photo": photo, "customer": "cust-00001"},
        {"store": "a", "receipt": "r-never-issued", "photo": photo},
    ):
        _refused(client.post("/api/returns", json=body), why)
    assert store.smembers(attempts_key(receipt)) == set()
    assert client.get("/api/returns").json()["items"] == []


def test_there_is_no_docs_page_and_no_page_links_to_one(http):
    client, _ = http
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404, path
    spec = client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["paths"]["/api/purchases"]["post"]
    # the CSP stays strict: nothing is loaded from another origin
    csp = client.get("/").headers["content-security-policy"]
    assert csp == SECURITY_HEADERS["Content-Security-Policy"] and "http" not in csp and "*" not in csp
    pages = {"/": client.get("/").text}
    pages |= {f"/static/{p.name}": p.read_text() for p in STATIC.iterdir() if p.suffix in (".html", ".js", ".css")}
    for name, text in pages.items():
        assert not re.search(r"/(docs|redoc)\b", text), name


def test_no_source_of_the_service_points_anyone_at_docs():
    """The console line of `frauddemo up` and every other string of the runtime: no /docs or /redoc."""
    root = STATIC.parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "}/docs" not in text and "}/redoc" not in text and '"/docs' not in text, path
