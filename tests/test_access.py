"""Who may change the demo through the API (frauddemo.access), over real HTTP (uvicorn) on a real
store: the optional bearer token on every POST, the per-client rate limit (429 + Retry-After), and
bad access settings refused with a clear message."""

import contextlib
import os
import subprocess
import sys

import pytest

from conftest import serving
from frauddemo import access
from frauddemo.access import AccessError, Buckets, RateLimit, TokenFile, api_token_from_env, token_from_env
from frauddemo.config import StoreRef
from frauddemo.web.app import create_app

TOKEN = "s3cret-token-for-tests"
CONTROL = ("/api/hacked-pos", {"running": True})  # a cheap POST that changes the demo


@pytest.fixture
def api(stores):
    """Factory: api(token=..., limit=...) -> an httpx client to the API (no detector engine) on one store."""
    st = stores("a")
    refs = [StoreRef("a", *st["a"][0].credentials("detector"))]
    with contextlib.ExitStack() as stack:
        yield lambda token=None, limit=RateLimit(): stack.enter_context(
            serving(create_app(refs, engine=False, api_token=token, rate_limit=limit))
        )


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


# --- the token ------------------------------------------------------------------------------------


def test_with_a_token_every_post_needs_it(api):
    http = api(token=TOKEN)
    path, body = CONTROL
    for headers in (
        {},
        bearer("wrong"),
        bearer(TOKEN + "x"),
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ):
        r = http.post(path, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert "API token" in r.json()["detail"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = http.post(path, json=body, headers=bearer(TOKEN))
    assert r.status_code == 200 and r.json() == {"running": True}
    r = http.post(path, json=body, headers={"authorization": f"bearer {TOKEN}"})  # scheme is case-blind
    assert r.status_code == 200


def test_a_refused_post_changes_nothing(api):
    http = api(token=TOKEN)
    assert http.post("/api/hacked-pos", json={"running": False}, headers=bearer(TOKEN)).status_code == 200
    assert http.post("/api/hacked-pos", json={"running": True}).status_code == 401
    assert http.get("/api/hacked-pos").json()["running"] is False


def test_the_token_is_checked_before_the_body(api):
    """Without the token nothing about the request is revealed: bad bodies get 401 too, not 422."""
    http = api(token=TOKEN)
    assert http.post("/api/hacked-pos", json={"nonsense": 1}).status_code == 401
    assert http.post("/api/hacked-pos", json={"nonsense": 1}, headers=bearer(TOKEN)).status_code == 422


def test_reads_stay_open_with_a_token(api):
    http = api(token=TOKEN)
    for path in ("/api/stores", "/api/status", "/api/catalogue", "/api/hacked-pos", "/healthz", "/openapi.json"):
        assert http.get(path).status_code == 200, path


def test_without_a_token_posts_are_open(api):
    http = api(token=None)
    assert http.post(*CONTROL[:1], json=CONTROL[1]).status_code == 200


def test_the_openapi_documents_401_and_429_on_every_post(api):
    spec = api(token=TOKEN).get("/openapi.json").json()
    posts = [(p, ops["post"]) for p, ops in spec["paths"].items() if "post" in ops]
    assert len(posts) >= 6
    for path, op in posts:
        assert {"401", "429", "413"} <= set(op["responses"]), path
        assert op["security"] == [{"apiToken": []}], path
    assert spec["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": access.BEARER.model.description,
    }
    gets = [op["get"] for op in spec["paths"].values() if "get" in op]
    assert gets and not any("security" in op for op in gets)


def test_without_a_token_the_openapi_declares_no_security(api):
    spec = api(token=None).get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})
    assert not any("security" in op for ops in spec["paths"].values() for op in ops.values())


def secret_volume(tmp_path, token: str, version: int):
    """Write `token` the way kubelet updates a mounted Secret: a new directory, then the `..data`
    symlink swapped atomically; `password` is a symlink through it."""
    d = tmp_path / f"..v{version}"
    d.mkdir()
    (d / "password").write_text(token)
    tmp_link = tmp_path / "..data_tmp"
    tmp_link.symlink_to(d.name)
    os.replace(tmp_link, tmp_path / "..data")
    if not (tmp_path / "password").is_symlink():
        (tmp_path / "password").symlink_to("..data/password")
    return tmp_path / "password"


def test_a_token_file_is_followed_without_a_restart(stores, tmp_path):
    """The operator's Secret recreated or edited: the detector takes the new token, and only it."""
    path = secret_volume(tmp_path, "first", 1)
    st = stores("a")
    refs = [StoreRef("a", *st["a"][0].credentials("detector"))]
    with serving(create_app(refs, engine=False, api_token=TokenFile(str(path)))) as http:
        path_, body = CONTROL
        assert http.post(path_, json=body, headers=bearer("first")).status_code == 200
        secret_volume(tmp_path, "second", 2)
        assert http.post(path_, json=body, headers=bearer("first")).status_code == 401
        assert http.post(path_, json=body, headers=bearer("second")).status_code == 200
        (tmp_path / "..v2" / "password").write_text("")  # emptied later: the last good token stays
        assert http.post(path_, json=body, headers=bearer("second")).status_code == 200


