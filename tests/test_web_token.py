"""The dashboard against a service that has an API token (as in Kubernetes), in a real browser
(Playwright driving Debian's Chromium, as tests/test_web_browser.py): a control asks for the token on
its first 401, sends it from then on, asks again after a wrong one, and reads stay open."""

import pytest
import test_web_browser as web
from test_web_browser import SOON, live

from conftest import serving
from frauddemo.access import RateLimit
from frauddemo.config import StoreRef
from frauddemo.web.app import create_app

TOKEN = "k8s-generated-token"
browser = web.browser  # the same Chromium fixture


@pytest.fixture
def site(stores, links):
    st = stores("a", "b")
    links.mesh([srv for srv, _ in st.values()])
    refs = [StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()]
    app = create_app(refs, engine=False, api_token=TOKEN, rate_limit=RateLimit(rate=0))
    with serving(app) as http:
        yield http


def hacked_running(http) -> bool:
    return http.get("/api/hacked-pos").json()["running"]


def test_a_control_asks_for_the_token_once_and_then_sends_it(site, browser):
    answers, asked = [TOKEN], []

    def on_dialog(d):
        asked.append(d.message)
        d.accept(answers.pop(0)) if answers else d.dismiss()

    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = ctx.new_page()
        page.on("dialog", on_dialog)
        page.goto(str(site.base_url))
        live(page)  # reads need no token
        btn = page.locator("#btn-hacked")
        page.wait_for_function("() => /running|stopped/.test(document.getElementById('btn-hacked').textContent)")
        before = hacked_running(site)
        btn.click()
        page.wait_for_function(
            "v => document.getElementById('btn-hacked').getAttribute('aria-pressed') === v",
            arg=str(not before).lower(),
            timeout=SOON,
        )
        assert hacked_running(site) is (not before)
        assert len(asked) == 1 and "API token" in asked[0]
        btn.click()  # the token is kept: no second question
        page.wait_for_function(
            "v => document.getElementById('btn-hacked').getAttribute('aria-pressed') === v",
            arg=str(before).lower(),
            timeout=SOON,
        )
        assert len(asked) == 1 and hacked_running(site) is before

        # a wrong token is forgotten; a dismissed question leaves the control refused, with the reason
        page.evaluate("() => sessionStorage.setItem('frauddemo-api-token', 'wrong')")
        btn.click()
        page.wait_for_function(
            "() => /API token/.test(document.getElementById('reset-result').textContent)", timeout=SOON
        )
        assert len(asked) == 2 and hacked_running(site) is before
        assert page.evaluate("() => sessionStorage.getItem('frauddemo-api-token')") is None
    finally:
        ctx.close()
