"""Coverage-guided fuzzing (atheris) of what reads untrusted text before anything is verified:
the token parser, and the interceptor's reading of a call's credentials (metadata and session id)
in front of a real authenticator on an in-memory store.

    python fuzz/fuzz_tokens.py -runs=20000     # a bounded run (tests/test_hostile_input.py)
    python fuzz/fuzz_tokens.py fuzz/corpus     # until stopped, keeping what it finds

Nothing may escape but e6auth's own refusals; anything else is a crash that atheris reports with
the input that caused it.
"""

from __future__ import annotations

import contextlib
import secrets
import sys

import atheris

with atheris.instrument_imports(include=["e6auth"]):
    from e6auth.credentials.tokens import TOKEN_LENGTH, check_token, generate_token, parse_token
    from e6auth.errors import AuthenticationError, MalformedCredential
    from e6auth.grpc import e6x_engine_pb2 as pb
    from e6auth.grpc.interceptor import authenticate_call
    from e6auth.testing import memory_store
    from e6auth.verify.authenticator import Authenticator
    from e6auth.verify.parameters import SessionParameters

_STORE = memory_store()
_STORE.create_user("alice", "alice's password")
_REAL_TOKEN = _STORE.create_token("alice").token
_AUTHENTICATOR = Authenticator(_STORE, sessions=SessionParameters(secrets.token_bytes(32)))
_KEYS = ("authorization", "authorization-bin", "Authorization", "x-other")


def _token_like(fdp: atheris.FuzzedDataProvider) -> str:
    """Mostly a real or fresh token with a few characters overwritten, else free text."""
    if fdp.ConsumeBool():
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 3 * TOKEN_LENGTH))
    text = list(_REAL_TOKEN if fdp.ConsumeBool() else generate_token()[1])
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        text[fdp.ConsumeIntInRange(0, len(text) - 1)] = fdp.ConsumeUnicode(1) or "\x00"
    return "".join(text)


def _parser(text: str) -> None:
    try:
        parsed = parse_token(text)
    except MalformedCredential:
        return
    check_token(text)  # what parses must pass the hot path's check too
    if parsed.secret in repr(parsed):
        raise AssertionError("a parsed token's repr shows its secret")


def _call_credentials(fdp: atheris.FuzzedDataProvider, text: str) -> None:
    metadata: list[tuple[str, str | bytes]] = []
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        key = _KEYS[fdp.ConsumeIntInRange(0, len(_KEYS) - 1)]
        if fdp.ConsumeBool():
            value: str | bytes = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
        else:
            scheme = ("Bearer ", "bearer ", "Basic ", "")[fdp.ConsumeIntInRange(0, 3)]
            value = scheme + text
        metadata.append((key, value))
    request = pb.GetTablesV2Request(sessionId=fdp.ConsumeUnicodeNoSurrogates(300))
    # Every refusal of a credential is an AuthenticationError; anything else is a finding.
    with contextlib.suppress(AuthenticationError):
        authenticate_call(_AUTHENTICATOR, metadata, request, "127.0.0.1")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = _token_like(fdp)
    _parser(text)
    _call_credentials(fdp, text)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
