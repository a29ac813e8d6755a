"""Background work, run by `manage.py db_worker` (django-tasks-db). Thin: the logic is in services.

The services queue these by name (webhooks.queueing), so this module imports them and never the
other way round; a task's name is its dotted path, stored in each queued row: keep it.
"""

from django_tasks import task

from webhooks import follow_up as rounds
from webhooks import services
from webhooks.models import RunTrigger


@task()
def replenish(run_id: int) -> None:
    services.run_execute(run_id=run_id)


@task()
def retry_unknown() -> None:
    """Scheduled for when the first retry of an unknown outcome is due."""
    services.run_wake(trigger=RunTrigger.RETRY)


@task()
def follow_up(round_id: int) -> None:
    """One slice of a follow-up round; it queues the next slice itself."""
    rounds.team_round_run(round_id=round_id)