def test_api_token_from_env_follows_the_file_or_takes_the_value(tmp_path):
    f = tmp_path / "token"
    f.write_text("abc\n")
    source = api_token_from_env({access.TOKEN_FILE_ENV: str(f)})
    assert isinstance(source, TokenFile) and source() == "abc"
    assert api_token_from_env({access.TOKEN_ENV: "xyz"}) == "xyz"
    assert api_token_from_env({}) is None
    with pytest.raises(AccessError, match="cannot read the API token file"):
        TokenFile(str(tmp_path / "missing"))


# --- the rate limit --------------------------------------------------------------------------------


def test_rate_limit_gives_429_with_retry_after_and_a_reason(api):
    http = api(limit=RateLimit(rate=0.2, burst=3))
    path, body = CONTROL
    assert [http.post(path, json=body).status_code for _ in range(3)] == [200, 200, 200]
    r = http.post(path, json=body)
    assert r.status_code == 429
    assert "too many POSTs" in r.json()["detail"] and "0.2 per second" in r.json()["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 5
    # reads are not limited
    assert all(http.get("/api/hacked-pos").status_code == 200 for _ in range(10))


def test_rate_limit_counts_requests_without_the_token_too(api):
    """The limit runs before the token check, so guessing tokens is limited as well."""
    http = api(token=TOKEN, limit=RateLimit(rate=0.2, burst=2))
    path, body = CONTROL
    assert [http.post(path, json=body).status_code for _ in range(2)] == [401, 401]
    assert http.post(path, json=body, headers=bearer(TOKEN)).status_code == 429


def test_rate_zero_turns_the_limit_off(api):
    http = api(limit=RateLimit(rate=0, burst=1))
    assert {http.post(CONTROL[0], json=CONTROL[1]).status_code for _ in range(20)} == {200}


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_buckets_refill_at_the_rate_per_client():
    clock = Clock()
    b = Buckets(RateLimit(rate=2, burst=2), clock)
    assert b.take("x") == 0 and b.take("x") == 0
    assert b.take("x") == pytest.approx(0.5)
    assert b.take("y") == 0  # another client has its own bucket
    clock.t += 0.5
    assert b.take("x") == 0
    clock.t += 100  # never more than a burst saved up
    assert [b.take("x") for _ in range(3)][-1] > 0


def test_buckets_stay_bounded_under_many_clients():
    b = Buckets(RateLimit(rate=1, burst=5), Clock())
    for i in range(Buckets.MAX_CLIENTS + 10):
        b.take(f"10.0.{i // 256}.{i % 256}")
    assert len(b._b) <= Buckets.MAX_CLIENTS


# --- the settings ----------------------------------------------------------------------------------


def test_token_from_file_is_preferred_and_stripped(tmp_path):
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert token_from_env({access.TOKEN_FILE_ENV: str(f), access.TOKEN_ENV: "other"}) == TOKEN
    assert token_from_env({access.TOKEN_ENV: "other"}) == "other"
    assert token_from_env({access.TOKEN_ENV: ""}) is None
    assert token_from_env({}) is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({access.TOKEN_FILE_ENV: "/nonexistent/token"}, "cannot read the API token file /nonexistent/token"),
        ({access.TOKEN_FILE_ENV: "EMPTY"}, "is empty"),
        ({access.TOKEN_FILE_ENV: "DIR"}, "cannot read the API token file"),
    ],
)
def test_bad_token_settings_are_clear_errors(tmp_path, env, message):
    (tmp_path / "empty").write_text("  \n")
    path = {"EMPTY": str(tmp_path / "empty"), "DIR": str(tmp_path)}.get(
        env[access.TOKEN_FILE_ENV], env[access.TOKEN_FILE_ENV]
    )
    with pytest.raises(AccessError, match=message):
        token_from_env({access.TOKEN_FILE_ENV: path})


@pytest.mark.parametrize(
    "rate, burst, message",
    [
        ("fast", None, "must be a number"),
        (None, "1.5", "an integer"),
        ("-1", None, ">= 0"),
        ("nan", None, ">= 0"),
        ("inf", None, ">= 0"),
        (None, "0", ">= 1"),
    ],
)
def test_bad_rate_settings_are_clear_errors(rate, burst, message):
    env = {k: v for k, v in ((access.RATE_ENV, rate), (access.BURST_ENV, burst)) if v is not None}
    with pytest.raises(AccessError, match=message):
        RateLimit.from_env(env)


def test_rate_settings_from_env():
    assert RateLimit.from_env({}) == RateLimit()
    assert RateLimit.from_env({access.RATE_ENV: "2.5", access.BURST_ENV: "7"}) == RateLimit(2.5, 7)


def test_the_detector_refuses_to_start_on_bad_access_settings(tmp_path):
    env = {**os.environ, access.RATE_ENV: "lots", access.TOKEN_FILE_ENV: ""}
    r = subprocess.run(
        [sys.executable, "-m", "frauddemo", "detector", "--store", "a=redis://127.0.0.1:1", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "FRAUDDEMO_API_POST_RATE must be a number" in r.stderr, r.stderr
    env = {**os.environ, access.TOKEN_FILE_ENV: str(tmp_path / "missing")}
    r = subprocess.run(
        [sys.executable, "-m", "frauddemo", "detector", "--store", "a=redis://127.0.0.1:1", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "cannot read the API token file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
