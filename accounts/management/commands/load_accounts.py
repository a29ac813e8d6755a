import io
import os
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.forms import NOT_TEXT_MESSAGES
from accounts.models import BatchSource
from accounts.parser import label_problem
from accounts.services import LoadAborted, account_batch_load, account_load
from accounts.uploads import NotText, upload_check, upload_spooled


class Command(BaseCommand):
    help = (
        "Load spare accounts from FILE (or - for standard input): one account per line, in the "
        "positional `email,AT,RT,ST,client_id` form, the manager's `----`/`|`/tab form, or CSV with "
        "a header. Prints created / duplicate / invalid counts and every line that was not saved. "
        "Exit status 1 if any line was invalid."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="path of a .txt/.csv file, or - for standard input")
        parser.add_argument(
            "--batch", default="", help="label for this batch (default: file name and date)"
        )
        parser.add_argument(
            "--supplier", default="", help="who sold these accounts (compared on the batches page)"
        )
        parser.add_argument(
            "--user", default="", help="username recorded as the one who loaded them"
        )
        parser.add_argument("--dry-run", action="store_true", help="check every line, save nothing")
        parser.add_argument(
            "--strict",
            action="store_true",
            help="save nothing unless every line is valid (all or nothing)",
        )

    def handle(self, *args, file, batch, supplier, user, dry_run, strict, **options):
        for option, value in (("--batch", batch), ("--supplier", supplier)):
            problem = label_problem(value)
            if problem is not None:
                raise CommandError(f"{option}: {problem}")
        loaded_by = None
        if user:
            loaded_by = get_user_model().objects.filter(username=user).first()
            if loaded_by is None:
                raise CommandError(f"No user named {user!r}.")
        # Checked whole before any line is read (accounts.uploads): a NUL or a byte that is not
        # UTF-8 on line 90,000 refuses the file, rather than loading the 89,999 lines before it.
        try:
            if file == "-":
                # A descriptor of its own: the loader's forked helper process closes sys.stdin.
                with open(os.dup(sys.stdin.fileno()), "rb") as given:
                    binary = upload_spooled(stream=given)
                label = batch or f"stdin {timezone.localdate():%Y-%m-%d}"
            else:
                path = Path(file)
                if not path.is_file():
                    raise CommandError(f"No such file: {file}")
                with path.open("rb") as given:
                    upload_check(stream=given)
                binary = path.open("rb")
                label = batch or f"{path.name} {timezone.localdate():%Y-%m-%d}"
        except NotText as problem:
            raise CommandError(f"{file}: {NOT_TEXT_MESSAGES[problem.kind]}") from None
        stream = io.TextIOWrapper(binary, encoding="utf-8-sig")

        def print_line(line):
            # As they come, chunk by chunk in line order: a huge file never piles up in memory.
            self.stdout.write(f"line {line.lineno}: {line.outcome}: " + "; ".join(line.messages))

        aborted = False
        with stream:
            try:
                if dry_run:
                    report = account_load(
                        lines=stream, batch=None, dry_run=True, on_line=print_line
                    )
                else:
                    # Here (never in a web request or the worker) a second process prepares the
                    # chunks while this one writes: the command line's fast path.
                    _, report = account_batch_load(
                        lines=stream,
                        label=label,
                        supplier=supplier.strip(),
                        source=BatchSource.COMMAND,
                        user=loaded_by,
                        filename="" if file == "-" else Path(file).name,
                        strict=strict,
                        on_line=print_line,
                        helper_process=True,
                    )
            except LoadAborted as exc:
                report, aborted = exc.report, True

        verb = "would be created" if dry_run else "created"
        self.stdout.write(
            f"{report.created} {verb}, {report.duplicates} duplicate, {report.invalid} invalid"
            f" ({report.flagged_unusable} flagged unusable) — batch {label!r}"
        )
        if report.failed:
            self.stderr.write(f"{report.failed} not saved: {report.error}")
        if aborted:
            self.stderr.write(str(LoadAborted(report)))
        if report.invalid or report.failed:
            sys.exit(1)
