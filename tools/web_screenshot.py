"""Take the README's screenshot of the Access Tokens page: docs/img/tokens-page.png.

    python tools/web_screenshot.py [--output docs/img/tokens-page.png]

Makes demo users and tokens in a temporary state folder (none of them real: the folder, its keys
and the tokens are thrown away), starts ``e6auth serve --http-port 0`` on it, signs in as an
administrator in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) and
screenshots the list. No token secret is on the list page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from e6auth import Settings, TokenStore
from e6auth.store import TokenUse

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
E6AUTH = str(Path(sysconfig.get_path("scripts")) / "e6auth")
PAGE_LINE = re.compile(r"^e6auth Access Tokens page on (?P<url>\S+)$")
ADMIN = "maria@example.com"
START_SECONDS = 20.0


def make_demo_data(home: Path, password: str) -> None:
    """Three users and their tokens as a team might have them: some used, one rotated, one
    expired, one deleted, one restricted."""
    now = dt.datetime.now(dt.UTC)
    settings = Settings(home=home)
    behind = TokenStore.from_settings(settings, clock=lambda: time.time() - 40 * 86_400)
    try:
        behind.create_user(ADMIN, password, admin=True)
        behind.create_user("li.wei@example.com", secrets.token_urlsafe(16))
        behind.create_user("airflow-prod", None)
        old_laptop = behind.create_token(ADMIN, comment="old laptop", expires_days=30)
        behind.create_token("airflow-prod", comment="nightly DAGs", expires_days=365)
    finally:
        behind.close()
    # The tokens in use were made days ago, so that no use comes before its token was made.
    recent = TokenStore.from_settings(settings, clock=lambda: time.time() - 5 * 86_400)
    try:
        made = {
            "laptop": recent.create_token(ADMIN, comment="laptop (DBeaver)", expires_days=90),
            "notebook": recent.create_token(ADMIN, comment="Jupyter notebook"),
            "dbt": recent.create_token("li.wei@example.com", comment="dbt CI", expires_days=30),
            "superset": recent.create_token(
                "li.wei@example.com",
                comment="Superset dashboards",
                read_only=True,
                allow_from=["10.20.0.0/16"],
            ),
            "scratch": recent.create_token("li.wei@example.com", comment="scratch"),
        }
    finally:
        recent.close()
    store = TokenStore.from_settings(settings)
    try:
        airflow = [t for t in store.list_tokens("airflow-prod") if t.comment == "nightly DAGs"]
        store.rotate_token(airflow[0].id, grace=dt.timedelta(hours=24))
        store.delete_tokens([made["scratch"].id])
        store.record_token_uses(
            {
                made["laptop"].id: TokenUse(now - dt.timedelta(minutes=7), ("10.20.4.17",)),
                made["dbt"].id: TokenUse(now - dt.timedelta(hours=3), ("10.20.9.2",)),
                made["superset"].id: TokenUse(now - dt.timedelta(minutes=1), ("10.20.1.5",)),
                airflow[0].id: TokenUse(now - dt.timedelta(hours=9), ("10.20.7.30",)),
                old_laptop.id: TokenUse(now - dt.timedelta(days=12), ("192.0.2.44",)),
            }
        )
    finally:
        store.close()


def page_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + START_SECONDS
    for line in process.stdout:
        found = PAGE_LINE.match(line.strip())
        if found:
            return found["url"]
        if time.monotonic() > deadline:
            break
    raise SystemExit("e6auth serve did not print the page's address")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "img" / "tokens-page.png")
    args = parser.parse_args()
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="e6auth-screenshot-") as folder:
        home = Path(folder)
        make_demo_data(home, password)
        env = {k: v for k, v in os.environ.items() if not k.startswith("E6AUTH_")}
        process = subprocess.Popen(  # noqa: S603 (our own e6auth command, fixed arguments)
            [E6AUTH, "serve", "--port", "0", "--http-port", "0"],
            env={**env, "E6AUTH_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            url = page_url(process)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 560})
                page.goto(url + "signin")
                page.fill("#username", ADMIN)
                page.fill("#password", password)
                page.click("button:has-text('Sign in')")
                page.wait_for_url("**/tokens")
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output), full_page=True)
                browser.close()
        finally:
            process.terminate()
            process.wait(30)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
