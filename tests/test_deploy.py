"""`manage.py check --deploy` is clean with the production settings documented in .env.example."""

import subprocess
import sys

from tests.processes import ROOT

PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "poolsite.settings",
    "POOL_IGNORE_DOTENV": "1",
    "DEBUG": "0",
    "SECRET_KEY": "x7#kq!production-like-secret-key-of-fifty-or-more-characters-9f2c1a",
    "POOL_ENCRYPTION_KEY": "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZyEhISE=",
    "ALLOWED_HOSTS": "pool.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://pool.example.com",
    "BEHIND_TLS_PROXY": "1",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_COOKIES": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_PRELOAD": "1",
}


def test_check_deploy_is_clean_with_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **PRODUCTION},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_refuses_a_missing_encryption_key():
    env = {"PATH": "/usr/bin:/bin", **PRODUCTION, "POOL_ENCRYPTION_KEY": ""}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "accounts.E001" in result.stderr


def test_make_run_checks_the_pool_keys_before_it_serves():
    """`make run` refuses to start when no stored row opens (manage.py check_pool_keys exits 1)."""
    run = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    steps = [line.strip() for line in run.splitlines()[1:]]
    check = next(n for n, step in enumerate(steps) if "manage.py check_pool_keys" in step)
    assert check < next(n for n, step in enumerate(steps) if "scripts/serve.py" in step)
