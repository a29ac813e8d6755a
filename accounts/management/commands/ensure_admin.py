import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the first admin user if there is none. Uses DJANGO_SUPERUSER_USERNAME / "
        "DJANGO_SUPERUSER_PASSWORD (and _EMAIL) when set; otherwise creates `admin` with a random "
        "password printed once."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "Log in with your existing admin user (manage.py changepassword resets it)."
            )
            return
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
        given = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        User.objects.create_superuser(
            username=username, email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password=password
        )
        if given:
            self.stdout.write(
                f"Created admin user {username!r} with the password from DJANGO_SUPERUSER_PASSWORD."
            )
        else:
            self.stdout.write(
                f"Created admin user {username!r} with password {password} — shown this once; "
                "change it after logging in."
            )
