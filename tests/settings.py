"""Settings for the test suite: poolsite's settings with fixed, test-only secrets.

The project's `.env` is ignored so a developer's local configuration cannot leak into tests;
DATABASE_URL still comes from the environment (CI runs the suite on SQLite and on PostgreSQL).
"""

import os

os.environ["POOL_IGNORE_DOTENV"] = "1"
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production")
# A fixed test key, so subprocesses started by tests can read what the test process wrote.
os.environ.setdefault("POOL_ENCRYPTION_KEY", "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZyEhISE=")
# No periodic follow-up round unless a test asks for one: reconcile would otherwise queue one
# whenever Teams are followed, and its requests would mix with the imports a test counts.
os.environ.setdefault("FOLLOW_UP_EVERY_HOURS", "0")

from poolsite.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Serve static files from the apps directly (no collectstatic before tests; browser tests need them).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# Several test runs side by side (engineers, or a CI matrix) each need their own test database:
# a SQLite file path, or a PostgreSQL database name.
if os.environ.get("POOL_TEST_DB"):
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ["POOL_TEST_DB"]  # noqa: F405
