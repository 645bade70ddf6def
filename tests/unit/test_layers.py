"""One way down (issue 18): only a service's store.py touches the database; `make lint` bans PyMongo imports
elsewhere (ruff TID251), and this test catches what an import ban cannot see — a route or use case reaching the
database through the runtime or the unit of work (`rt.db`, `unit.find_one(...)`, `unit.write(...)`)."""

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).parents[2] / "services"
# The unit's database-facing methods: a store calls them, nothing else in a service does.
STORE_ONLY = {"db", "session", "find_one", "find", "write", "preload", "replace", "update", "append", "flush"}


def _reaches_the_database(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in STORE_ONLY
            and isinstance(node.value, ast.Name)
            and node.value.id in {"rt", "unit", "runtime"}
        ):
            found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize(
    "path",
    sorted(p for p in SERVICES.rglob("*.py") if p.name != "store.py"),
    ids=lambda p: str(p.relative_to(SERVICES)),
)
def test_only_the_store_reaches_the_database(path: Path) -> None:
    assert _reaches_the_database(path) == []


def test_the_check_sees_a_route_that_reaches_the_database(tmp_path: Path) -> None:
    route = tmp_path / "api.py"
    route.write_text("async def f(rt, unit):\n    await rt.db.things.find_one({})\n    unit.write('x')\n")
    assert sorted(line.split(": ")[1] for line in _reaches_the_database(route)) == ["rt.db", "unit.write"]
