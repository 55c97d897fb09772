"""User names: one canonical lower-case ASCII spelling, and a clear refusal for anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e6auth.credentials.usernames import MAX_USERNAME_LENGTH, normalize_username
from e6auth.errors import InvalidUsername

SHAPE_HINT = "alice@example.com"


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("alice", "alice"),
        ("Alice@Example.COM", "alice@example.com"),
        ("a.b+c@x-y.io", "a.b+c@x-y.io"),
        ("BOB", "bob"),
        ("a", "a"),
        ("first_last%tag@mail.example.co.uk", "first_last%tag@mail.example.co.uk"),
        ("007@1.2", "007@1.2"),
    ],
)
def test_valid_names_are_lowered(name: str, canonical: str) -> None:
    assert normalize_username(name) == canonical


def test_longest_name_is_accepted() -> None:
    # 64-character local part and 63-character labels: the longest pieces the pattern allows.
    label = "d" * 63
    name = "l" * 64 + "@" + ".".join([label, label, label[:61]])
    assert len(name) == MAX_USERNAME_LENGTH
    assert normalize_username(name) == name


@pytest.mark.parametrize(
    "name",
    [
        " ",
        "alice smith",
        " alice",
        "alice ",
        "alice\x00",
        "ali\x00ce",
        "alice\n",
        "alice\t",
        "alicé",
        "ålice@example.com",
        "алиса",
        "\uff41\uff4c\uff49\uff43\uff45",  # "alice" in fullwidth letters
        "\u212aelvin",  # KELVIN SIGN, which lowers to an ASCII "k"
        "\u0130nga",  # LATIN CAPITAL I WITH DOT ABOVE
        "a..b",
        "alice@example..com",
        ".alice",
        "alice.",
        "a@b",
        "alice@localhost",
        "alice@",
        "@example.com",
        "alice@@example.com",
        "a@b@example.com",
        "alice@-example.com",
        "alice@example-.com",
        "alice@.example.com",
        "alice@example.com.",
        "x'; drop table--",
        "x' or '1'='1",
        'alice"',
        "alice;",
        "../etc/passwd",
        "alice/bob",
        "l" * 65,
    ],
)
def test_junk_is_refused_with_a_clear_message(name: str) -> None:
    with pytest.raises(InvalidUsername) as caught:
        normalize_username(name)
    # The message tells a person what a good name looks like.
    assert SHAPE_HINT in str(caught.value)


def test_empty_name_says_it_is_empty() -> None:
    with pytest.raises(InvalidUsername, match="empty"):
        normalize_username("")


def test_too_long_name_says_how_long_it_may_be() -> None:
    name = "a" * 63 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63
    assert len(name) == MAX_USERNAME_LENGTH + 1
    with pytest.raises(InvalidUsername, match=str(MAX_USERNAME_LENGTH)):
        normalize_username(name)


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidUsername):
        normalize_username(None)  # type: ignore[arg-type]


def test_error_has_the_management_wire_mapping() -> None:
    with pytest.raises(InvalidUsername) as caught:
        normalize_username("no spaces please")
    assert caught.value.grpc_status == "INVALID_ARGUMENT"
    assert caught.value.reason == "invalid_username"


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_normalize_is_idempotent_and_raises_only_invalid_username(name: str) -> None:
    try:
        canonical = normalize_username(name)
    except InvalidUsername:
        return
    assert normalize_username(canonical) == canonical
    assert canonical == name.lower()
    assert canonical.isascii()


_NAME_CHARS = st.sampled_from("abcXYZ019._%+-@")


@settings(max_examples=300)
@given(st.text(alphabet=_NAME_CHARS, min_size=1, max_size=40))
def test_name_like_text_is_idempotent(name: str) -> None:
    # Plain st.text() seldom forms a valid name; this alphabet does, and exercises the pattern.
    try:
        canonical = normalize_username(name)
    except InvalidUsername:
        return
    assert normalize_username(canonical) == canonical
    assert normalize_username(canonical.upper()) == canonical


@settings(max_examples=200)
@given(st.text(alphabet=_NAME_CHARS, max_size=20), st.characters(min_codepoint=128))
def test_any_non_ascii_character_is_refused(name: str, char: str) -> None:
    # Two spellings of one name must never reach one user by case folding outside ASCII.
    with pytest.raises(InvalidUsername):
        normalize_username("a" + name[: len(name) // 2] + char + name[len(name) // 2 :])
