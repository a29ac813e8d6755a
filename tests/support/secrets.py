"""Looking for secrets where they must not be: the one search every test uses.

A secret counts as found when any SLICE consecutive characters of it appear. Failures name the
secret and the offset only, never the secret, so a failing test does not leak what it guards.
tests/test_secrets.py searches everything a whole scenario leaves behind with it; the page, API
and export tests assert a response shows none of the secrets of the accounts on it.
"""

from __future__ import annotations

import re

SLICE = 16
TOKEN_FIELDS = ("access_token", "session_token", "refresh_token")


class SecretFinder:
    """Every SLICE-character slice of every secret, and a fast search for them.

    A slice of a secret is made only of characters that occur in the secrets, so it can only sit
    inside a run of such characters at least SLICE long: the search finds those runs with one
    regular expression, then looks up each window of each run in a set.
    """

    def __init__(self, secrets: dict[str, str]):
        owners: dict[str, set[str]] = {}
        for name, secret in secrets.items():
            assert len(secret) >= SLICE, (
                f"{name} is shorter than {SLICE} characters: it cannot be searched"
            )
            for i in range(len(secret) - SLICE + 1):
                owners.setdefault(secret[i : i + SLICE], set()).add(name)
        # A slice two secrets share is not secret: the fixed JWT and JWE headers every token starts
        # with, say. Each slice left belongs to one secret, which a failure can then name.
        self.slices = {piece: names.pop() for piece, names in owners.items() if len(names) == 1}
        alphabet = "".join(sorted(set("".join(secrets.values()))))
        self.runs = re.compile(f"[{re.escape(alphabet)}]{{{SLICE},}}")

    def find(self, text: str, limit: int = 5) -> list[tuple[int, str]]:
        """(offset, which secret) of the first few slices found in text."""
        found = []
        for run in self.runs.finditer(text):
            value, start = run.group(), run.start()
            for i in range(len(value) - SLICE + 1):
                name = self.slices.get(value[i : i + SLICE])
                if name is not None:
                    found.append((start + i, name))
                    if len(found) >= limit:
                        return found
                    break  # one hit per run is enough to report it
        return found


def assert_no_secret(text: str, *secrets: str | None) -> None:
    """No slice of any of `secrets` in `text` (a page, a JSON body, a CSV). Absent values (None,
    "") are skipped; the same secret given twice is searched once."""
    given = [s for s in dict.fromkeys(secrets) if s]
    assert given, "no secret to look for: the check would prove nothing"
    finder = SecretFinder({f"secret #{n} (of those given)": s for n, s in enumerate(given)})
    found = finder.find(text)
    assert not found, "secret material found: " + ", ".join(
        f"{name} at offset {offset}" for offset, name in found
    )


def secrets_of(*accounts) -> list[str | None]:
    """The three tokens of each account (model instances), in order."""
    return [getattr(a, field) for a in accounts for field in TOKEN_FIELDS]
