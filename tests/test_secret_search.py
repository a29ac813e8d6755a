"""The one search for secrets (tests/support/secrets.py) finds what it must, and says no secret.

Every page, API and export test trusts it: if it missed a slice, those tests would prove nothing.
"""

import pytest

from devtools import fakes
from tests.support.secrets import SLICE, assert_no_secret


def test_any_16_consecutive_characters_are_found_wherever_they_start():
    secret = fakes.make_refresh_token()
    # The pages' old check looked at slices starting every 8 characters only: a window starting
    # between them (here at 4) went unseen.
    for start in range(len(secret) - SLICE + 1):
        with pytest.raises(AssertionError) as failure:
            assert_no_secret(f"<td>{secret[start : start + SLICE]}</td>", "", None, secret)
        assert secret[start : start + SLICE] not in str(failure.value)


def test_fewer_than_16_characters_and_other_secrets_are_not_a_finding():
    secret, other = fakes.make_refresh_token(), fakes.make_refresh_token()
    assert_no_secret(f"<td>…{secret[-4:]}</td>{secret[: SLICE - 1]} {other}", secret)


def test_a_check_with_nothing_to_look_for_fails_rather_than_passes():
    with pytest.raises(AssertionError, match="nothing"):
        assert_no_secret("<p>page</p>", None, "")
