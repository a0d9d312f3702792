"""The operator console at `/`, against a real `aperio serve` (a subprocess on 127.0.0.1) with the three
example plugins built by their own backend, signed, and loaded by a strict host.

In headless Chromium (Debian's `chromium`, driven by Playwright; never a downloaded browser): sign in,
see the plugins, disable one, see it disabled, enable and reload it, sign out; a read-only token sees the
table without buttons. Over HTTP: forms without or with a wrong CSRF token, a forged POST of a read-only
session, a bad token and a revoked one are refused, and the refused change did not happen.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_process import ServeProcess, run_aperio

from aperio_plugins._state import SQLiteStateStore
from aperio_plugins.api import ALL_PERMISSIONS, Permission, Tokens
from aperio_plugins.testing import generate_signing_key, install_wheels, sign_wheel_with_key

EXAMPLES = Path(__file__).resolve().parents[2] / "example_plugins"
EXAMPLE_IDS = ("aperio.box-connector", "aperio.box-remediation", "aperio.splunk-hec")
# The screenshot in the docs is refreshed only on request, so that a test run leaves the checkout unchanged.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
UPDATE_SCREENSHOT = os.environ.get("APERIO_UPDATE_CONSOLE_SCREENSHOT") == "1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (scripts/quickstart.sh installs Debian's chromium as root)"
)


def _environment_without_examples(root: Path) -> dict[str, str]:
    """This interpreter's import path without the example plugins that quickstart installs into .venv, so that
    the server finds them only in its plugins directory (as in tests/integration/test_example_plugins.py)."""
    site = Path(sysconfig.get_paths()["purelib"])
    clean = root / "site-without-examples"
    clean.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(("aperio_box_", "aperio_splunk_")):
            (clean / entry.name).symlink_to(entry)
    editable = [line for pth in sorted(site.glob("_editable_impl_aperio_*.pth")) for line in pth.read_text().split()]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(clean), *editable])}


# The CLI under `python -S`, so that the server's import path is the environment's PYTHONPATH alone.
CLI_WITHOUT_SITE = (sys.executable, "-S", "-c", "from aperio_plugins.cli import main; main()")


class Console:
    """The served console, its tokens, and an API client to check what the console did."""

    def __init__(self, server: ServeProcess, tokens: dict[str, str], state_dir: Path) -> None:
        self.server = server
        self.url = server.url
        self.token = tokens
        self.state_dir = state_dir
        self.clients: list[httpx.Client] = []
        self.api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=30)

    def states(self) -> dict[str, str]:
        return {plugin["id"]: plugin["state"] for plugin in self.api.get("/api/v1/plugins").json()}

    def events(self, **filters: str) -> list[dict]:
        return self.api.get("/api/v1/events", params={**filters, "limit": 100}).json()["events"]

    def signed_in(self, who: str) -> tuple[httpx.Client, str]:
        """An HTTP client signed in to the console as `who`, and its session's CSRF token."""
        client = httpx.Client(base_url=self.url, timeout=30)
        self.clients.append(client)
        csrf = CSRF.search(client.get("/").text).group(1)
        answer = client.post("/console/sign-in", data={"csrf": csrf, "token": self.token[who]})
        assert answer.status_code == 303
        page = client.get("/")
        assert page.status_code == 200
        return client, CSRF.search(page.text).group(1)


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("console")
    wheels_dir = root / "wheels"
    folders = [str(EXAMPLES / name) for name in ("box-connector", "box-remediation", "splunk-hec")]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels_dir),
            *folders,
        ],
        check=True,
    )
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    private_key, public_key = generate_signing_key(root / "author", "example-author")
    shutil.copy(public_key, keys)
    plugins_dir = root / "plugins"
    plugins_dir.mkdir()
    install_wheels(
        [sign_wheel_with_key(wheel, private_key) for wheel in sorted(wheels_dir.glob("*.whl"))], target=plugins_dir
    )
    state_dir = root / "state"
    store = SQLiteStateStore.in_directory(state_dir)
    try:
        tokens = Tokens(store)
        secrets = {
            "admin": tokens.create("ops-admin", ALL_PERMISSIONS).token,
            "reader": tokens.create("ops-reader", [Permission.READ]).token,
            "runner": tokens.create("ops-runner", [Permission.EXECUTE]).token,
            "revoked": tokens.create("ops-leaver", ALL_PERMISSIONS).token,
        }
    finally:
        store.close()
    environment = {
        **_environment_without_examples(root),
        "APERIO_PLUGINS_DIR": str(plugins_dir),
        "APERIO_STATE_DIR": str(state_dir),
        "APERIO_PLUGIN_TRUST_MODE": "strict",
        "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(keys),
        "APERIO_PLUGIN_TRUSTED_IDENTITIES": str(root / "trusted-identities.toml"),
    }
    server = ServeProcess(environment, command=CLI_WITHOUT_SITE)
    served = Console(server, secrets, state_dir)
    try:
        yield served
    finally:
        for client in [served.api, *served.clients]:
            client.close()
        assert server.stop() == 0
    output = server.output
    assert not [name for name, secret in secrets.items() if secret in output]  # no token in the server's log


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # As root (CI), Chromium's own sandbox cannot start; the page is our own console on 127.0.0.1.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield launched
        finally:
            launched.close()


