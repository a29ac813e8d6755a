"""`manage.py check --deploy` is clean with the production settings documented in .env.example."""

import base64
import shutil
import subprocess
import sys

from tests.support.processes import ROOT

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
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "accounts.E001" in result.stderr


# --- First run: scripts/init_env.py, run by `make run` -----------------------------------------


def _dotenv(path):
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def test_a_copy_of_env_example_gets_its_empty_secrets_generated_and_is_private(tmp_path):
    """.env.example's first line says to copy it to .env; `make run` must then fill the empty
    SECRET_KEY and POOL_ENCRYPTION_KEY (not take the empty lines for set ones) and keep .env 0600."""
    # A copy of the script in a scratch checkout: it writes the .env beside its own scripts/.
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "init_env.py", tmp_path / "scripts" / "init_env.py")
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    env_file.chmod(0o644)
    clean = {"PATH": "/usr/bin:/bin"}

    first = subprocess.run(
        [sys.executable, "scripts/init_env.py"],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    values = _dotenv(env_file)
    assert len(values["SECRET_KEY"]) >= 50
    assert len(base64.urlsafe_b64decode(values["POOL_ENCRYPTION_KEY"])) == 32
    assert env_file.stat().st_mode & 0o777 == 0o600
    # Filled in place: each name once, every other line of the example kept.
    text = env_file.read_text()
    assert text.count("SECRET_KEY=") == 1 and text.count("\nPOOL_ENCRYPTION_KEY=") == 1
    assert "MANAGER_BASE_URL=" in text

    # A second run (the next `make run`) keeps the keys: the pool stays readable.
    subprocess.run([sys.executable, "scripts/init_env.py"], cwd=tmp_path, env=clean, check=True)
    assert _dotenv(env_file) == values

    # The settings start with the generated file (here through the environment, as .env is read).
    check = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={
            **clean,
            **values,
            "POOL_IGNORE_DOTENV": "1",
            "DJANGO_SETTINGS_MODULE": "poolsite.settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_make_run_checks_the_pool_keys_before_it_serves():
    """`make run` refuses to start when no stored row opens (manage.py check_pool_keys exits 1)."""
    run = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    steps = [line.strip() for line in run.splitlines()[1:]]
    check = next(n for n, step in enumerate(steps) if "manage.py check_pool_keys" in step)
    assert check < next(n for n, step in enumerate(steps) if "scripts/serve.py" in step)
