import base64
import json
import random
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from accounts import tokens
from accounts.tokens import (
    AT_EXPIRED,
    AT_SHORT_LIVED,
    MSG_AT_EXPIRED,
    MSG_NO_USABLE_TOKEN,
    NO_USABLE_TOKEN,
    AccessTokenClaims,
    MalformedToken,
    Problem,
    decode_access_token,
    is_client_id,
    is_email,
    is_jwe,
    is_jwt,
    is_refresh_token,
    is_uuid,
    jose_shape,
    mask,
    usability_problem,
)
from devtools.fakes import (
    SIGNING_KEY,
    make_access_token,
    make_client_id,
    make_refresh_token,
    make_session_token,
)
from tests.support.language import english

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
NINE_HOURS = timedelta(hours=9)
RNG_SEED = 20250601


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header, payload, signature: bytes = b"signature") -> str:
    return ".".join(
        b64(part if isinstance(part, bytes) else json.dumps(part).encode())
        for part in (header, payload, signature)
    )


# --- shapes ---------------------------------------------------------------------

AT = make_access_token(email="Owner@Example.com", now=NOW, rng=random.Random(RNG_SEED))
ST = make_session_token(rng=random.Random(RNG_SEED))


@pytest.mark.parametrize(
    "value, expected",
    [
        (AT, tokens.JWT),
        (ST, tokens.JWE),
        ("eyJh.cGF5.c2ln", tokens.JWT),
        ("eyJh.cGF5.", None),  # empty signature
        ("eyJh..c2ln", None),  # empty payload: neither JWT nor JWE
        ("eyJh.cGF5.c2ln.eA", None),  # four parts
        ("eyJh..aXY.Y3Q.dGFn", tokens.JWE),
        ("eyJh.a2V5.aXY.Y3Q.dGFn", None),  # JWE with an encrypted key is not the cookie
        ("eyJh...Y3Q.dGFn", None),  # empty IV
        ("eyJh..aXY.Y3Q.", None),  # empty tag
        ("eyJh.cGF5.c2ln=", None),  # padding is not base64url
        ("eyJh.cG F5.c2ln", None),
        ("eyJh.cGF5.c2lé", None),
        ("abc.def.ghi", None),  # not a JSON header
        ("", None),
    ],
)
def test_jose_shape(value, expected):
    assert jose_shape(value) == expected
    assert is_jwt(value) is (expected == tokens.JWT)
    assert is_jwe(value) is (expected == tokens.JWE)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("a@x.com", True),
        ("First.Last+tag@mail.example.co.uk", True),
        ("rt_ops@example.com", True),
        ("a@x", False),  # no dot in the domain
        ("a@@x.com", False),
        ("a b@x.com", False),
        ("a|b@x.com", False),
        ("@x.com", False),
        ("a@-x.com", False),
        ("a@" + "x" * 250 + ".com", False),  # over 254 characters
        ("", False),
    ],
)
def test_is_email(value, expected):
    assert is_email(value) is expected


def test_other_predicates():
    assert is_uuid("0f8fad5b-d9cb-469f-a165-70867728950e")
    assert is_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E")
    assert not is_uuid("0f8fad5b-d9cb-469f-a165-70867728950")
    assert not is_uuid("0f8fad5bd9cb469fa16570867728950e")
    assert not is_uuid("0f8fad5b-d9cb-469f-a165-70867728950g")

    assert is_refresh_token(make_refresh_token(random.Random(1)))
    assert is_refresh_token("rt-legacy.abc")
    assert not is_refresh_token("rt_")
    assert not is_refresh_token("rt_ops@example.com")
    assert not is_refresh_token("opaque-refresh-token")

    assert is_client_id(make_client_id(random.Random(1)))
    assert not is_client_id("app_")
    assert not is_client_id("app_x@y.com")
    assert not is_client_id("application")


@pytest.mark.parametrize(
    "secret, shown",
    [
        (None, ""),
        ("", ""),
        ("a", "…"),
        ("abcd", "…"),
        ("abcde", "…bcde"),
        ("rt_secret-refresh-WXYZ", "…WXYZ"),
        (AT, "…" + AT[-4:]),
    ],
)
def test_mask(secret, shown):
    assert mask(secret) == shown


# --- claims -------------------------------------------------------------------------


def test_decode_reads_email_and_expiry_without_verifying():
    expires = NOW + timedelta(days=3, seconds=17)
    at = make_access_token(email="  Owner@Example.COM ", expires_at=expires, now=NOW)
    claims = decode_access_token(at)
    assert claims == AccessTokenClaims("owner@example.com", expires.replace(microsecond=0))
    assert claims.expires_at.tzinfo is not None
    assert claims.expires_at.utcoffset() == timedelta(0)
    assert decode_access_token(at, shape_checked=True) == claims


def test_decode_accepts_expired_tokens_and_any_signature():
    at = make_access_token(email="a@x.com", expires_at=NOW - timedelta(days=30), now=NOW)
    assert decode_access_token(at).expires_at == NOW - timedelta(days=30)
    header, payload, _ = at.split(".")
    forged = f"{header}.{payload}.{b64(b'not the signature')}"
    assert decode_access_token(forged).email == "a@x.com"


