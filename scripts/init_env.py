"""First-run set-up of `.env`: generate the secrets that are missing, never overwrite one.

Run by `make run` before anything else touches Django, so a fresh clone starts with nothing to edit.
"""

import base64
import os
import secrets
import sys
from pathlib import Path

ENV_FILE = Path(__file__).resolve().parent.parent / ".env"


def _present(name: str, text: str) -> bool:
    if os.environ.get(name):
        return True
    return any(line.strip().startswith(f"{name}=") for line in text.splitlines())


def main() -> int:
    text = ENV_FILE.read_text() if ENV_FILE.exists() else ""
    added = []
    if not _present("SECRET_KEY", text):
        added.append(f"SECRET_KEY={secrets.token_urlsafe(50)}")
    new_pool_key = not _present("POOL_ENCRYPTION_KEY", text)
    if new_pool_key:
        added.append(f"POOL_ENCRYPTION_KEY={base64.urlsafe_b64encode(os.urandom(32)).decode()}")
    if not added:
        return 0
    if text and not text.endswith("\n"):
        text += "\n"
    ENV_FILE.write_text(text + "\n".join(added) + "\n")
    ENV_FILE.chmod(0o600)
    print(f"Generated {', '.join(a.split('=')[0] for a in added)} into {ENV_FILE}.")
    if new_pool_key:
        print(
            "WARNING: POOL_ENCRYPTION_KEY encrypts every token in the pool. Back up .env now: "
            "without this key the stored accounts cannot be read by anyone, including you.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
