"""First-run set-up of `.env`: generate the secrets that are missing or empty, never overwrite one.

Run by `make run` before anything else touches Django, so a fresh clone starts with nothing to edit,
and so does a `.env` copied from `.env.example` (whose secrets are empty lines: filled in place).
`.env` holds the pool's key, so it is written readable by its owner only (mode 0600).
Usage: `python scripts/init_env.py [PATH]` (default: `.env` beside manage.py).
"""

import base64
import os
import re
import secrets
import sys
from pathlib import Path

ENV_FILE = Path(__file__).resolve().parent.parent / ".env"


def _generate(name: str) -> str:
    if name == "SECRET_KEY":
        return secrets.token_urlsafe(50)
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _set_value(name: str, text: str) -> bool:
    """Whether `name` has a value: in the environment, or on a `NAME=value` line of the file."""
    if os.environ.get(name):
        return True
    pattern = re.compile(rf"^\s*(?:export\s+)?{name}\s*=\s*(.*?)\s*$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match and match.group(1).strip("'\""):
            return True
    return False


def fill(text: str, name: str) -> str:
    """`text` with `name` given a fresh value: an empty `NAME=` line is filled in place, else one is added."""
    value = _generate(name)
    empty = re.compile(rf"^(\s*(?:export\s+)?{name}\s*=)\s*(?:''|\"\")?\s*$", re.MULTILINE)
    if empty.search(text):
        return empty.sub(lambda m: m.group(1) + value, text, count=1)
    if text and not text.endswith("\n"):
        text += "\n"
    return text + f"{name}={value}\n"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` so that no other user can read it, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file copied from .env.example already existed with the umask's mode
    with os.fdopen(fd, "w") as out:
        out.write(text)


def main(argv: list[str]) -> int:
    env_file = Path(argv[0]) if argv else ENV_FILE
    text = env_file.read_text() if env_file.exists() else ""
    added = [name for name in ("SECRET_KEY", "POOL_ENCRYPTION_KEY") if not _set_value(name, text)]
    for name in added:
        text = fill(text, name)
    if added:
        write_private(env_file, text)
        print(f"Generated {', '.join(added)} into {env_file}.")
    elif env_file.exists() and env_file.stat().st_mode & 0o077:
        env_file.chmod(0o600)
    if "POOL_ENCRYPTION_KEY" in added:
        print(
            "WARNING: POOL_ENCRYPTION_KEY encrypts every token in the pool. Back up .env now: "
            "without this key the stored accounts cannot be read by anyone, including you.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