def _row(page, plugin_id: str):
    return page.locator(f'#plugins tr[data-plugin="{plugin_id}"]')


@needs_chromium
def test_console_in_chromium_sign_in_disable_enable_reload_sign_out(console, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1440, "height": 720})
    page = context.new_page()
    page.goto(console.url + "/")
    assert page.locator("h1").inner_text() == "aperio console"

    page.fill("#token", "aperio_not-a-real-token")
    page.click("button[type=submit]")
    assert page.get_by_role("alert").inner_text() == "That token was not accepted."
    assert page.locator("#plugins").count() == 0

    page.fill("#token", console.token["admin"])
    page.click("button[type=submit]")
    assert page.locator("#principal").inner_text() == "ops-admin"
    rows = page.locator("#plugins tbody tr")
    assert sorted(rows.evaluate_all("rows => rows.map(row => row.dataset.plugin)")) == list(EXAMPLE_IDS)
    for plugin_id in EXAMPLE_IDS:
        assert _row(page, plugin_id).locator("[data-field=state]").inner_text() == "enabled"
        assert "verified" in _row(page, plugin_id).inner_text()
    cookies = context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("aperio_console", True, "Strict")]
    assert console.token["admin"] not in cookies[0]["value"]

    _row(page, "aperio.splunk-hec").get_by_role("button", name="disable").click()
    assert _row(page, "aperio.splunk-hec").locator("[data-field=state]").inner_text() == "disabled"
    assert page.get_by_role("status").inner_text() == "disable of aperio.splunk-hec: now disabled"
    assert console.states()["aperio.splunk-hec"] == "disabled"
    assert _row(page, "aperio.splunk-hec").get_by_role("button", name="disable").count() == 0
    assert "api.plugin.disable" in page.locator("#events").inner_text()

    shot = page.screenshot(path=str(SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "console.png"), full_page=True)
    assert shot.startswith(b"\x89PNG")

    _row(page, "aperio.splunk-hec").get_by_role("button", name="enable").click()
    assert _row(page, "aperio.splunk-hec").locator("[data-field=state]").inner_text() == "enabled"
    _row(page, "aperio.box-connector").get_by_role("button", name="reload").click()
    assert page.get_by_role("status").inner_text() == "reload of aperio.box-connector: now enabled"
    assert console.states() == dict.fromkeys(EXAMPLE_IDS, "enabled")
    # The console audits exactly as the API does: the API's event, with the token's name as actor.
    done = {(e["event"], e["plugin_id"]) for e in console.events(actor="ops-admin")}
    assert {
        ("api.plugin.disable", "aperio.splunk-hec"),
        ("api.plugin.enable", "aperio.splunk-hec"),
        ("api.plugin.reload", "aperio.box-connector"),
        ("console.sign_in", None),
    } <= done

    page.get_by_role("button", name="Sign out").click()
    assert page.locator("#token").count() == 1
    assert [c["name"] for c in context.cookies() if c["value"]] in ([], ["aperio_console"])
    page.goto(console.url + "/")
    assert page.locator("#plugins").count() == 0
    assert ("console.sign_out", None) in {(e["event"], e["plugin_id"]) for e in console.events(actor="ops-admin")}
    context.close()


@needs_chromium
def test_read_only_token_sees_the_table_but_no_buttons(console, browser):
    page = browser.new_page()
    page.goto(console.url + "/")
    page.fill("#token", console.token["reader"])
    page.click("button[type=submit]")
    assert page.locator("#principal").inner_text() == "ops-reader"
    assert page.locator("#plugins tbody tr").count() == 3
    assert page.locator("#plugins form").count() == 0
    assert page.locator("#plugins").get_by_role("button").count() == 0
    assert "no plugins:admin permission" in page.content()


