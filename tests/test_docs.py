"""The documentation cannot rot: the configuration reference matches the code, the examples run
against real servers, and every local link in the docs points at something that exists."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from processes import Lines, stop_process

from e6auth import Authenticator, InvalidTokenSecret, Settings, TokenStore
from e6auth.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the configuration reference ------------------------------------------------------------


def test_configuration_reference_is_what_the_code_says() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_notices_a_stale_reference() -> None:
    tool = _load(ROOT / "tools" / "config_reference.py")
    document = (DOCS / "configuration.md").read_text(encoding="utf-8")
    stale = document.replace("`E6AUTH_CACHE_TTL_SECONDS` | float ≥ 0 | `60`", "`E6AUTH_X` | 1")
    assert stale != document
    assert tool.with_reference(stale) == document


def test_every_setting_and_every_flag_is_in_the_reference() -> None:
    from e6auth import cli

    document = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for name in Settings.setting_fields:
        assert f"| `{name}` | `E6AUTH_{name.upper()}` |" in document, name
    pending = [cli._parser()]
    while pending:
        parser = pending.pop()
        for action in parser._actions:
            for option in action.option_strings:
                assert f"`{option}`" in document, option
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())


# -- links ------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)#\s]+)(?:#([^)\s]*))?\)")
_HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)


def _anchors(document: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = _HEADING.findall(document.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def _markdown_files() -> Iterator[Path]:
    yield ROOT / "README.md"
    yield ROOT / "CHANGELOG.md"
    yield ROOT / "benchmarks" / "README.md"
    yield from sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("document", list(_markdown_files()), ids=lambda path: path.name)
def test_local_links_resolve(document: Path) -> None:
    for target, anchor in _LINK.findall(document.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        path = document.parent / target
        assert path.exists(), f"{document.name} links to missing {target}"
        if anchor:
            assert anchor in _anchors(path), f"{document.name} links to missing {target}#{anchor}"


def test_readme_is_a_front_door_that_starts_with_the_two_commands_and_lists_the_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) < 8 * 1024, "the README is a front door: reference goes to docs/"
    first_block = readme.index("```sh")
    assert readme.index("e6auth serve --demo") < readme.index("## Documentation")
    assert readme.index("python3 -m pytest") < readme.index("## Documentation")
    assert first_block < readme.index("## ")  # the two commands come before any section
    for page in sorted(DOCS.glob("*.md")):
        assert f"](docs/{page.name})" in readme, page.name


# -- claims of the operations guide ----------------------------------------------------------


def test_a_pepper_file_pasted_into_the_environment_is_another_key(tmp_path: Path) -> None:
    """docs/operations.md warns that a key file holds base64 text whose decoded bytes are the key,
    while E6AUTH_PEPPER is used as it is: moving one into the other changes the key."""
    from_file = Settings(home=tmp_path, auto_migrate=True)
    maker = TokenStore.from_settings(from_file)
    try:
        maker.create_user("robot")
        new = maker.create_token("robot")
    finally:
        maker.close()
    pasted = (tmp_path / "pepper").read_text(encoding="ascii").strip()
    with Authenticator.from_settings(from_file) as same:
        assert same.verify_token(new.token).username == "robot"
    pasted_settings = Settings(home=tmp_path, pepper=pasted)
    with (
        Authenticator.from_settings(pasted_settings) as other,
        pytest.raises(InvalidTokenSecret),
    ):
        other.verify_token(new.token)


# -- the integration examples, against real servers -------------------------------------------


@pytest.fixture
def authenticator(store: TokenStore, clock: FakeClock) -> Iterator[Authenticator]:
    auth = Authenticator(store, clock=clock)
    yield auth
    auth.close()


def _details(call: Callable[[], object]) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    return error.code(), error.details()


def test_sync_example_authenticates_every_call(
    authenticator: Authenticator, store: TokenStore
) -> None:
    example = _load(EXAMPLES / "grpc_service.py")
    store.create_user("alice@example.com")
    new = store.create_token("alice@example.com", comment="example")
    server, port = example.build_server(authenticator, "127.0.0.1:0")
    target = f"127.0.0.1:{port}"
    try:
        assert example.call_hello(target, new.token) == f"hello alice@example.com (token {new.id})"
        assert _details(lambda: example.call_hello(target, None)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "authentication required",
        )
        forged = new.token[:-20] + "A" * 20
        assert _details(lambda: example.call_hello(target, forged)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "invalid credentials",
        )
        with grpc.insecure_channel(target) as channel:
            ping: grpc.UnaryUnaryMultiCallable[bytes, bytes]
            ping = channel.unary_unary("/example.Greeter/Ping")
            assert ping(b"", timeout=10) == b"pong"
        store.delete_tokens([new.id])
        assert _details(lambda: example.call_hello(target, new.token)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "token revoked",
        )
    finally:
        server.stop(None).wait()


def test_aio_example_authenticates_every_call(
    authenticator: Authenticator, store: TokenStore
) -> None:
    example = _load(EXAMPLES / "aio_service.py")
    store.create_user("alice@example.com")
    new = store.create_token("alice@example.com", comment="example")

    async def scenario() -> None:
        server, port = await example.start_server(authenticator, "127.0.0.1:0")
        target = f"127.0.0.1:{port}"
        try:
            hello = await example.call_hello(target, new.token)
            assert hello == f"hello alice@example.com (token {new.id})"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await example.call_hello(target, None)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert caught.value.details() == "authentication required"
            store.delete_tokens([new.id])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await example.call_hello(target, new.token)
            assert caught.value.details() == "token revoked"
        finally:
            await server.stop(None)

    asyncio.run(scenario())


@pytest.mark.timeout(90)
@pytest.mark.parametrize("script", ["grpc_service.py", "aio_service.py"])
def test_examples_run_as_programs_on_the_commands_settings(
    script: str, store_url: str, tmp_path: Path
) -> None:
    """What the integration guide tells a reader to run: the example's own main, configured like
    the `e6auth` command, serving a token made by another process on the same store."""
    settings = Settings(home=tmp_path, database_url=store_url, auto_migrate=True)
    maker = TokenStore.from_settings(settings)
    try:
        maker.create_user("robot")
        new = maker.create_token("robot", comment="example")
    finally:
        maker.close()
    environment = {
        **os.environ,
        "E6AUTH_HOME": str(tmp_path),
        "E6AUTH_DATABASE_URL": store_url,
    }
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        output = Lines(process.stdout)  # type: ignore[arg-type]
        errors = Lines(process.stderr)  # type: ignore[arg-type]
        line = output.next(timeout=30)
        assert line is not None, errors.text
        assert line.startswith("serving example.Greeter on "), output.text + errors.text
        target = line.rsplit(" ", 1)[1]
        example = _load(EXAMPLES / "grpc_service.py")
        assert example.call_hello(target, new.token) == f"hello robot (token {new.id})"
        assert _details(lambda: example.call_hello(target, "e6pat_nonsense"))[0] == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    finally:
        assert stop_process(process) == 0, errors.text
