from django.core.management.base import BaseCommand

from accounts.services import account_rotate_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored token (and recompute every lookup hash) with the newest key in "
        "POOL_ENCRYPTION_KEY. Put the new key first, keep the old ones after it, run this, then "
        "remove the old keys. Safe to re-run; rows already on the newest key are skipped."
    )

    def handle(self, *args, **options):
        result = account_rotate_keys()
        self.stdout.write(
            f"Re-encrypted {result.rewritten} of {result.examined} accounts "
            f"and {result.others_rewritten} other encrypted rows with key {result.key_id}."
        )
