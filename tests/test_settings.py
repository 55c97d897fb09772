"""Settings: where each value comes from, what is refused, and that the pepper never shows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from e6auth.credentials.keys import Pepper
from e6auth.credentials.passwords import Argon2Parameters
from e6auth.settings import Settings

PEPPER = "pepper-that-is-long-enough-0123456789"
SHORT_PEPPER = "short-pepper-Xq7"
POSTGRES = "postgresql+psycopg://app:dbpass@db.example:5432/auth"


@pytest.fixture
def home() -> Path:
    """The isolated E6AUTH_HOME that conftest sets for every test."""
    return Path(os.environ["E6AUTH_HOME"])


def _write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults(home: Path) -> None:
    settings = Settings()

    assert settings.home == home
    assert settings.database_url is None
    assert settings.pepper is None
    assert settings.argon2 == Argon2Parameters()
    assert settings.resolved_database_url == f"sqlite:///{home}/e6auth.db"
    assert settings.is_sqlite
    assert settings.migrate_on_first_use is True


def test_home_keyword_moves_the_default_database(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "state")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path}/state/e6auth.db"


def test_migrate_on_first_use_defaults_by_backend() -> None:
    assert Settings(database_url="sqlite:///elsewhere.db").migrate_on_first_use is True
    # A server database is shared: schema changes there are an operator's explicit step.
    assert Settings(database_url=POSTGRES).migrate_on_first_use is False
    assert Settings(database_url=POSTGRES, auto_migrate=True).migrate_on_first_use is True
    assert Settings(auto_migrate=False).migrate_on_first_use is False


def test_precedence_keywords_over_env_over_config_over_defaults(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().argon2_time_cost == 2

    _write_config(home / "config.toml", 'argon2_time_cost = 3\ndatabase_url = "sqlite:///c.db"\n')
    assert Settings().argon2_time_cost == 3
    assert Settings().database_url == "sqlite:///c.db"

    monkeypatch.setenv("E6AUTH_ARGON2_TIME_COST", "4")
    assert Settings().argon2_time_cost == 4
    # A key the environment does not set still comes from the file.
    assert Settings().database_url == "sqlite:///c.db"

    settings = Settings(argon2_time_cost=5)
    assert settings.argon2_time_cost == 5
    assert settings.database_url == "sqlite:///c.db"


def test_config_file_in_a_home_given_as_keyword(tmp_path: Path) -> None:
    _write_config(tmp_path / "config.toml", "argon2_memory_kib = 4096\n")
    assert Settings(home=tmp_path).argon2_memory_kib == 4096


def test_e6auth_config_names_the_file(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(home / "config.toml", "argon2_parallelism = 2\n")
    explicit = _write_config(tmp_path / "elsewhere" / "e6.toml", "argon2_parallelism = 3\n")
    monkeypatch.setenv("E6AUTH_CONFIG", str(explicit))

    assert Settings().argon2_parallelism == 3


def test_env_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E6AUTH_AUTO_MIGRATE", "false")
    monkeypatch.setenv("E6AUTH_DATABASE_URL", POSTGRES)
    monkeypatch.setenv("E6AUTH_PEPPER", PEPPER)

    settings = Settings()
    assert settings.auto_migrate is False
    assert settings.database_url == POSTGRES
    assert settings.pepper is not None
    assert settings.pepper.get_secret_value() == PEPPER


def test_unknown_config_key_is_refused(home: Path) -> None:
    _write_config(home / "config.toml", "argon2_timecost = 3\n")

    with pytest.raises(ValidationError, match="argon2_timecost"):
        Settings()


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(ValidationError, match="databse_url"):
        Settings(databse_url="sqlite://")  # type: ignore[call-arg]


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="argon2_time_cost"):
        Settings(argon2_time_cost=0)
    with pytest.raises(ValidationError, match="argon2_parallelism"):
        Settings(argon2_parallelism=65)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.argon2_time_cost = 1  # type: ignore[misc]


def test_short_pepper_keyword_is_refused_without_showing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(pepper=SHORT_PEPPER)

    assert "pepper" in str(caught.value)
    assert "32 bytes" in str(caught.value)
    assert SHORT_PEPPER not in str(caught.value)
    assert SHORT_PEPPER not in repr(caught.value)


def test_short_pepper_from_env_or_file_is_refused_without_showing_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(home / "config.toml", f'pepper = "{SHORT_PEPPER}"\n')
    with pytest.raises(ValidationError) as from_file:
        Settings()

    monkeypatch.setenv("E6AUTH_PEPPER", SHORT_PEPPER + "-env")
    with pytest.raises(ValidationError) as from_env:
        Settings()

    for caught in (from_file, from_env):
        assert "pepper" in str(caught.value)
        assert SHORT_PEPPER not in str(caught.value)
        assert SHORT_PEPPER not in repr(caught.value)


def test_pepper_length_counts_bytes() -> None:
    # 16 two-byte characters: 32 bytes, the minimum.
    settings = Settings(pepper="é" * 16)
    assert settings.load_peppers().current.key == ("é" * 16).encode()
    with pytest.raises(ValidationError):
        Settings(pepper="x" * 31)


def test_settings_repr_never_contains_the_pepper(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(pepper=PEPPER)

    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(vars(settings))):
        assert PEPPER not in text
    monkeypatch.setenv("E6AUTH_PEPPER", PEPPER)
    assert PEPPER not in repr(Settings())


def test_configured_pepper_is_used_as_given(home: Path) -> None:
    pepper = Settings(pepper=PEPPER).load_peppers().current

    assert isinstance(pepper, Pepper)
    assert pepper.key == PEPPER.encode()
    # A configured pepper is not also written to disk.
    assert not (home / "pepper").exists()


def test_generated_pepper_is_kept_in_home_and_reused(home: Path) -> None:
    first = Settings().load_peppers().current
    second = Settings().load_peppers().current

    assert first.key == second.key
    assert (home / "pepper").is_file()
    assert PEPPER.encode() != first.key


def test_the_pages_allowed_hosts_default_to_the_listening_address_and_localhost() -> None:
    assert Settings().resolved_http_allowed_hosts == ("localhost", "127.0.0.1", "[::1]")
    assert Settings(http_host="10.1.2.3").resolved_http_allowed_hosts == (
        "localhost",
        "127.0.0.1",
        "[::1]",
        "10.1.2.3",
    )
    assert Settings(http_host="::").resolved_http_allowed_hosts[-1] == "[::]"
    configured = Settings(http_allowed_hosts=["Tokens.Example.com", "*.corp.example", "::1"])
    assert configured.resolved_http_allowed_hosts == (
        "tokens.example.com",
        "*.corp.example",
        "[::1]",
    )


@pytest.mark.parametrize(
    "value", ["tokens.example.com, *.corp.example", '["tokens.example.com", "*.corp.example"]']
)
def test_the_pages_allowed_hosts_from_the_environment_are_commas_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("E6AUTH_HTTP_ALLOWED_HOSTS", value)
    assert Settings().http_allowed_hosts == ("tokens.example.com", "*.corp.example")


@pytest.mark.parametrize(
    "host", ["*", "tokens.example.com:8443", "", "a b", "*example.com", "a.*.example", "[nope]"]
)
def test_a_bad_allowed_host_is_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="http_allowed_hosts"):
        Settings(http_allowed_hosts=[host])


def test_the_header_timeout_is_positive() -> None:
    assert Settings().http_header_timeout_seconds == 10
    with pytest.raises(ValidationError):
        Settings(http_header_timeout_seconds=0)


# -- reading the environment and the file ------------------------------------------------------


def test_environment_names_are_not_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("e6auth_cache_ttl_seconds", "7")
    monkeypatch.setenv("E6auth_Argon2_Time_Cost", "3")
    settings = Settings()
    assert settings.cache_ttl_seconds == 7
    assert settings.argon2_time_cost == 3


def test_a_list_setting_from_the_environment_is_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E6AUTH_OIDC_ALGORITHMS", '["ES256", "RS256"]')
    monkeypatch.setenv("E6AUTH_WEB_OIDC_ALLOWED_DOMAINS", '["example.com"]')
    settings = Settings()
    assert settings.oidc_algorithms == ("ES256", "RS256")
    assert settings.web_oidc_allowed_domains == ("example.com",)


def test_a_list_setting_that_is_not_json_is_refused_by_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E6AUTH_OIDC_ALGORITHMS", "ES256")
    with pytest.raises(ValidationError, match="E6AUTH_OIDC_ALGORITHMS"):
        Settings()


def test_variables_that_name_no_setting_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E6AUTH_NO_SUCH_SETTING", "1")
    monkeypatch.setenv("E6AUTH_CONFIG", "/nonexistent/e6auth.toml")  # names the file, no setting
    assert Settings().cache_ttl_seconds == 60


def test_where_each_value_came_from_counts_as_set(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(home / "config.toml", "argon2_time_cost = 3\n")
    monkeypatch.setenv("E6AUTH_CACHE_TTL_SECONDS", "7")
    settings = Settings(audit=False)
    # E6AUTH_HOME: conftest's isolated home.
    assert settings.model_fields_set == {"argon2_time_cost", "cache_ttl_seconds", "audit", "home"}
    # A copy is what it copies: it reads no source again.
    monkeypatch.setenv("E6AUTH_CACHE_TTL_SECONDS", "8")
    assert settings.model_copy(update={"audit": True}).cache_ttl_seconds == 7


def test_a_config_file_under_the_home_folder_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _write_config(tmp_path / "e6.toml", "argon2_parallelism = 3\n")
    monkeypatch.setenv("E6AUTH_CONFIG", "~/e6.toml")
    assert Settings().argon2_parallelism == 3


def test_a_config_file_that_is_not_toml_is_refused(home: Path) -> None:
    _write_config(home / "config.toml", "argon2_parallelism = \n")
    with pytest.raises(ValueError, match="line 1"):  # where the file says what
        Settings()


@pytest.mark.parametrize(
    "name",
    [
        "DATABASE_FILE",
        "ENV_PREFIX",
        "LOCAL_HOST_NAMES",
        "NoDecode",
        "PEPPER_FILE",
        "QUERY_DATABASE_FILE",
        "SESSION_KEY_FILE",
        "Settings",
        "default_home",
        "safe_url",
    ],
)
def test_the_names_of_the_former_settings_module_are_still_importable_from_it(name: str) -> None:
    # e6auth.settings was one module; its callers (the store, the web page) import these from it.
    import e6auth.settings

    assert getattr(e6auth.settings, name) is not None
