from django.core.management.base import BaseCommand

from accounts.selectors import account_key_census
from accounts.services import account_rotate_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored token (and recompute every lookup hash) with the newest key in "
        "POOL_ENCRYPTION_KEY. Put the new key first, keep the old ones after it, restart every "
        "process with that key list, run this, check with --check, then remove the old keys. Safe "
        "to re-run; rows already on the newest key are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check",
            action="store_true",
            help="Change nothing: print the rows under each key id, and exit 1 while any remain "
            "under a key other than the newest.",
        )

    def handle(self, *args, **options):
        if options["check"]:
            return self._check()
        result = account_rotate_keys()
        self.stdout.write(
            f"Re-encrypted {result.rewritten} of {result.examined} accounts "
            f"and {result.others_rewritten} other encrypted rows with key {result.key_id}."
        )
        if result.unopenable:
            self.stderr.write(
                f"{result.unopenable} rows were left as they are: no configured key opens them "
                "(see --check for their key ids)."
            )

    def _check(self):
        census = account_key_census()
        for c in census:
            state = (
                "newest" if c.newest else "older, configured" if c.configured else "NOT CONFIGURED"
            )
            self.stdout.write(f"{c.table} under key id {c.key_id} ({state}): {c.rows}")
        behind = sum(c.rows for c in census if not c.newest)
        if behind:
            self.stderr.write(f"Rows still under a key other than the newest: {behind}.")
            raise SystemExit(1)
        self.stdout.write("Every encrypted row is under the newest key.")
