from django.core.management.base import BaseCommand, CommandError

from accounts.selectors import account_key_census, account_key_warnings, account_keys_all_missing

MSG_ALL_MISSING = (
    "Refusing to start: encrypted rows exist in the database ({rows}) and none of them opens with "
    "the configured POOL_ENCRYPTION_KEY (stored under key id {stored}; configured: {configured}). "
    "The .env that sealed them was lost or its key regenerated: put the original key back in "
    "POOL_ENCRYPTION_KEY (from your backup of .env) and run again."
)


class Command(BaseCommand):
    # It reports what the key check (accounts.W001) would, and more: not twice.
    requires_system_checks = []
    help = (
        "Rows per encryption key id. Exits 1 only when encrypted rows exist and none is sealed with "
        "a configured key (a lost or regenerated .env); `make run` runs it before starting."
    )

    def handle(self, *args, **options):
        from accounts import crypto

        census = account_key_census()
        for c in census:
            state = "newest" if c.newest else "configured" if c.configured else "NOT CONFIGURED"
            self.stdout.write(f"{c.table} under key id {c.key_id} ({state}): {c.rows}")
        if account_keys_all_missing(census=census):
            raise CommandError(
                MSG_ALL_MISSING.format(
                    rows=sum(c.rows for c in census),
                    stored=", ".join(sorted({c.key_id for c in census})),
                    configured=", ".join(k.hex() for k in crypto.configured_key_ids()),
                )
            )
        for message in account_key_warnings(census=census):
            self.stderr.write(f"WARNING: {message}")
