"""Settings: where each value comes from, what is refused, and that the pepper never shows."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from e6auth.credentials.keys import Pepper
from e6auth.credentials.passwords import Argon2Parameters
from e6auth.errors import SettingsError
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

    with pytest.raises(SettingsError, match="argon2_timecost"):
        Settings()


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(SettingsError, match="databse_url"):
        Settings(databse_url="sqlite://")  # type: ignore[call-arg]


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(SettingsError, match="argon2_time_cost"):
        Settings(argon2_time_cost=0)
    with pytest.raises(SettingsError, match="argon2_parallelism"):
        Settings(argon2_parallelism=65)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError, match="argon2_time_cost"):
        settings.argon2_time_cost = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del settings.audit


def test_short_pepper_keyword_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(pepper=SHORT_PEPPER)

    assert "pepper" in str(caught.value)
    assert "32 bytes" in str(caught.value)
    assert SHORT_PEPPER not in str(caught.value)
    assert SHORT_PEPPER not in repr(caught.value)


def test_short_pepper_from_env_or_file_is_refused_without_showing_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(home / "config.toml", f'pepper = "{SHORT_PEPPER}"\n')
    with pytest.raises(SettingsError) as from_file:
        Settings()

    monkeypatch.setenv("E6AUTH_PEPPER", SHORT_PEPPER + "-env")
    with pytest.raises(SettingsError) as from_env:
        Settings()

    for caught in (from_file, from_env):
        assert "pepper" in str(caught.value)
        assert SHORT_PEPPER not in str(caught.value)
        assert SHORT_PEPPER not in repr(caught.value)


def test_pepper_length_counts_bytes() -> None:
    # 16 two-byte characters: 32 bytes, the minimum.
    settings = Settings(pepper="é" * 16)
    assert settings.load_peppers().current.key == ("é" * 16).encode()
    with pytest.raises(SettingsError):
        Settings(pepper="x" * 31)


def test_settings_repr_never_contains_the_pepper(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(pepper=PEPPER)

    for text in (repr(settings), str(settings), repr(vars(settings))):
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
    with pytest.raises(SettingsError, match="http_allowed_hosts"):
        Settings(http_allowed_hosts=[host])


def test_the_header_timeout_is_positive() -> None:
    assert Settings().http_header_timeout_seconds == 10
    with pytest.raises(SettingsError):
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
    with pytest.raises(SettingsError, match="E6AUTH_OIDC_ALGORITHMS"):
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
    assert settings.given == {"argon2_time_cost", "cache_ttl_seconds", "audit", "home"}
    # A copy is what it copies: it reads no source again.
    monkeypatch.setenv("E6AUTH_CACHE_TTL_SECONDS", "8")
    assert settings.replace(audit=True).cache_ttl_seconds == 7


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


# -- values as the environment and the file give them --------------------------------------------


@pytest.mark.parametrize("text", ["true", "True", "TRUE", "1", "yes", "Yes", "on", "ON", "t", "y"])
def test_a_true_boolean_from_the_environment(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("E6AUTH_AUDIT", "false")
    monkeypatch.setenv("E6AUTH_WEB_OIDC_CREATE_USERS", text)
    assert Settings().web_oidc_create_users is True


@pytest.mark.parametrize("text", ["false", "False", "0", "no", "NO", "off", "Off", "f", "n"])
def test_a_false_boolean_from_the_environment(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("E6AUTH_AUDIT", text)
    assert Settings().audit is False


@pytest.mark.parametrize("value", ["perhaps", "2", "", 2, 0.5])
def test_a_boolean_that_is_none_is_refused(monkeypatch: pytest.MonkeyPatch, value: object) -> None:
    with pytest.raises(SettingsError, match="audit: must be true or false"):
        Settings(audit=value)  # type: ignore[arg-type]


def test_an_integer_from_the_environment_or_a_whole_float(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E6AUTH_ARGON2_TIME_COST", " 3 ")
    assert Settings().argon2_time_cost == 3
    settings = Settings(argon2_time_cost=4.0)  # type: ignore[arg-type]
    assert settings.argon2_time_cost == 4
    assert type(settings.argon2_time_cost) is int


@pytest.mark.parametrize("value", ["1.5", 2.5, "three", True, [3]])
def test_an_integer_with_a_fraction_or_none_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: object
) -> None:
    with pytest.raises(SettingsError, match="argon2_time_cost: must be an integer"):
        Settings(argon2_time_cost=value)  # type: ignore[arg-type]
    if isinstance(value, str):
        monkeypatch.setenv("E6AUTH_ARGON2_TIME_COST", value)
        with pytest.raises(SettingsError, match="argon2_time_cost"):
            Settings()


def test_a_float_from_text_or_an_integer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E6AUTH_CACHE_TTL_SECONDS", "2.5")
    assert Settings().cache_ttl_seconds == 2.5
    settings = Settings(cache_ttl_seconds=3)
    assert settings.cache_ttl_seconds == 3
    assert type(settings.cache_ttl_seconds) is float
    with pytest.raises(SettingsError, match="cache_ttl_seconds: must be a number"):
        Settings(cache_ttl_seconds="soon")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"port": 65536}, "port: must be at most 65535"),
        ({"port": -1}, "port: must be at least 0"),
        ({"invalidation_poll_seconds": 0}, "invalidation_poll_seconds: must be greater than 0"),
        ({"oidc_leeway_seconds": float("nan")}, "oidc_leeway_seconds: must be at least 0"),
        ({"argon2_max_concurrent": 0}, "argon2_max_concurrent: must be at least 1"),
    ],
)
def test_bounds(keywords: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings(**keywords)  # type: ignore[arg-type]


def test_a_bound_does_not_apply_to_none() -> None:
    assert Settings(argon2_max_concurrent=None).argon2_max_concurrent is None


def test_log_names_in_any_case_other_choices_exactly() -> None:
    settings = Settings(log_level="debug", log_format="JSON")  # type: ignore[arg-type]
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    with pytest.raises(SettingsError, match="web_oidc_token_auth_method: must be one of"):
        Settings(web_oidc_token_auth_method="CLIENT_SECRET_POST")  # type: ignore[arg-type]


def test_a_string_setting_takes_text_only() -> None:
    with pytest.raises(SettingsError, match="catalog: must be text"):
        Settings(catalog=7)  # type: ignore[arg-type]


def test_a_path_from_text(tmp_path: Path) -> None:
    settings = Settings(tls_cert=str(tmp_path / "cert.pem"))  # type: ignore[arg-type]
    assert settings.tls_cert == tmp_path / "cert.pem"
    with pytest.raises(SettingsError, match="tls_cert: must be a path"):
        Settings(tls_cert=3)  # type: ignore[arg-type]


def test_a_list_setting_takes_a_list_of_text_not_text(home: Path) -> None:
    assert Settings(web_oidc_allowed_domains=["a.example"]).web_oidc_allowed_domains == (  # type: ignore[arg-type]
        "a.example",
    )
    for refused in ("a.example", ["a.example", 3]):
        with pytest.raises(SettingsError, match="web_oidc_allowed_domains: must be a list"):
            Settings(web_oidc_allowed_domains=refused)  # type: ignore[arg-type]
    _write_config(home / "config.toml", 'oidc_algorithms = ["ES256"]\n')
    assert Settings().oidc_algorithms == ("ES256",)


def test_every_refusal_of_one_construction_is_reported_together(home: Path) -> None:
    _write_config(home / "config.toml", "argon2_timecost = 3\n")
    with pytest.raises(SettingsError) as caught:
        Settings(port=70_000, log_level="loud", pepper=SHORT_PEPPER, audit="perhaps")  # type: ignore[arg-type]

    names = [name for name, _message in caught.value.errors]
    assert sorted(names) == ["argon2_timecost", "audit", "log_level", "pepper", "port"]
    for name in names:
        assert f"\n  {name}: " in str(caught.value)
    assert SHORT_PEPPER not in str(caught.value) + repr(caught.value)


def test_a_refused_secret_shows_neither_in_the_error_nor_its_repr() -> None:
    for keywords in ({"pepper": SHORT_PEPPER}, {"session_key": SHORT_PEPPER}):
        with pytest.raises(SettingsError) as caught:
            Settings(**keywords)  # type: ignore[arg-type]
        assert SHORT_PEPPER not in str(caught.value) + repr(caught.value)
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None
    # A text refused for its type is not quoted either, whatever setting it was meant for.
    with pytest.raises(SettingsError) as caught:
        Settings(port=SHORT_PEPPER, log_level=SHORT_PEPPER)  # type: ignore[arg-type]
    assert SHORT_PEPPER not in str(caught.value) + repr(caught.value)


def test_the_settings_error_is_a_value_error_and_an_e6auth_error() -> None:
    from e6auth.errors import E6AuthError

    with pytest.raises(SettingsError) as caught:
        Settings(port=-1)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, E6AuthError)
    assert caught.value.errors == (("port", "must be at least 0"),)


def test_the_settings_that_need_each_other_are_checked_after_the_values() -> None:
    with pytest.raises(SettingsError, match="oidc_issuer needs oidc_audience"):
        Settings(oidc_issuer="https://issuer.example")


def test_secrets_and_database_passwords_are_masked_in_the_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(pepper=PEPPER, database_url=POSTGRES, query_url=POSTGRES)  # type: ignore[arg-type]
    text = repr(settings)
    assert "dbpass" not in text
    assert "pepper=SecretStr('**********')" in text
    assert "database_url='postgresql+psycopg://app:***@db.example:5432/auth'" in text
    assert settings.database_url == POSTGRES
    assert str(settings.pepper) == "**********"


def test_equal_settings_are_equal() -> None:
    assert Settings(pepper=PEPPER) == Settings(pepper=PEPPER)  # type: ignore[arg-type]
    assert Settings(pepper=PEPPER) != Settings(pepper=PEPPER + "x")  # type: ignore[arg-type]
    assert hash(Settings(audit=False)) == hash(Settings(audit=False))


def test_every_default_passes_its_own_checks() -> None:
    # The defaults are not checked when a Settings is built (that would load the parts whose
    # checks they are): given back as values, they must pass.
    defaults = Settings()
    given = {name: getattr(defaults, name) for name in Settings.setting_fields}
    assert Settings(**given) == defaults


def test_a_copy_checks_its_changes_and_counts_them_as_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(audit=False)
    changed = settings.replace(port=0, log_level="info")  # type: ignore[arg-type]
    assert (changed.port, changed.log_level, changed.audit) == (0, "INFO", False)
    assert changed.given == settings.given | {"port", "log_level"}
    assert settings.port == 50051
    with pytest.raises(SettingsError, match="port: must be at most 65535"):
        settings.replace(port=70_000)
    with pytest.raises(SettingsError, match="prot"):
        settings.replace(prot=1)
    with pytest.raises(SettingsError, match="query_role needs a PostgreSQL query_url"):
        settings.replace(query_role="e6_{username}")
