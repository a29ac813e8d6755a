"""The upload's work is handed to the worker by task name (poolsite/queueing.py): the name is the
task's own, and the pool's services never import the task module, which imports them."""

from pathlib import Path

import pytest

from accounts import tasks
from accounts.services import batches
from tests.support.imports import imported_modules

SERVICES = Path(batches.__file__).parent


def test_the_name_queued_is_the_task_path():
    assert batches.BATCH_PROCESS == tasks.batch_process.module_path


@pytest.mark.parametrize("path", sorted(SERVICES.glob("*.py")), ids=lambda path: path.name)
def test_the_services_never_import_the_task_module(path):
    imported = imported_modules(path)
    assert not {"accounts.tasks", "accounts.tasks.batch_process"} & imported
