from django.core.management.base import BaseCommand, CommandError

from webhooks import follow_up


class Command(BaseCommand):
    help = (
        "Ask the manager once about every Team this pool imported (GET /admin/teams/{id}/info), at "
        "most FOLLOW_UP_RATE a second, and record each one's status; pool_status --json then "
        "counts them under in_manager."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--rate",
            type=float,
            default=None,
            help="requests a second (default FOLLOW_UP_RATE; 0: no limit)",
        )

    def handle(self, *args, rate, **options):
        round_ = follow_up.team_round_queue(enqueue=False)  # this command carries it out itself
        if round_ is None:
            raise CommandError(
                "A follow-up round is already queued or running; try again when it has finished."
            )
        result = follow_up.team_round_run(round_id=round_.pk, seconds=None, rate=rate)
        if result is None:
            raise CommandError("A worker took this round first; it is running there.")
        self.stdout.write(
            f"Teams asked {result.asked}, status changes {result.changed}, without a usable answer {result.unanswered}"
        )
        if result.stopped:
            raise CommandError(result.stopped)
