"""Handing work to the background worker (`manage.py db_worker`, django-tasks-db) by task name.

Each app's tasks module is thin: each task calls a service. The services hand work to the tasks
through here, by the task's dotted path, so imports go one way, tasks → services, and neither
module is ever imported half-loaded by the other. The task is looked up when it is queued, after
every module is loaded (the services queue on commit).
"""

from __future__ import annotations

from datetime import datetime

from django.utils.module_loading import import_string


def task_enqueue(*, path: str, run_after: datetime | None = None, **kwargs):
    """Queue the task at `path` with these keyword arguments, not to start before `run_after`."""
    task = import_string(path)
    if run_after is not None:
        task = task.using(run_after=run_after)
    return task.enqueue(**kwargs)
