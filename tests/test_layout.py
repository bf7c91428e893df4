"""The house rules of the package layout, checked on the source: one domain API, one way imports run.

`Town` is the only door to the store and the runtime: nothing outside `town/` (and the composition root that
builds it) may read a store or call a container runtime, and only `runtime/` knows the engine is Docker.
The package has no import cycles, counting every import (module level, inside functions, type-only).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gastown_mcp"

STORE_ACCESS = re.compile(r"gastown_mcp\.store\b|\bStore\(|\._store\b|\.store\.|\._fleet\b|\bFleet\(")
DOCKER = re.compile(r"^\s*(import docker|from docker)\b|DockerRuntime|docker_backend|docker_errors", re.M)
RUNTIME_CALL = re.compile(
    r"\bruntime\.(launch|stop|status|logs|wait|list|remove|ensure_network|remove_network|cleanup|reap_expired)\("
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _offenders(pattern: re.Pattern[str], allowed: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = _rel(path)
        if rel.startswith(allowed):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    return found


def test_nothing_outside_the_town_package_reads_the_store() -> None:
    assert _offenders(STORE_ACCESS, ("town/", "store/", "assemble.py")) == []


def test_only_the_town_package_works_on_rigs_and_agent_repositories() -> None:
    rigs = re.compile(r"gastown_mcp\.rigs\b|from gastown_mcp import (\w+, )*rigs\b")
    assert _offenders(rigs, ("town/", "rigs.py")) == []
    disks = re.compile(r"gastown_mcp\.disks\b|from gastown_mcp import (\w+, )*disks\b")
    assert _offenders(disks, ("town/", "disks.py")) == []


def test_nothing_outside_the_town_package_drives_the_container_runtime() -> None:
    # The composition root makes the town network before the town exists: agents' URLs depend on it.
    assert _offenders(RUNTIME_CALL, ("town/", "runtime/", "assemble.py")) == []


def test_only_the_runtime_package_knows_the_engine_is_docker() -> None:
    assert _offenders(DOCKER, ("runtime/",)) == []


def test_the_layout_rules_catch_what_they_are_for() -> None:
    assert STORE_ACCESS.search("agent = town.store.agents.get(name)")
    assert STORE_ACCESS.search("from gastown_mcp.store import Store")
    assert STORE_ACCESS.search("town._fleet.runtime = engine")
    assert RUNTIME_CALL.search("self.runtime.stop(town, agent)")
    assert DOCKER.search("from gastown_mcp.runtime.docker_backend import DockerRuntime")
    assert not STORE_ACCESS.search("town.bead_show(op, bead_id)")


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every gastown_mcp module `name` imports, wherever the import statement sits."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], dict.fromkeys(graph, 0), []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert _cycles(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected
