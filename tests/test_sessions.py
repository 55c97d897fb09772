"""Session JWTs: signature, absolute and idle expiry, activity tracking bounds."""

from __future__ import annotations

import secrets

import jwt
import pytest

from e6auth.errors import SessionError, SessionExpired, SessionRevoked
from e6auth.testing import FakeClock
from e6auth.verify.sessions import SessionSigner

KEY = secrets.token_bytes(32)


def _signer(clock: FakeClock, **options: float) -> SessionSigner:
    return SessionSigner(KEY, clock=clock, **options)  # type: ignore[arg-type]


def _issue(signer: SessionSigner) -> tuple[str, str]:
    session, claims = signer.issue(username="alice", user_id=7, method="token", token_id="T" * 12)
    return session, claims.id


def test_a_session_decodes_to_what_was_issued(clock: FakeClock) -> None:
    signer = _signer(clock)
    session, session_id = _issue(signer)
    claims = signer.decode(session)
    assert (claims.id, claims.username, claims.user_id, claims.token_id) == (
        session_id,
        "alice",
        7,
        "T" * 12,
    )
    assert claims.expires_at == claims.issued_at + signer.max_age_seconds


def test_a_session_signed_with_another_key_or_none_is_refused(clock: FakeClock) -> None:
    signer = _signer(clock)
    session, _ = _issue(signer)
    other, _ = _issue(SessionSigner(secrets.token_bytes(32), clock=clock))
    payload = jwt.decode(session, options={"verify_signature": False})
    unsigned = jwt.encode(payload, None, algorithm="none")
    for forged in (other, unsigned, session[:-2] + "xx", "", "x" * 5000):
        with pytest.raises(SessionError):
            signer.decode(forged)


def test_a_session_ends_at_its_maximum_age_whatever_its_activity(clock: FakeClock) -> None:
    signer = _signer(clock, idle_seconds=3600, max_age_seconds=7200)
    session, session_id = _issue(signer)
    for _ in range(7):
        clock.advance(1000)
        signer.touch(session_id)
    clock.advance(200)
    with pytest.raises(SessionExpired):
        signer.decode(session)


def test_a_session_idle_past_the_limit_is_refused(clock: FakeClock) -> None:
    signer = _signer(clock, idle_seconds=60)
    _, session_id = _issue(signer)
    clock.advance(59)
    signer.touch(session_id)
    clock.advance(60)
    with pytest.raises(SessionExpired):
        signer.touch(session_id)


def test_idle_time_counts_from_the_end_of_a_long_call(clock: FakeClock) -> None:
    signer = _signer(clock, idle_seconds=60)
    _, session_id = _issue(signer)
    started = clock()
    signer.touch(session_id)
    clock.advance(300)  # one call that ran five minutes
    signer.keep_alive(session_id, started=started)
    clock.advance(59)
    signer.touch(session_id)  # idle 59 s since the call ended: still alive


def test_a_session_this_process_never_saw_counts_from_its_issue(clock: FakeClock) -> None:
    issuer, verifier = _signer(clock, idle_seconds=60), _signer(clock, idle_seconds=60)
    session, session_id = _issue(issuer)
    claims = verifier.decode(session)
    verifier.touch(session_id, issued_at=claims.issued_at)  # another replica issued it
    clock.advance(120)
    other, other_id = _issue(issuer)
    with pytest.raises(SessionExpired):
        verifier.touch(other_id, issued_at=verifier.decode(other).issued_at - 120)


def test_activity_tracking_is_bounded(clock: FakeClock) -> None:
    signer = _signer(clock, idle_seconds=60, max_sessions=100)
    ids = [_issue(signer)[1] for _ in range(1000)]
    assert len(signer._last_seen) == 100
    assert list(signer._last_seen)[-1] == ids[-1]
    clock.advance(61)
    _issue(signer)
    assert len(signer._last_seen) == 1, "idle sessions are dropped from the front"


def test_the_key_never_shows(clock: FakeClock) -> None:
    signer = _signer(clock)
    assert KEY.hex() not in repr(signer)
    assert str(KEY) not in repr(signer)


def test_a_signer_with_an_audience_and_one_without_refuse_each_others_sessions(
    clock: FakeClock,
) -> None:
    connector = _signer(clock)
    web = SessionSigner(KEY, clock=clock, audience="e6auth-web")
    connector_session, _ = _issue(connector)
    web_session, _ = _issue(web)

    assert web.decode(web_session).username == "alice"
    with pytest.raises(SessionError):
        connector.decode(web_session)
    with pytest.raises(SessionError):
        web.decode(connector_session)
    with pytest.raises(SessionError):
        SessionSigner(KEY, clock=clock, audience="another").decode(web_session)


def test_an_ended_session_is_refused_until_its_maximum_age(clock: FakeClock) -> None:
    signer = _signer(clock, idle_seconds=3600, max_age_seconds=7200)
    session, _ = _issue(signer)
    kept, _ = _issue(signer)
    claims = signer.decode(session)

    signer.end(claims)

    with pytest.raises(SessionRevoked):
        signer.decode(session)
    assert signer.decode(kept).username == "alice"
    clock.advance(7200)
    signer.end(signer.decode(_issue(signer)[0]))  # prunes what its maximum age ended anyway
    assert claims.id not in signer._ended
