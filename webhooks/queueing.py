"""The webhooks app's tasks, by the names the services queue them under (poolsite/queueing.py)."""

from poolsite.queueing import task_enqueue

# The dotted paths django-tasks-db stores in each task row (DBTaskResult.task_path): renaming a
# task leaves rows already queued under the old name, which no worker can run.
REPLENISH = "webhooks.tasks.replenish"
RETRY_UNKNOWN = "webhooks.tasks.retry_unknown"
FOLLOW_UP = "webhooks.tasks.follow_up"

__all__ = ["FOLLOW_UP", "REPLENISH", "RETRY_UNKNOWN", "task_enqueue"]
