"""The PAT format: what a token looks like, and that parsing refuses anything else without I/O."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e6auth.credentials.keys import Pepper
from e6auth.credentials.tokens import (
    ALPHABET,
    ID_LENGTH,
    PREFIX,
    TOKEN_LENGTH,
    ParsedToken,
    generate_token,
    looks_like_token,
    parse_token,
)
from e6auth.errors import MalformedCredential

_TOKEN = re.compile(r"e6pat_([0-9A-Za-z]{12})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})")


def _base62_value(text: str) -> int:
    value = 0
    for char in text:
        value = value * 62 + ALPHABET.index(char)
    return value


def test_generated_token_parses_back_to_its_parts() -> None:
    parsed, token = generate_token()

    assert parse_token(token) == parsed
    assert token == f"{PREFIX}{parsed.id}_{parsed.secret}{token[-6:]}"


def test_token_format_prefix_id_secret_and_checksum() -> None:
    parsed, token = generate_token()

    match = _TOKEN.fullmatch(token)
    assert match is not None, token
    assert len(token) == TOKEN_LENGTH == 6 + 12 + 1 + 32 + 6
    assert match.group(1) == parsed.id
    assert match.group(2) == parsed.secret
    # The checksum is CRC32 of everything before it, written as a base62 number.
    assert _base62_value(match.group(3)) == zlib.crc32(token[:-6].encode("ascii"))


def test_secret_carries_at_least_160_random_bits() -> None:
    parsed, _ = generate_token()
    assert len(parsed.secret) * math.log2(len(ALPHABET)) >= 160


def test_generated_tokens_are_distinct() -> None:
    # A weak random source (or a fixed seed) shows up as repeats long before 200 draws.
    tokens = [generate_token() for _ in range(200)]
    assert len({parsed.id for parsed, _ in tokens}) == 200
    assert len({parsed.secret for parsed, _ in tokens}) == 200
    # Every alphabet character is reachable in secrets, so the entropy estimate above holds.
    assert set("".join(parsed.secret for parsed, _ in tokens)) == set(ALPHABET)


def test_every_single_character_substitution_is_refused() -> None:
    _, token = generate_token()
    # Base62 characters exercise the checksum; the others exercise the shape check.
    replacements = ALPHABET + "_-+/= .\x00é"
    for position, original in enumerate(token):
        for replacement in replacements:
            if replacement == original:
                continue
            mutated = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(MalformedCredential):
                parse_token(mutated)


def test_every_single_character_deletion_and_insertion_is_refused() -> None:
    _, token = generate_token()
    for position in range(len(token) + 1):
        with pytest.raises(MalformedCredential):
            parse_token(token[:position] + "a" + token[position:])
        if position < len(token):
            with pytest.raises(MalformedCredential):
                parse_token(token[:position] + token[position + 1 :])


@pytest.mark.parametrize(
    "text",
    ["", "e6pat_", "password", " {token}", "{token} ", "{token}\n", "{upper}", "ghp_{rest}"],
)
def test_malformed_shapes_are_refused(text: str) -> None:
    _, token = generate_token()
    candidate = text.format(token=token, upper=token.upper(), rest=token[len(PREFIX) :])
    assert not looks_like_token(candidate)
    with pytest.raises(MalformedCredential, match="wrong shape"):
        parse_token(candidate)


def test_looks_like_token_ignores_the_checksum_but_parse_token_checks_it() -> None:
    _, token = generate_token()
    last = token[-1]
    bad_checksum = token[:-1] + ("0" if last != "0" else "1")

    # The handshake must see a typo'd token as a token, so it is not tried as a password...
    assert looks_like_token(token)
    assert looks_like_token(bad_checksum)
    # ...and refused as one.
    with pytest.raises(MalformedCredential, match="checksum"):
        parse_token(bad_checksum)


def test_checksum_error_names_the_id_but_not_the_secret() -> None:
    parsed, token = generate_token()
    bad = token[:-1] + ("0" if token[-1] != "0" else "1")

    with pytest.raises(MalformedCredential) as caught:
        parse_token(bad)

    assert parsed.id in str(caught.value)
    for text in (str(caught.value), repr(caught.value)):
        assert parsed.secret not in text
        assert bad not in text


def test_parsed_token_repr_hides_the_secret() -> None:
    parsed, _ = generate_token()
    assert parsed.id in repr(parsed)
    assert parsed.secret not in repr(parsed)
    assert parsed.secret not in str(parsed)


def test_token_digest_is_hmac_sha256_of_the_secret_keyed_by_the_pepper() -> None:
    pepper = secrets.token_bytes(32)
    parsed, _ = generate_token()

    expected = hmac.new(pepper, parsed.secret.encode("ascii"), hashlib.sha256).digest()
    assert Pepper(pepper).digest(parsed.secret) == expected
    # Keyed: another pepper gives another digest, so a dump without the pepper checks nothing.
    assert Pepper(secrets.token_bytes(32)).digest(parsed.secret) != expected


def test_parsed_token_is_immutable() -> None:
    parsed = ParsedToken("a" * 12, "b" * 32)
    with pytest.raises(AttributeError):
        parsed.secret = "c" * 32  # type: ignore[misc]


@settings(max_examples=300)
@given(st.text())
def test_random_text_is_refused_only_with_malformed_credential(text: str) -> None:
    try:
        parsed = parse_token(text)
    except MalformedCredential:
        return
    # Random text with a valid checksum is astronomically unlikely, but if it happens the
    # parse must at least be consistent with the format.
    assert looks_like_token(text)
    assert text == f"{PREFIX}{parsed.id}_{parsed.secret}{text[-6:]}"


@settings(max_examples=200)
@given(
    st.text(alphabet=ALPHABET + "_", min_size=TOKEN_LENGTH - 6, max_size=TOKEN_LENGTH - 6),
    st.text(alphabet=ALPHABET, min_size=6, max_size=6),
)
def test_token_shaped_text_with_a_random_checksum_is_refused(body: str, checksum: str) -> None:
    text = PREFIX + body[len(PREFIX) :] + checksum
    assert len(text) == TOKEN_LENGTH
    with pytest.raises(MalformedCredential):
        parse_token(text)


# Texts near a token's shape: the alphabet, its neighbours, non-ASCII letters and digits (which
# str.isalnum accepts), the separator, whitespace; and texts laid out as a token (id, separator,
# secret and checksum of the right lengths) in which any character may be one of those.
_NEAR = ALPHABET + "_-+/= \n\u00e9\u0661\uff21\u212a"
_AFTER_ID = TOKEN_LENGTH - len(PREFIX) - ID_LENGTH - 1  # the secret and the checksum
_NEAR_TOKEN = st.text(
    alphabet=_NEAR,
    min_size=TOKEN_LENGTH - len(PREFIX) - 1,
    max_size=TOKEN_LENGTH - len(PREFIX) + 1,
) | st.builds(
    "{}_{}".format,
    st.text(alphabet=ALPHABET, min_size=ID_LENGTH, max_size=ID_LENGTH)
    | st.text(alphabet=_NEAR, min_size=ID_LENGTH, max_size=ID_LENGTH),
    st.text(alphabet=ALPHABET, min_size=_AFTER_ID, max_size=_AFTER_ID)
    | st.text(alphabet=_NEAR, min_size=_AFTER_ID, max_size=_AFTER_ID),
)


@settings(max_examples=500)
@given(_NEAR_TOKEN, st.sampled_from([PREFIX, "e6pat-", "E6PAT_", ""]))
def test_looks_like_token_is_exactly_the_documented_shape(rest: str, prefix: str) -> None:
    # The check is made of string methods for speed; the format's regex is the reference.
    text = prefix + rest
    shaped = _TOKEN.fullmatch(text) is not None
    assert looks_like_token(text) == shaped
    # parse_token writes the same test out: it refuses the shape exactly when the regex does.
    refusal = ""
    try:
        parse_token(text)
    except MalformedCredential as error:
        refusal = str(error)
    assert ("wrong shape" in refusal) == (not shaped)


def test_a_token_with_non_ascii_letters_or_digits_is_no_token() -> None:
    _, token = generate_token()
    for foreign in ("\u00e9", "\u0661", "\uff21"):  # é, Arabic-Indic one, fullwidth A
        candidate = token[:10] + foreign + token[11:]
        assert not looks_like_token(candidate)
        with pytest.raises(MalformedCredential, match="wrong shape"):
            parse_token(candidate)


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=200), st.text(alphabet=ALPHABET, max_size=64))
def test_a_peppers_digest_is_hmac_sha256(key: bytes, secret: str) -> None:
    # The pepper keys its HMAC once and copies it for each digest: the same bytes as a fresh
    # HMAC-SHA256, for keys longer than SHA-256's block too.
    pepper = Pepper(key)
    expected = hmac.digest(key, secret.encode("ascii"), "sha256")
    assert pepper.digest(secret) == expected
    assert pepper.digest(secret) == expected  # the keyed state is not used up
