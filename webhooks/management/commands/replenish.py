import time

from django.core.management.base import BaseCommand, CommandError

from webhooks import services
from webhooks.models import ACTIVE_RUN_STATUSES, RunTrigger


class Command(BaseCommand):
    help = "Push N accounts to the manager now, through the same run as a webhook, and print what came of it."

    def add_arguments(self, parser):
        parser.add_argument("--accounts", type=int, required=True, help="how many accounts to push")
        parser.add_argument(
            "--wait", type=float, default=600, help="seconds to wait for the run (default 600)"
        )

    def handle(self, *args, accounts, wait, **options):
        if accounts < 1:
            raise CommandError("--accounts must be at least 1.")
        run = services.run_wake(trigger=RunTrigger.MANUAL, requested_accounts=accounts)
        if run is None:
            raise CommandError("Could not queue a run; try again.")
        # Run it here; if a worker (or a run already in flight) got to it first, wait for it.
        services.run_execute(run_id=run.pk)
        deadline = time.monotonic() + wait
        while True:
            run.refresh_from_db()
            if run.status not in ACTIVE_RUN_STATUSES or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.stdout.write(
            f"run #{run.pk} {run.status}: reserved {run.reserved}, consumed {run.consumed}, "
            f"rejected {run.rejected}, unknown {run.unknown}, returned {run.returned}"
            + (f" — {run.error}" if run.error else "")
        )
        if run.status in ACTIVE_RUN_STATUSES:
            raise CommandError(f"Run #{run.pk} has not finished yet; see the admin's run history.")