@pytest.mark.parametrize(
    "payload, email, has_exp",
    [
        ({"exp": 1760000000}, None, True),
        ({"https://api.openai.com/profile": {"email": "a@x.com"}}, "a@x.com", False),
        ({"https://api.openai.com/profile": "a@x.com", "exp": 1760000000.5}, None, True),
        ({"https://api.openai.com/profile": {"email": 7}}, None, False),
        ({"https://api.openai.com/profile": {"email": "   "}}, None, False),
        ({}, None, False),
    ],
)
def test_decode_tolerates_missing_or_odd_claims(payload, email, has_exp):
    claims = decode_access_token(compact({"alg": "HS256", "typ": "JWT"}, payload))
    assert claims.email == email
    assert (claims.expires_at is not None) is has_exp


HEADER = {"alg": "HS256", "typ": "JWT"}


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",  # payload is not JSON
        compact(HEADER, [1, 2, 3]),  # payload is not an object
        compact(HEADER, "a string"),
        compact(["alg"], {"exp": 1}),  # header is not an object
        compact({"alg": "HS256", "kid": 5}, {"exp": 1}),  # PyJWT: kid must be a string
        compact(HEADER, {"exp": "tomorrow"}),
        compact(HEADER, {"exp": True}),
        compact(HEADER, {"exp": 10**30}),
        compact(HEADER, {"exp": None, "x": 1}) + "A",  # signature length is 1 mod 4
        compact(HEADER, b"{\xff}"),  # not UTF-8
        compact({"alg": "HS256", "b64": False, "crit": ["b64"]}, {"exp": 1}),
        compact({"alg": "HS256", "crit": ["unknown"]}, {"exp": 1}),
        "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9B.c2ln",  # non-canonical base64url
    ],
)
def test_decode_rejects_malformed_tokens(token):
    with pytest.raises(MalformedToken) as caught:
        decode_access_token(token)
    assert token not in str(caught.value)


def test_b64_without_crit_is_left_to_pyjwt():
    with pytest.raises(MalformedToken):
        decode_access_token(compact({"alg": "HS256", "b64": False}, {"exp": 1}))
    assert decode_access_token(compact({"alg": "HS256", "b64": True}, {"exp": 1})).expires_at


@pytest.mark.parametrize("raw", [b'{"exp":12}', b'{"exp":123}'])
def test_non_canonical_base64url_is_rejected_like_pyjwt(raw):
    header = b64(json.dumps(HEADER).encode())
    canonical = b64(raw)
    assert len(canonical) % 4 in (2, 3)
    verdicts = {}
    for last in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        token = f"{header}.{canonical[:-1]}{last}.c2ln"
        verdicts[last] = fast_verdict(token) != "rejected"
        assert fast_verdict(token) == pyjwt_verdict(token), last
    # Siblings of the right last character decode to the same bytes; only
    # the canonical one may pass.
    assert [last for last, accepted in verdicts.items() if accepted] == [canonical[-1]]


def test_decode_rejects_non_finite_exp():
    # JSON has no NaN, but Python's json (and so PyJWT) reads one.
    payload = b64(b'{"exp": NaN}')
    header = b64(json.dumps(HEADER).encode())
    with pytest.raises(MalformedToken):
        decode_access_token(f"{header}.{payload}.c2ln")


def test_decode_leaves_unusual_tokens_to_pyjwt():
    header, payload, signature = compact(HEADER, {"exp": 1760000000}).split(".")
    assert len(payload) % 4  # so that padding is really added
    padded = f"{header}.{payload}{'=' * (-len(payload) % 4)}.{signature}"
    assert not is_jwt(padded)
    assert decode_access_token(padded).expires_at == datetime.fromtimestamp(1760000000, UTC)
    crit = compact({"alg": "HS256", "b64": True, "crit": ["b64"]}, {"exp": 1760000000})
    assert decode_access_token(crit).expires_at == datetime.fromtimestamp(1760000000, UTC)


# The fast decoder must accept exactly what jwt.decode accepts, with the same
# payload. Segments are drawn from the awkward corners: valid and invalid JSON,
# headers PyJWT treats specially, non-canonical and padded base64url.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
headers = st.one_of(
    st.just({"alg": "HS256", "typ": "JWT"}),
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["HS256", "RS256", "none"])},
        optional={
            "kid": st.one_of(st.text(max_size=5), st.integers(), st.none()),
            "crit": st.one_of(
                st.lists(st.sampled_from(["b64", "exp", 1]), max_size=2), st.text(max_size=3)
            ),
            "b64": st.one_of(st.booleans(), st.integers(0, 1)),
            "typ": st.just("JWT"),
        },
    ),
    json_values,
)
payloads = st.one_of(st.dictionaries(st.text(max_size=6), json_values, max_size=4), json_values)


