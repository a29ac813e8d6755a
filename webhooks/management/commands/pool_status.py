import json

from django.core.management.base import BaseCommand

from accounts.selectors import account_pool_summary
from webhooks.selectors import team_counts_in_manager


class Command(BaseCommand):
    help = (
        "Print the pool's counts by state and, for the accounts it imported, their Teams' status in "
        "the manager as of the last follow-up round; as text, or as JSON with --json."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print one JSON object"
        )

    def handle(self, *args, as_json: bool = False, **options):
        summary = {**account_pool_summary(), "in_manager": team_counts_in_manager()}
        if as_json:
            self.stdout.write(json.dumps(summary, ensure_ascii=False))
            return
        for state, count in summary["counts"].items():
            self.stdout.write(f"{state:>13}  {count}")
        self.stdout.write(f"usable available: {summary['available_usable']}")
        self.stdout.write(f"flagged unusable: {summary['available_flagged_unusable']}")
        self.stdout.write("imported Teams in the manager:")
        for state, count in summary["in_manager"].items():
            self.stdout.write(f"{state:>13}  {count}")
