"""The dashboard's files as shipped: local assets only, no inline script or style, no HTML from data,
served with the security headers."""

import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

from fastapi.testclient import TestClient

from frauddemo.config import StoreRef
from frauddemo.web.app import STATIC, create_app

JS = (STATIC / "app.js").read_text()
CSS = (STATIC / "app.css").read_text()
HTML = (STATIC / "index.html").read_text()


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags() -> list[tuple[str, dict]]:
    p = Tags()
    p.feed(HTML)
    return p.tags


def test_every_asset_is_local_and_exists():
    refs = [a.get("src") or a.get("href") for t, a in tags() if t in ("script", "link", "img")]
    assert refs, "the page loads its assets"
    for ref in refs:
        assert ref.startswith("/static/"), ref
        assert (STATIC / ref.removeprefix("/static/")).is_file(), ref
    for text in (HTML, JS, CSS):  # no other host, no protocol-relative URL, no @import
        assert not re.search(r"(?i)\b(https?:|wss?:)//|[\"'(]//[a-z]|@import", text)


def test_no_inline_script_or_style():
    for tag, attrs in tags():
        assert tag != "style"
        assert "style" not in attrs, f"<{tag}> has a style attribute"
        assert not any(k.startswith("on") for k in attrs), f"<{tag}> has an event handler attribute"
        if tag == "script":
            assert attrs.get("src"), "every script is a file"
    assert re.findall(r"<script[^>]*>(.*?)</script>", HTML, re.S) == [""]


def test_data_is_never_parsed_as_html():
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setAttribute('on",
        "javascript:",
    ):
        assert sink not in JS, sink
    # attributes set from code have fixed names (el()'s `attrs` keys), never an event handler or a style
    names = re.findall(r"setAttribute\(([^,]+),", JS)
    assert names and all(n == "k" or re.fullmatch(r"'[a-z-]+'", n) for n in names), names
    keys = [k for obj in re.findall(r"attrs: \{([^}]*)\}", JS) for k in re.findall(r"([\w'-]+):", obj)]
    assert keys and not [k for k in keys if k.strip("'").startswith(("on", "style", "href", "src"))], keys


def test_the_page_is_served_with_the_security_headers():
    app = create_app([StoreRef("a", "redis://127.0.0.1:1/0", None)], engine=False)
    with TestClient(app) as client:
        for path in ("/", "/static/app.js", "/static/app.css"):
            r = client.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
        assert (
            client.get("/static/app.js")
            .headers["content-type"]
            .startswith(("text/javascript", "application/javascript"))
        )


def test_the_package_ships_the_page():
    """The wheel (and so the image) carries static/*, where every file of the page is: nothing to build."""
    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert "*" in pyproject["tool"]["setuptools"]["package-data"]["frauddemo.static"]  # tests/test_wheel.py builds it
    assert {p.name for p in Path(STATIC).iterdir()} == {"index.html", "app.js", "app.css", "favicon.svg"}