@st.composite
def segments(draw, values):
    kind = draw(st.sampled_from(["json", "json", "bytes", "text"]))
    if kind == "json":
        raw = json.dumps(draw(values)).encode()
        if draw(st.booleans()):
            raw = (
                draw(st.sampled_from([b" ", b"\n", b"\xef\xbb\xbf", b""]))
                + raw
                + draw(st.sampled_from([b"", b" ", b"x", b"\x00"]))
            )
    elif kind == "bytes":
        raw = draw(st.binary(max_size=12))
    else:
        return draw(
            st.text(
                alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=",
                max_size=12,
            )
        )
    text = b64(raw)
    mutation = draw(st.sampled_from(["none", "none", "tail", "pad", "extra"]))
    if mutation == "tail" and text:
        text = text[:-1] + draw(st.sampled_from("ABQgwEI0-_"))
    elif mutation == "pad":
        text += "=" * draw(st.integers(1, 3))
    elif mutation == "extra":
        text += draw(st.sampled_from("A-_"))
    return text


@st.composite
def jwt_like(draw):
    header = draw(segments(headers))
    payload = draw(segments(payloads))
    signature = draw(segments(st.just("sig")))
    return f"{header}.{payload}.{signature}"


def pyjwt_verdict(token):
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except Exception:
        return "rejected"


def fast_verdict(token, *, shape_checked=False):
    try:
        return tokens._unverified_payload(token, shape_checked=shape_checked)
    except MalformedToken:
        return "rejected"


@hyp_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jwt_like())
def test_fast_decoder_agrees_with_pyjwt(token):
    expected = pyjwt_verdict(token)
    assert fast_verdict(token) == expected
    if is_jwt(token):
        assert fast_verdict(token, shape_checked=True) == expected


@hyp_settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_decode_of_arbitrary_text_only_raises_malformed(text):
    """Any text either decodes to claims of the right types or raises MalformedToken (any other
    exception fails the test); both the text and the text behind a JWT header prefix are tried."""
    from datetime import datetime

    for candidate in ("eyJ" + text, text):
        try:
            claims = decode_access_token(candidate)
        except MalformedToken:
            continue
        assert claims.email is None or (
            isinstance(claims.email, str) and claims.email == claims.email.strip().lower()
        )
        assert claims.expires_at is None or (
            isinstance(claims.expires_at, datetime) and claims.expires_at.utcoffset() is not None
        )


def test_real_signature_checks_are_not_needed_but_tokens_are_real_jwts():
    # The fakes are genuine HS256 tokens, so PyJWT verifies them with the key.
    claims = jwt.decode(
        AT, SIGNING_KEY, algorithms=["HS256"], options={"verify_aud": False, "verify_exp": False}
    )
    assert claims["https://api.openai.com/profile"]["email"] == "Owner@Example.com"
    assert 1000 < len(AT) < 2500
    assert len(ST) == 2500


# --- usability -------------------------------------------------------------------


def judge(at_expires_at, *, st=False, rt=False, cid=False, min_at_lifetime=NINE_HOURS):
    return usability_problem(
        at_expires_at=at_expires_at,
        has_session_token=st,
        has_refresh_token=rt,
        has_client_id=cid,
        now=NOW,
        min_at_lifetime=min_at_lifetime,
    )


@pytest.mark.parametrize(
    "expires_in, extra, code",
    [
        (timedelta(days=5), {}, None),
        (NINE_HOURS + timedelta(seconds=1), {}, None),
        (NINE_HOURS, {}, AT_SHORT_LIVED),  # "more than" nine hours
        (timedelta(hours=1), {}, AT_SHORT_LIVED),
        (timedelta(seconds=1), {}, AT_SHORT_LIVED),
        (timedelta(0), {}, AT_EXPIRED),
        (-timedelta(days=2), {}, AT_EXPIRED),
        (-timedelta(days=2), {"st": True}, None),
        (-timedelta(days=2), {"rt": True, "cid": True}, None),
        (-timedelta(days=2), {"rt": True}, AT_EXPIRED),
        (timedelta(hours=1), {"cid": True}, AT_SHORT_LIVED),
        (None, {}, NO_USABLE_TOKEN),
        (None, {"rt": True}, NO_USABLE_TOKEN),
        (None, {"st": True}, None),
        (None, {"rt": True, "cid": True}, None),
    ],
)
def test_usability(expires_in, extra, code):
    expires_at = None if expires_in is None else NOW + expires_in
    problem = judge(expires_at, **extra)
    assert (problem.code if problem else None) == code


def test_usability_reasons_are_the_module_constants():
    assert judge(NOW).message is MSG_AT_EXPIRED
    assert judge(None).message is MSG_NO_USABLE_TOKEN
    # One object per threshold: flagging many accounts allocates nothing.
    assert judge(NOW + timedelta(hours=1)) is judge(NOW + timedelta(hours=2))


def test_messages_render_with_the_threshold():
    with english():
        assert "less than 9 hours left" in str(judge(NOW + timedelta(hours=1)).message)
        short = judge(NOW + timedelta(hours=1), min_at_lifetime=timedelta(hours=12, minutes=30))
        assert "less than 12.5 hours left" in str(short)
        assert str(judge(NOW)).startswith("The access token has expired")
        assert isinstance(judge(None), Problem)
        assert repr(judge(None)) == "Problem('no_usable_token')"
