"""Replenishment: receiving low-stock events, running imports, deciding what each answer means, and
recovering what a dead worker left behind. One module per subject; every public name is here too.

    receiving  events and refused calls in, runs woken (run_wake), staff pushes
    decisions  how many accounts an event asks for, what an answer means (pure)
    sending    one run's reserved accounts sent, each answer settled with its attempt row
    runs       a queued run carried out and closed (run_execute)
    reconcile  leases, runs and tasks a dead worker left, put right (reconcile)

Within the package imports go one way (runs → reconcile → receiving; runs → sending → decisions),
and none of these modules imports the task module: they queue its tasks by name, through
webhooks.queueing, so the tasks import the services and never the other way round.
"""

from webhooks.services.decisions import DELIVERED, Need, attempt_outcome, replenishment_need
from webhooks.services.receiving import (
    MAX_PUSH_ACCOUNTS,
    MSG_PUSH_BUSY,
    REFUSAL_FOLD_WINDOW,
    AcceptedEvent,
    event_receive,
    event_refuse,
    run_wake,
)
from webhooks.services.reconcile import (
    STALE_TASK_AFTER,
    ReconcileResult,
    reconcile,
    run_recover_stale,
)
from webhooks.services.runs import lease_chunk, lease_margin, run_execute
from webhooks.services.sending import (
    MSG_ALREADY_IN_MANAGER,
    MSG_ANSWER_UNRECORDED,
    MSG_CONFIG_ERROR,
    MSG_LEASE_LOST,
    MSG_UNUSABLE_AT_PICK,
    ChunkSender,
    Lease,
)

__all__ = [
    "DELIVERED",
    "MAX_PUSH_ACCOUNTS",
    "MSG_ALREADY_IN_MANAGER",
    "MSG_ANSWER_UNRECORDED",
    "MSG_CONFIG_ERROR",
    "MSG_LEASE_LOST",
    "MSG_PUSH_BUSY",
    "MSG_UNUSABLE_AT_PICK",
    "REFUSAL_FOLD_WINDOW",
    "STALE_TASK_AFTER",
    "AcceptedEvent",
    "ChunkSender",
    "Lease",
    "Need",
    "ReconcileResult",
    "attempt_outcome",
    "event_receive",
    "event_refuse",
    "lease_chunk",
    "lease_margin",
    "reconcile",
    "replenishment_need",
    "run_execute",
    "run_recover_stale",
    "run_wake",
]
