"""The dashboard in a real browser (issue 13): Playwright driving Debian's Chromium (`apt-get install
chromium`; launched by path, never downloaded) against a real server on a loopback port.

Every page visited is watched: a request to any host but the server, a JavaScript error or a console
error fails the test. Screenshots of the main pages land in ``$WANLORA_ARTIFACTS`` (default
``test-artifacts/screenshots``).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from api import create_app
from api.deps import LocalSignIn
from registry.domain.eval_schemas import ReportIn
from tests.web.seed import POLICY, seed

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI needs Debian's Chromium for the dashboard's browser tests: apt-get install chromium")
    pytest.skip("Debian's Chromium is not installed (apt-get install chromium)", allow_module_level=True)

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions"]  # fmt: skip
SHOTS = Path(os.environ.get("WANLORA_ARTIFACTS", "test-artifacts")) / "screenshots"


class Server:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str], Any]]:
    from registry.settings import Settings

    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "files").mkdir()
    (tmp / "policy.toml").write_text(POLICY)
    settings = Settings(
        home=tmp / "home", database_url=f"sqlite:///{tmp / 'registry.db'}", policy_file=tmp / "policy.toml"
    )
    local = LocalSignIn("you")
    app = create_app(settings, deliver_webhooks=False, local_sign_in=local)
    wl = app.state.wanlora.wl
    tokens = seed(wl, tmp / "files").tokens
    server = Server(app)
    yield server, tokens, wl, local
    server.stop()
    wl.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


class Watched:
    """A fresh browser context whose every request, JS error and console error is recorded."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.hosts: set[str] = set()
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.hosts.add(urlsplit(r.url).netloc) if r.url.startswith("http") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)

    def sign_in(self, token: str) -> None:
        self.page.goto("/signin")
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(self.base + "/")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self, *, allow: tuple[str, ...] = ()) -> None:
        self.context.close()
        errors = [e for e in self.errors if not any(a in e for a in allow)]
        assert self.hosts <= {urlsplit(self.base).netloc}, f"requests to other hosts: {self.hosts}"
        assert not errors, errors


@pytest.fixture
def open_as(site: Any, browser: Any) -> Iterator[Any]:
    opened: list[Watched] = []

    def make(token_name: str | None) -> Watched:
        watched = Watched(browser, site[0].url)
        if token_name:
            watched.sign_in(site[1][token_name])
        opened.append(watched)
        return watched

    yield make
    for w in opened:
        w.close(allow=("status of 403", "status of 404", "status of 409"))  # refusals the tests ask for


def test_each_role_sees_what_its_role_allows_and_the_main_pages_render(open_as: Any) -> None:
    root = open_as("root")
    page = root.page
    assert "root · admin in every project" in page.get_by_test_id("who").inner_text()
    assert page.get_by_test_id("loras").get_by_role("link", name="agent").count() == 1
    root.shot("loras")
    page.get_by_role("link", name="sarah", exact=True).first.click()
    assert page.get_by_test_id("versions").get_by_text("trial", exact=True).count() == 1
    root.shot("lora")
    page.get_by_role("link", name="1.2.0", exact=True).first.click()
    assert page.locator("svg.chart").count() == 3
    assert page.locator("img.sheet").evaluate("img => img.naturalWidth") > 0
    root.shot("version")
    page.goto("/loras/p1/sarah/events")
    root.shot("events")
    page.goto("/review")
    page.goto("/admin")
    root.shot("admin")

    production = open_as("production")
    production.page.goto("/loras/p1/sarah")
    versions = production.page.get_by_test_id("versions").inner_text()
    assert "1.1.0" in versions and "1.2.0" not in versions and "1.0.0" not in versions
    assert production.page.get_by_role("button", name="Roll back to the previous version").count() == 0
    assert production.page.goto("/loras/p1/sarah/v/1.2.0").status == 404
    assert production.page.goto("/admin").status == 403
    production.page.goto("/")
    assert "agent" not in production.page.get_by_test_id("loras").inner_text()

    trainer = open_as("trainer")
    trainer.page.goto("/loras/p1/sarah")
    assert "1.2.0" in trainer.page.get_by_test_id("versions").inner_text()
    assert trainer.page.get_by_role("link", name="Promote…").count() == 0
    assert "Admin" not in trainer.page.get_by_role("navigation", name="Main").inner_text()

    admin = open_as("admin")
    admin.page.goto("/")
    assert "agent" not in admin.page.get_by_test_id("loras").inner_text()  # another project's
    admin.page.goto("/admin")
    assert admin.page.get_by_role("heading", name="Users").count() == 0


def test_promote_through_the_gate_refusal_then_override_then_roll_back_and_compare(open_as: Any) -> None:
    root = open_as("root")
    page = root.page
    page.goto("/loras/p1/sarah/v/1.3.0/promote")
    assert "Not ready" in page.get_by_test_id("verdict").inner_text()  # the verdict, before anything is pressed
    page.get_by_role("button", name="Promote 1.3.0").click()
    refusal = page.get_by_test_id("refusal")
    assert "phase" in refusal.inner_text().lower()
    root.shot("promote-refused")
    override = page.get_by_role("button", name="Override and promote")
    override.click()  # the reason is required: the browser refuses to send the form without one
    assert page.url.endswith("/promote") and page.get_by_test_id("refusal").count() == 1
    page.get_by_label("Why this version goes out without the evidence (required)").fill("hotfix for the launch")
    override.click()
    page.wait_for_url("**/loras/p1/sarah?done=*")
    assert page.get_by_test_id("current").inner_text() == "1.3.0"
    assert page.get_by_test_id("versions").get_by_text("override").count() == 1

    page.goto("/loras/p1/sarah/events")
    first = page.get_by_test_id("timeline").locator("li").first
    assert "override" in first.inner_text() and "hotfix for the launch" in first.inner_text()
    assert "quality" in first.locator(".missing").inner_text()  # what was missing, named

    page.goto("/loras/p1/sarah")
    page.get_by_label("Reason for the rollback").fill("faces drift")
    page.get_by_role("button", name="Roll back to the previous version").click()
    page.wait_for_url("**/loras/p1/sarah?done=*")
    assert page.get_by_test_id("current").inner_text() == "1.1.0"

    page.get_by_label("Compare version").select_option("1.1.0")
    page.get_by_label("with version").select_option("1.2.0")
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url("**/compare?old=1.1.0&new=1.2.0")
    assert "learning rate" in page.get_by_test_id("diff").inner_text()
    sheets = page.locator("img.sheet")
    assert sheets.count() == 2 and all(sheets.nth(i).evaluate("i => i.naturalWidth") > 0 for i in range(2))
    assert page.locator("svg.chart").count() == 2
    root.shot("compare")


def test_the_trial_page_updates_live(open_as: Any, site: Any) -> None:
    root = open_as("root")
    page = root.page
    page.goto("/loras/p1/sarah/trial")
    cell = page.locator('[data-field="candidate.reports"]')
    before = cell.inner_text()
    with site[2].evaluation() as ev:
        ev.report(
            project="p1", name="sarah", version="1.2.0", outcome=ReportIn(job_id="live-1", success=True, rating=9)
        )
    page.wait_for_function(
        f"() => document.querySelector('[data-field=\"candidate.reports\"]').textContent !== '{before}'", timeout=15000
    )
    assert int(cell.inner_text()) == int(before) + 1
    root.shot("trial")


def test_forms_have_labels_and_work_from_the_keyboard(open_as: Any) -> None:
    anonymous = open_as(None)
    page = anonymous.page
    page.goto("/signin")
    assert page.evaluate("document.activeElement.id") == "token"  # the sign-in page starts in its field
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Sign in"
    root = open_as("root")
    root.page.goto("/loras/p1/sarah")
    root.page.keyboard.press("Tab")
    assert root.page.evaluate("document.activeElement.textContent") == "Skip to content"  # the first stop
    root.page.keyboard.press("Enter")
    assert root.page.evaluate("document.activeElement.id") == "main"
    unlabeled = """() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map(e => e.name)"""
    for path in ("/", "/loras/p1/sarah", "/loras/p1/sarah/v/1.2.0", "/loras/p1/sarah/v/1.3.0/promote",
                 "/loras/p1/sarah/trial", "/admin"):  # fmt: skip
        root.page.goto(path)
        assert root.page.evaluate(unlabeled) == [], path
        buttons = root.page.evaluate(
            "() => [...document.querySelectorAll('button')].filter(b => !b.textContent.trim() && !b.getAttribute('aria-label')).length"
        )
        assert buttons == 0, path
    # a form driven by the keyboard alone: search for a LoRA, submit with Enter
    root.page.goto("/")
    root.page.get_by_role("searchbox", name="Search").focus()
    root.page.keyboard.type("ink")
    root.page.keyboard.press("Enter")
    root.page.wait_for_url("**/?q=ink*")
    assert root.page.get_by_test_id("loras").locator("tbody tr").count() == 1
    assert "style" in root.page.get_by_test_id("loras").inner_text()


def test_sign_in_by_keyboard_and_the_local_link_of_wanlora_dashboard(open_as: Any, site: Any) -> None:
    typed = open_as(None)
    typed.page.goto("/signin")
    typed.page.get_by_label("API token").focus()
    typed.page.keyboard.type(site[1]["trainer"])
    typed.page.keyboard.press("Enter")
    typed.page.wait_for_url(site[0].url + "/")
    assert "trainer" in typed.page.get_by_test_id("who").inner_text()
    typed.page.get_by_role("button", name="Sign out").click()
    typed.page.wait_for_url("**/signin")
    assert typed.page.goto("/loras/p1/sarah").url.startswith(site[0].url + "/signin")

    local = open_as(None)
    code = site[3].issue()  # what `wanlora dashboard` puts after the # of the link it opens
    local.page.goto(f"/signin#{code}")
    local.page.wait_for_url(site[0].url + "/")
    assert "you · admin in every project" in local.page.get_by_test_id("who").inner_text()
    assert "#" not in local.page.url


def test_docs_and_redoc_render_with_no_other_host(open_as: Any) -> None:
    anonymous = open_as(None)
    page = anonymous.page
    page.goto("/docs")
    page.wait_for_selector(".opblock", timeout=20000)  # Swagger UI drew the operations from /openapi.json
    anonymous.shot("docs")
    page.goto("/redoc")
    page.wait_for_selector("[data-section-id]", timeout=20000)
