"""Work handed to the worker by task name (webhooks/queueing.py): the names are the tasks' own, and
the services never import the task module, which imports them (no import cycle)."""

import ast
from pathlib import Path

import pytest

from webhooks import queueing, tasks

WEBHOOKS = Path(tasks.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(
    "name, task",
    [
        (queueing.REPLENISH, tasks.replenish),
        (queueing.RETRY_UNKNOWN, tasks.retry_unknown),
        (queueing.FOLLOW_UP, tasks.follow_up),
    ],
)
def test_each_name_queued_is_its_task_path(name, task):
    assert name == task.module_path


@pytest.mark.parametrize(
    "path",
    [*sorted((WEBHOOKS / "services").glob("*.py")), WEBHOOKS / "follow_up.py"],
    ids=lambda path: path.name,
)
def test_the_services_never_import_the_task_module(path):
    assert "webhooks.tasks" not in imported_modules(path)
