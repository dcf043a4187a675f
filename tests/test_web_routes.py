"""The web layer's shape (issue 18): one module-level APIRouter per resource under frauddemo.web.routes,
every route tagged `api` and under /api, and no route touching a store's Redis client itself (they go
through the domain: the till, the controls, the scenario, the read model)."""

import ast
import importlib
import pkgutil
from pathlib import Path

from fastapi import APIRouter

from frauddemo.web import routes

RESOURCES = {"stores", "purchases", "returns", "alerts", "photos", "events", "controls"}


def test_one_router_per_resource_and_every_one_is_included():
    names = {m.name for m in pkgutil.iter_modules(routes.__path__)}
    assert names == RESOURCES
    for name in names:
        router = importlib.import_module(f"frauddemo.web.routes.{name}").router
        assert isinstance(router, APIRouter) and router.routes, name
        assert router in routes.ROUTERS, name
        for route in router.routes:
            assert route.path.startswith("/api/") and route.tags == ["api"], (name, route.path)


def test_routes_never_call_redis():
    for path in Path(routes.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "redis" for m in mods), (path.name, node.lineno)
            if isinstance(node, ast.Attribute):
                assert node.attr != "r", f"{path.name}:{node.lineno} reaches a store's Redis client (.r)"
