"""Driving replenishment runs in-process: an event as the webhook records it, a run carried out now."""

from webhooks import services
from webhooks.models import ReplenishmentRun, RunStatus, RunTrigger, WebhookEvent


def event(current_seats=5, threshold=10):
    accepted = services.event_receive(
        current_seats=current_seats, threshold=threshold, message="", payload="{}", remote_addr=None
    )
    return WebhookEvent.objects.get(pk=accepted.pk)


def run_now(trigger=RunTrigger.WEBHOOK, **kwargs):
    """Carry out the queued run (waking one first if none is queued), as a worker would."""
    run = ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).first() or services.run_wake(
        trigger=trigger, **kwargs
    )
    return services.run_execute(run_id=run.pk)


class ClientHook:
    """The real manager client, with something done just before each call (once per call)."""

    def __init__(self, client, before_call):
        self.client, self.before_call = client, before_call
        self.calls = 0

    def import_single(self, account):
        self.calls += 1
        self.before_call(self.calls)
        return self.client.import_single(account)

    def import_batch(self, accounts):
        self.calls += 1
        self.before_call(self.calls)
        return self.client.import_batch(accounts)

    def close(self):
        self.client.close()
