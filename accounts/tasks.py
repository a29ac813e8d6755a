"""Background work of the pool, run by `manage.py db_worker` (django-tasks-db). Thin: the logic is
in services."""

from django_tasks import task

from accounts import services


@task()
def batch_process(batch_id: int) -> None:
    """Read a staged upload (the preview) and/or save it, with its progress on the batch."""
    services.account_batch_process(batch_id=batch_id)
