"""Photos are private (issue 17, item 3): purchase and return photos and their thumbnails go only to an
authorised viewer, over real HTTP (uvicorn) on real stores. With a token: 401 without it, 403 with a
wrong one. Without a token: loopback only; a service reached on another address refuses with 403 and
says why, unless photos were made public on purpose. A story links photos only for those who may open
them. And bad purchase photos (item 5) are 422 with a reason, never 500."""

import base64
import contextlib
import random
import socket
import threading

import httpx
import pytest
import uvicorn

from conftest import serving, wait_until
from frauddemo.access import RateLimit
from frauddemo.config import StoreRef
from frauddemo.lab.samples import png_bomb
from frauddemo.photos import access as photo_access
from frauddemo.retail import TerminalKeys
from frauddemo.servers import free_port
from frauddemo.till import capture
from frauddemo.web.app import create_app

KEYS = TerminalKeys(bytes(range(32)))
TOKEN = "photo-viewer-token-0123"


@pytest.fixture
def refs(stores):
    st = stores("a")
    return [StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()]


def _buy(http, headers=None):
    photo = base64.b64encode(capture("cust-00007", random.Random(3))).decode()
    r = http.post(
        "/api/purchases",
        json={"store": "a", "customer": "cust-00007", "items": {"shirt": 1}, "photo": photo},
        headers=headers or {},
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_with_a_token_photos_need_it(refs):
    app = create_app(refs, KEYS, engine=False, api_token=TOKEN, rate_limit=RateLimit(rate=0))
    good = {"Authorization": f"Bearer {TOKEN}"}
    with serving(app) as http:
        p = _buy(http, good)
        sha = p["photo"]
        for path in (f"/api/photos/{sha}", f"/api/photos/{sha}/thumbnail"):
            r = http.get(path)
            assert r.status_code == 401 and "API token" in r.json()["detail"], path
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = http.get(path, headers={"Authorization": "Bearer wrong-token"})
            assert r.status_code == 403 and "wrong token" in r.json()["detail"], path
            r = http.get(path, headers=good)
            assert r.status_code == 200 and r.content[:2] == b"\xff\xd8", path
        # the story names no usable photo link to the unauthorised, and links it for the viewer
        anon = http.get(f"/api/purchases/{p['receipt']}").json()
        assert anon["purchase_photo"] is None
        seen = http.get(f"/api/purchases/{p['receipt']}", headers=good).json()
        assert seen["purchase_photo"]["url"] == f"/api/photos/{sha}"
        # knowing the receipt id is not enough, even from loopback
        assert http.get(f"/api/photos/{sha}").status_code == 401


def _lan_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with contextlib.suppress(OSError):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent
            ip = s.getsockname()[0]
            if not ip.startswith("127."):
                return ip
    return None


@contextlib.contextmanager
def _serving_on(app, host: str):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        wait_until(lambda: server.started, 20, what="uvicorn")
        yield port
    finally:
        server.should_exit = True
        t.join(15)


@pytest.mark.parametrize("public", [False, True])
def test_without_a_token_photos_stay_on_loopback(refs, monkeypatch, public):
    lan = _lan_address()
    if lan is None:
        pytest.skip("this machine has no non-loopback address to listen on")
    monkeypatch.setenv(photo_access.PUBLIC_ENV, "1" if public else "0")
    app = create_app(refs, KEYS, engine=False, rate_limit=RateLimit(rate=0))
    with _serving_on(app, "0.0.0.0") as port:
        local = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        remote = httpx.Client(base_url=f"http://{lan}:{port}", timeout=30)
        with local, remote:
            p = _buy(local)
            sha = p["photo"]
            assert local.get(f"/api/photos/{sha}").status_code == 200  # the local demo keeps working
            for path in (f"/api/photos/{sha}", f"/api/photos/{sha}/thumbnail"):
                r = remote.get(path)
                if public:
                    assert r.status_code == 200, path
                else:
                    assert r.status_code == 403 and "private" in r.json()["detail"], path
            story = remote.get(f"/api/purchases/{p['receipt']}").json()
            assert (story["purchase_photo"] is not None) is public


def test_the_test_client_is_no_loopback(refs):
    """Through Starlette's TestClient (neither end is a loopback address) photos are refused too."""
    from fastapi.testclient import TestClient

    app = create_app(refs, KEYS, engine=False, rate_limit=RateLimit(rate=0))
    with TestClient(app) as http:
        p = _buy(http)
        r = http.get(f"/api/photos/{p['photo']}")
        assert r.status_code == 403 and "private" in r.json()["detail"]


def test_bad_public_setting_is_refused():
    with pytest.raises(ValueError):
        photo_access.public_from_env({photo_access.PUBLIC_ENV: "maybe"})


# -- item 5: bad purchase photos are 422 with a reason, receipts refuse control characters --------------
def _truncated() -> bytes:
    jpeg = capture("cust-00001", random.Random(1))
    return jpeg[: len(jpeg) // 2]


@pytest.mark.parametrize(
    "kind, data, why",
    [
        ("non-image", b"GIF89a not really an image", "unknown_format"),
        ("text", b"hello, I am a photo", "unknown_format"),
        ("truncated", None, "truncated"),
        ("empty", b"", "empty"),
        ("bomb", None, "too_many_pixels"),
    ],
)
def test_purchases_reject_bad_photos_with_422(refs, kind, data, why):
    data = {"truncated": _truncated, "bomb": png_bomb}.get(kind, lambda: data)()
    app = create_app(refs, KEYS, engine=False, rate_limit=RateLimit(rate=0))
    with serving(app) as http:
        r = http.post(
            "/api/purchases",
            json={"store": "a", "customer": "cust-1", "items": {"shirt": 1}, "photo": base64.b64encode(data).decode()},
        )
        assert r.status_code == 422, (kind, r.status_code, r.text)
        assert "photo rejected" in r.json()["detail"] and why in r.json()["detail"]
        assert http.get("/api/purchases").json()["items"] == []  # nothing recorded


@pytest.mark.parametrize("receipt", ["r-1\x00", "r-\n1", "r-\x1b[31m", "r-\x7f"])
def test_receipts_refuse_control_characters(refs, receipt):
    app = create_app(refs, KEYS, engine=False, rate_limit=RateLimit(rate=0))
    with serving(app) as http:
        r = http.post("/api/returns", json={"store": "a", "receipt": receipt, "customer": "c"})
        assert r.status_code == 422, r.text
        from urllib.parse import quote

        r = http.get("/api/purchases/" + quote(receipt, safe=""))
        assert r.status_code == 422, r.text
