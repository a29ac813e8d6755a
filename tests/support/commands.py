"""Running management commands in-process, as a shell would see them."""

import io
import sys

from django.core.management import call_command


def run_command(*args, stdin: str | None = None, tmp_path=None):
    """Run load_accounts like a shell would: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    if stdin is not None:
        source = tmp_path / "stdin.txt"
        source.write_text(stdin)
        sys.stdin = source.open()
    try:
        call_command("load_accounts", *args, stdout=out, stderr=err)
        status = 0
    except SystemExit as exc:
        status = exc.code
    finally:
        sys.stdin = old_stdin
    return status, out.getvalue(), err.getvalue()
