"""Work handed to the worker by task name (webhooks/queueing.py): the names are the tasks' own, and
the services never import the task module, which imports them (no import cycle)."""

from pathlib import Path

import pytest

from tests.support.imports import imported_modules
from webhooks import queueing, tasks

WEBHOOKS = Path(tasks.__file__).parent


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
