import time

from django.core.management.base import BaseCommand
from django.utils import timezone

from accounts.services import account_batch_fail_abandoned
from webhooks import services


class Command(BaseCommand):
    help = (
        "Recover what a dead worker left behind: abandon runs whose lease expired, return their "
        "reserved accounts to the pool (outcome unknown, re-sent at once), fail task rows stuck "
        "as running, wake a run for unknown outcomes that are due, and give a worker any queued run or "
        "waiting event that no live run will take. --every N repeats it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--every", type=float, default=0, help="repeat every N seconds until stopped"
        )

    def handle(self, *args, every, **options):
        while True:
            result = services.reconcile(now=timezone.now())
            loads_failed = account_batch_fail_abandoned(now=timezone.now())
            if result.changed or loads_failed or not every:
                self.stdout.write(
                    f"runs abandoned {result.runs_abandoned}, accounts recovered {result.accounts_recovered}, "
                    f"stale tasks failed {result.tasks_failed}, retry run queued {'yes' if result.retry_queued else 'no'}, "
                    f"queued run handed to a worker {'yes' if result.queued_run_handed else 'no'}, "
                    f"run woken for waiting events {'yes' if result.events_woken else 'no'}, "
                    f"follow-up round queued {'yes' if result.follow_up_queued else 'no'}, "
                    f"abandoned loads failed {loads_failed}"
                )
            if not every:
                return
            time.sleep(every)
