"""`manage.py create_api_token USER [--expires-days N]`: a new API token, printed once."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apitokens.services import api_token_create


class Command(BaseCommand):
    help = (
        "Create an API token for USER and print it once (only a hash is stored: it cannot be shown "
        "again). Send it as `Authorization: Token <key>`."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--expires-days",
            type=float,
            default=None,
            help="Days until the token stops working (default: never).",
        )

    def handle(self, *args, username, expires_days, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be more than 0.")
        expires_in = timedelta(days=expires_days) if expires_days is not None else None
        token, key = api_token_create(user=user, expires_in=expires_in)
        self.stdout.write(key)
        until = f"until {token.expiry:%Y-%m-%d %H:%M %Z}" if token.expiry else "without expiry"
        self.stderr.write(f"Token for {username}, valid {until}. Shown only now: store it safely.")
