"""The authenticator's parameter groups: built from Settings, and the former flat keywords still
accepted with a warning that names what replaces them."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from e6auth import CacheParameters, SessionParameters, Settings, TaskParameters
from e6auth.errors import SessionError
from e6auth.testing import FakeClock, memory_store
from e6auth.verify.authenticator import Authenticator

KEY = b"a session key of 32 bytes, fixed"


@pytest.mark.parametrize(
    ("keyword", "value", "replacement"),
    [
        ("cache_max_entries", 10, "cache=CacheParameters(max_entries=...)"),
        ("cache_ttl_seconds", 0, "cache=CacheParameters(ttl_seconds=...)"),
        ("negative_cache_ttl_seconds", 1.0, "cache=CacheParameters(negative_ttl_seconds=...)"),
        ("password_cache_ttl_seconds", 0, "cache=CacheParameters(password_ttl_seconds=...)"),
        ("stale_if_error_seconds", 5.0, "cache=CacheParameters(stale_if_error_seconds=...)"),
        ("session_key", KEY, "sessions=SessionParameters(key=...)"),
        ("session_idle_seconds", 60.0, "sessions=SessionParameters(idle_seconds=...)"),
        ("session_max_age_seconds", 600.0, "sessions=SessionParameters(max_age_seconds=...)"),
        ("last_used_flush_seconds", 1.0, "tasks=TaskParameters(last_used_flush_seconds=...)"),
        ("last_used_max_pending", 5, "tasks=TaskParameters(last_used_max_pending=...)"),
        ("invalidation_poll_seconds", 2.0, "tasks=TaskParameters(invalidation_poll_seconds=...)"),
        (
            "invalidation_retention_seconds",
            60.0,
            "tasks=TaskParameters(invalidation_retention_seconds=...)",
        ),
        ("revoke_unused_seconds", 60.0, "tasks=TaskParameters(revoke_unused_seconds=...)"),
        ("listen_url", None, "tasks=TaskParameters(listen_url=...)"),
    ],
)
def test_a_former_flat_keyword_still_works_and_warns_with_its_replacement(
    keyword: str, value: object, replacement: str
) -> None:
    with pytest.warns(DeprecationWarning, match=rf"Authenticator\({keyword}=\.\.\.\)") as caught:
        Authenticator(memory_store(), **{keyword: value}).close()
    # Only ours: a garbage-collected connection may add a ResourceWarning meanwhile.
    ours = [warning for warning in caught if "Authenticator(" in str(warning.message)]
    assert len(ours) == 1
    assert replacement in str(ours[0].message)
    # Attributed to the caller, which is the code to change.
    assert ours[0].filename == __file__


def test_flat_keywords_tune_what_their_groups_tune() -> None:
    clock = FakeClock()
    with pytest.warns(DeprecationWarning, match="is deprecated"):
        uncached = Authenticator(memory_store(), cache_ttl_seconds=0, password_cache_ttl_seconds=0)
    with pytest.warns(DeprecationWarning, match="is deprecated"):
        with_sessions = Authenticator(
            memory_store(clock=clock), clock=clock, session_key=KEY, session_idle_seconds=60
        )
    try:
        assert uncached.cache is None
        assert with_sessions.sessions is not None
        assert with_sessions.sessions.idle_seconds == 60
    finally:
        uncached.close()
        with_sessions.close()


def test_flat_keywords_apply_over_the_groups_given() -> None:
    with pytest.warns(DeprecationWarning, match="is deprecated"):
        auth = Authenticator(
            memory_store(),
            sessions=SessionParameters(KEY, idle_seconds=60, max_age_seconds=600),
            session_idle_seconds=30,
        )
    with auth:
        assert auth.sessions is not None
        assert (auth.sessions.idle_seconds, auth.sessions.max_age_seconds) == (30, 600)


def test_without_a_session_key_there_are_no_sessions_whatever_their_limits() -> None:
    with pytest.warns(DeprecationWarning, match="is deprecated"):
        auth = Authenticator(memory_store(), session_idle_seconds=30)
    with auth:
        assert auth.sessions is None
    with pytest.warns(DeprecationWarning, match="is deprecated"):
        auth = Authenticator(memory_store(), sessions=SessionParameters(KEY), session_key=None)
    with auth:
        assert auth.sessions is None


def test_an_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cache_tll_seconds"):
        Authenticator(memory_store(), cache_tll_seconds=0)


def test_the_groups_warn_of_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Authenticator(
            memory_store(),
            cache=CacheParameters(ttl_seconds=0),
            sessions=SessionParameters(KEY),
            tasks=TaskParameters(last_used_flush_seconds=1.0),
        ).close()


def test_no_sessions_without_session_parameters() -> None:
    with Authenticator(memory_store()) as auth:
        assert auth.sessions is None
        with pytest.raises(SessionError):
            auth.verify_session("anything")


def test_parameters_are_frozen_and_their_repr_holds_no_secret() -> None:
    sessions = SessionParameters(b"k" * 32)
    tasks = TaskParameters(listen_url="postgresql://e6auth:hunter2@db/e6auth")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sessions.idle_seconds = 1  # type: ignore[misc]
    assert "kkkk" not in repr(sessions)
    assert "hunter2" not in repr(tasks)


def test_settings_build_the_groups_they_describe(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        cache_max_entries=7,
        cache_ttl_seconds=11,
        negative_cache_ttl_seconds=2,
        password_cache_ttl_seconds=13,
        stale_if_error_seconds=17,
        session_key="s" * 32,
        session_idle_seconds=19,
        session_max_age_seconds=23,
        last_used_flush_seconds=29,
        last_used_max_pending=31,
        invalidation_poll_seconds=37,
        invalidation_retention_seconds=41,
    )
    assert settings.build_cache_parameters() == CacheParameters(
        max_entries=7,
        ttl_seconds=11,
        negative_ttl_seconds=2,
        password_ttl_seconds=13,
        stale_if_error_seconds=17,
    )
    assert settings.build_session_parameters() == SessionParameters(
        b"s" * 32, idle_seconds=19, max_age_seconds=23
    )
    assert settings.build_task_parameters() == TaskParameters(
        last_used_flush_seconds=29,
        last_used_max_pending=31,
        invalidation_poll_seconds=37,
        invalidation_retention_seconds=41,
        listen_url=None,  # SQLite: nothing to LISTEN to
    )