def test_form_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(console):
    client, csrf = console.signed_in("admin")
    for form in ({}, {"csrf": "forged"}, {"csrf": csrf[:-1]}):
        refused = client.post("/console/plugins/aperio.box-remediation/disable", data=form)
        assert refused.status_code == 403
        assert "did not come from this console session" in refused.text
    assert console.states()["aperio.box-remediation"] == "enabled"
    refusals = [e for e in console.events(event="console.csrf.refused") if e["actor"] == "ops-admin"]
    assert len(refusals) == 3
    # Another session's CSRF token does not fit this one.
    _, other_csrf = console.signed_in("admin")
    assert client.post("/console/plugins/aperio.box-remediation/disable", data={"csrf": other_csrf}).status_code == 403
    assert console.states()["aperio.box-remediation"] == "enabled"
    # Nor can a forged form sign the session out.
    assert client.post("/console/sign-out", data={"csrf": "forged"}).status_code == 403
    assert 'id="plugins"' in client.get("/").text
    assert console.events(event="console.csrf.refused")[0]["fields"]["route"] == "POST /console/sign-out"
    assert console.events(event="console.csrf.refused")[0]["actor"] == "ops-admin"
    # The accepted path: the session's own token.
    accepted = client.post("/console/plugins/aperio.box-remediation/disable", data={"csrf": csrf})
    assert (accepted.status_code, accepted.headers["location"]) == (303, "/")
    assert console.states()["aperio.box-remediation"] == "disabled"
    assert client.post("/console/plugins/aperio.box-remediation/enable", data={"csrf": csrf}).status_code == 303
    assert console.states()["aperio.box-remediation"] == "enabled"


def test_read_only_sessions_forged_post_is_refused_server_side(console):
    client, csrf = console.signed_in("reader")
    refused = client.post("/console/plugins/aperio.box-connector/disable", data={"csrf": csrf})
    assert refused.status_code == 403
    assert "does not have the permission plugins:admin" in refused.text
    assert console.states()["aperio.box-connector"] == "enabled"
    audited = console.events(actor="ops-reader", event="api.auth.refused")
    assert audited[0]["fields"]["route"] == "POST /console/plugins/aperio.box-connector/disable"
    assert audited[0]["fields"]["outcome"] == "403"


def test_a_token_without_read_sees_nothing(console):
    with httpx.Client(base_url=console.url, timeout=30) as client:
        csrf = CSRF.search(client.get("/").text).group(1)
        assert client.post("/console/sign-in", data={"csrf": csrf, "token": console.token["runner"]}).status_code == 303
        page = client.get("/")
        assert page.status_code == 403
        assert "does not have the permission plugins:read" in page.text
        assert "aperio.box-connector" not in page.text


def test_sign_in_refuses_a_bad_token_and_a_form_without_csrf(console):
    with httpx.Client(base_url=console.url, timeout=30) as client:
        first = client.get("/")
        assert first.status_code == 200
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "secure" not in cookie  # plain http on 127.0.0.1; over https the cookie is Secure and __Host-
        assert "default-src 'none'" in first.headers["content-security-policy"]
        csrf = CSRF.search(first.text).group(1)
        for token in ("aperio_guess", "", "x" * 300):
            bad = client.post("/console/sign-in", data={"csrf": csrf, "token": token})
            assert bad.status_code == 401
            assert "That token was not accepted." in bad.text
        assert client.get("/").text.count('id="plugins"') == 0
        no_csrf = client.post("/console/sign-in", data={"token": console.token["admin"]})
        assert no_csrf.status_code == 403
        assert 'id="plugins"' not in client.get("/").text
        # No session at all (a cross-site POST: SameSite=Strict sends no cookie) is not signed in.
        with httpx.Client(base_url=console.url, timeout=30) as stranger:
            refused = stranger.post("/console/plugins/aperio.box-connector/disable", data={"csrf": csrf})
            assert (refused.status_code, "Sign in to the console" in refused.text) == (401, True)
        assert console.states()["aperio.box-connector"] == "enabled"
        assert console.events(event="api.auth.refused")[0]["fields"]["reason"] == "not signed in to the console"
        assert (
            client.post("/console/sign-in", data={"csrf": csrf}, headers={"content-type": "text/plain"}).status_code
            == 415
        )


def test_a_revoked_token_ends_its_console_session(console):
    client, csrf = console.signed_in("revoked")
    environment = {**os.environ, "APERIO_STATE_DIR": str(console.state_dir)}
    revoked = run_aperio(environment, "token", "revoke", "ops-leaver")
    assert revoked.returncode == 0, revoked.stderr
    refused = client.post("/console/plugins/aperio.box-connector/disable", data={"csrf": csrf})
    assert refused.status_code == 401
    assert console.states()["aperio.box-connector"] == "enabled"
    assert 'id="token"' in client.get("/").text


def test_an_unknown_plugin_is_reported_on_the_page_escaped(console):
    client, csrf = console.signed_in("admin")
    answer = client.post("/console/plugins/<b>nope/reload", data={"csrf": csrf})
    assert (answer.status_code, answer.headers["location"]) == (303, "/")
    page = client.get("/").text
    assert "no plugin with id &#39;&lt;b&gt;nope&#39;" in page
    assert "<b>nope" not in page
    assert console.states() == dict.fromkeys(EXAMPLE_IDS, "enabled")
    audited = console.events(actor="ops-admin", event="api.plugin.reload")
    assert audited[0]["plugin_id"] == "<b>nope"
    assert audited[0]["fields"]["outcome"] == "404"
