"""The dashboard over HTTP (issue 13): sign-in and sessions, CSRF, what each role sees, filters and
pages, safe rendering, no secret in a URL or a log, and /docs and /redoc with no CDN. The same pages in
a real browser: test_browser.py."""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.web.conftest import NONCE, Dash, csrf_of, sign_in

HREFS = re.compile(r'(?:href|src|action)="([^"]*)"')


def test_pages_need_a_session_and_sign_in_sets_a_strict_http_only_cookie(dash: Dash) -> None:
    anonymous = dash.client()
    answer = anonymous.get("/loras/p1/sarah")
    assert answer.status_code == 303 and answer.headers["location"] == "/signin?next=/loras/p1/sarah"
    assert anonymous.get("/loras/p1/sarah/trial.json").status_code == 401  # data, never a page or a redirect

    form = anonymous.get("/signin")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)[1]  # type: ignore[index]
    bad = anonymous.post("/signin", data={"token": "wlt_nope", "nonce": nonce, "next": "/"})
    assert (
        bad.status_code == 401
        and "not valid" in bad.text
        and "wanlora_session" not in bad.headers.get("set-cookie", "")
    )
    fresh = re.search(r'name="nonce" value="([^"]+)"', bad.text)[1]  # type: ignore[index]
    assert fresh != nonce and anonymous.cookies["wanlora_signin"] == fresh  # a new form, a new nonce: try again
    nonce = fresh

    good = anonymous.post("/signin", data={"token": dash.tokens["admin"], "nonce": nonce, "next": "/loras/p1/sarah"})
    assert good.status_code == 303 and good.headers["location"] == "/loras/p1/sarah"
    cookie = good.headers["set-cookie"]
    assert "wanlora_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert 0 < int(re.search(r"Max-Age=(\d+)", cookie)[1]) <= 12 * 3600  # type: ignore[index]
    assert dash.tokens["admin"] not in cookie  # the cookie is the session's own secret, not the token

    page = anonymous.get("/loras/p1/sarah")
    assert page.status_code == 200 and "admin · admin in p1" in page.text
    for name, value in {"Content-Security-Policy": "default-src 'self'", "X-Frame-Options": "DENY",
                        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}.items():  # fmt: skip
        assert value in page.headers[name]

    out = anonymous.post("/signout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    anonymous.cookies.set("wanlora_session", good.cookies["wanlora_session"])  # the old cookie, replayed
    assert anonymous.get("/").status_code == 303


def test_a_session_ends_with_its_token_and_never_outlives_it(dash: Dash) -> None:
    short = dash.client()
    form = short.get("/signin")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)[1]  # type: ignore[index]
    answer = short.post("/signin", data={"token": dash.tokens["short"], "nonce": nonce})
    assert int(re.search(r"Max-Age=(\d+)", answer.headers["set-cookie"])[1]) <= 3600  # type: ignore[index]

    admin = dash.client("admin")
    assert admin.get("/").status_code == 200
    with dash.app.state.wanlora.wl.accounts() as accounts:
        token = next(t for t in accounts.list_tokens() if t.user == "admin" and t.expires_at is None)
        accounts.revoke_token(token_id=token.id)
    assert admin.get("/").status_code == 303  # revoked: the session is over at once


def test_every_state_change_needs_the_session_csrf_token_and_this_origin(dash: Dash) -> None:
    root = dash.client("root")
    page = root.get("/loras/p1/sarah")
    csrf = csrf_of(page.text)
    missing = root.post("/loras/p1/sarah/rollback", data={"reason": "x"})
    wrong = root.post("/loras/p1/sarah/rollback", data={"reason": "x", "csrf": "forged"})
    elsewhere = root.post(
        "/loras/p1/sarah/rollback", data={"reason": "x", "csrf": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert missing.status_code == wrong.status_code == elsewhere.status_code == 403
    assert "CSRF" in wrong.text and "another site" in elsewhere.text
    assert "1.1.0" in root.get("/loras/p1/sarah").text.split('data-testid="current"')[1][:40]  # nothing happened

    # the sign-in form: its nonce must match its cookie (login CSRF)
    other = dash.client()
    assert other.post("/signin", data={"token": dash.tokens["admin"], "nonce": "x"}).status_code == 400

    done = root.post("/loras/p1/sarah/rollback", data={"reason": "bad hands", "csrf": csrf})
    assert done.status_code == 303 and "rolled+back+to+1.0.0" in done.headers["location"]


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_each_role_sees_only_what_its_role_allows(dash: Dash) -> None:
    production, trainer, admin, root = (dash.client(w) for w in ("production", "trainer", "admin", "root"))

    lora = production.get("/loras/p1/sarah").text
    assert "1.1.0" in lora and "1.2.0" not in lora and "1.0.0" not in lora and "1.3.0" not in lora
    assert "Promote" not in lora and "Roll back" not in lora and "Trial" not in lora
    for path in ("/loras/p1/sarah/v/1.2.0", "/loras/p1/sarah/v/1.0.0", "/loras/p1/sarah/compare?old=1.1.0&new=1.2.0",
                 "/loras/p1/sarah/v/1.2.0/promote"):  # fmt: skip
        assert production.get(path).status_code == 404, path  # a testing or deprecated version does not exist
    for path in ("/admin", "/loras/p1/sarah/events", "/projects/p1/events", "/loras/p1/sarah/trial"):
        assert production.get(path).status_code == 403, path
    assert (
        "1.2.0" not in production.get("/?status=testing").text and "0 LoRAs" in production.get("/?status=testing").text
    )
    listing = production.get("/").text
    assert "agent" not in listing and "sarah" in listing  # another team's LoRAs are not listed

    seen = trainer.get("/loras/p1/sarah").text
    assert "1.2.0" in seen and "1.0.0" not in seen and "Promote…" not in seen and "Roll back" not in seen
    assert trainer.get("/loras/p1/sarah/v/1.3.0/promote").status_code == 200  # reads the gate; cannot promote
    refused = trainer.post("/loras/p1/sarah/v/1.2.0/promote", data={"csrf": csrf_of(seen)})
    assert refused.status_code == 403 and "trainer" in refused.text
    assert trainer.get("/admin").status_code == 403

    mine = admin.get("/").text
    assert "sarah" in mine and "agent" not in mine
    assert admin.get("/loras/p2/agent").status_code == 403
    assert "Users" not in admin.get("/admin").text  # a project admin manages tokens, not users
    assert "agent" in root.get("/").text and "Users" in root.get("/admin").text


def test_search_filters_and_pages(dash: Dash) -> None:
    root = dash.client("root")

    def names(query: str) -> list[str]:
        table = root.get("/" + query).text.split('data-testid="loras"')
        return re.findall(r'<td><a href="/loras/[^/]+/([^"/]+)">', table[1]) if len(table) > 1 else []

    assert names("") == ["ink", "sarah", "walk", "agent"]
    assert names("?q=SAR") == ["sarah"] and names("?q=studio") == ["sarah"]  # name and description, any case
    assert names("?category=style") == ["ink"] and names("?category=motion") == ["walk"]
    assert names("?status=testing") == ["ink", "sarah", "walk"] and names("?status=current") == ["sarah", "agent"]
    assert names("?trigger=inkwash") == ["ink"] and names("?trigger=sarah+woman") == ["sarah"]
    assert names("?trigger=sarah") == []  # a trigger word matches whole
    assert names("?base_model=wan2.2-ti2v-5b&project=p2") == ["agent"]
    assert names("?q=%25") == [] and names("?q=_") == []  # LIKE's wildcards are literal
    first, second = root.get("/?per=2").text, root.get("/?per=2&page=2").text
    assert "page 1 of 2" in first and 'rel="next"' in first and "per=2" in first
    assert (
        names("?per=2") == ["ink", "sarah"] and names("?per=2&page=2") == ["walk", "agent"] and 'rel="prev"' in second
    )
    assert root.get("/?per=1000").status_code == 422


def test_the_version_page_shows_its_evidence_drawn_from_the_data(dash: Dash) -> None:
    page = dash.client("root").get("/loras/p1/sarah/v/1.2.0").text
    for part in ("Changelog", "Hyperparameters", "Dataset", "Files", "Loss curve", "Evaluation", "Strength sweep",
                 "Contact sheet", "report.md", "Training notes", "AutoV2", f"{2:064x}"):  # fmt: skip
        assert part in page, part
    assert page.count('<svg class="chart"') == 3  # loss, scores against base/previous, sweep: SVG from the data
    assert "<polyline" in page and "previous (1.1.0)" in page and "base model" in page
    sheet = re.search(r'src="(/loras/p1/sarah/v/1.2.0/evaluations/\d+/contact.png)"', page)
    assert sheet is not None
    image = dash.client("root").get(sheet[1])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png" and image.content[:4] == b"\x89PNG"
    assert "[scores: drawn above]" in page  # report.md's own pictures are not fetched


def test_rendering_is_escaped_and_reports_cannot_inject(dash: Dash) -> None:
    wl = dash.app.state.wanlora.wl
    from registry.domain.eval_schemas import EvaluationIn

    with wl.evaluation() as ev:
        digest = ev.digest(project="p1", name="sarah", version="1.3.0")
        ev.record(project="p1", name="sarah", version="1.3.0", result=EvaluationIn(
            phase="quality", digest=digest, passed=False, summary="<script>alert(1)</script>",
            report_md="# x\n<img src=x onerror=alert(1)>\n![t](https://evil.example/t.png)\n[a](javascript:alert(1))",
            details={"checks": [{"name": "<b>n</b>", "passed": False, "detail": "<i>d</i>"}]},
        ))  # fmt: skip
    with wl.registry() as reg:
        reg.annotate(project="p1", name="sarah", version="1.3.0", known_issues="<script>x</script>")
    page = dash.client("root").get("/loras/p1/sarah/v/1.3.0").text
    assert "<script>alert" not in page and "<script>x" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page and "evil.example" not in page and 'href="javascript' not in page
    root = dash.client("root")
    assert "Done: promoted 1.2.0." in root.get("/loras/p1/sarah?done=promoted+1.2.0").text
    assert "call" not in root.get("/loras/p1/sarah?done=promoted+1.2.0.+Now+call+555-0100").text  # only its own shapes


def test_no_secret_goes_into_a_url_or_a_log(dash: Dash, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    root = dash.client("root")
    admin_page = root.get("/admin")
    created = root.post("/admin/tokens", data={"user": "trainer", "project": "p1", "role": "trainer",
                                               "csrf": csrf_of(admin_page.text)})  # fmt: skip
    assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
    token = re.search(r'data-testid="created-token">.*?<code class="digest">(wlt_[^<]+)</code>', created.text, re.S)
    assert token is not None  # shown once, on the answer to the POST
    assert token[1] not in root.get("/admin").text  # and never again
    sign_in(dash.client(), token[1])  # it works
    secrets = [token[1], *dash.tokens.values()]
    for path in ("/", "/loras/p1/sarah", "/loras/p1/sarah/v/1.2.0", "/admin", "/projects/p1/events"):
        for url in HREFS.findall(root.get(path).text):
            assert not any(s in url for s in secrets), url
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(s in logged for s in secrets)


def test_docs_and_redoc_work_with_no_cdn(dash: Dash) -> None:
    client = dash.client()
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        urls = HREFS.findall(html)
        assert urls and all(u.startswith("/") for u in urls), urls
        assert "cdn" not in html and "googleapis" not in html and "tiangolo" not in html
        for asset in (u for u in urls if u.startswith("/static/")):
            assert client.get(asset).status_code == 200, asset
    assert b"cdn.redoc.ly" not in client.get("/static/docs/redoc.standalone.js").content  # its logo, served here
    assert client.get("/openapi.json").json()["info"]["title"] == "wanlora"


def test_evaluation_attachments_are_checked_like_the_preview(dash: Dash) -> None:
    from registry.domain.errors import InvalidInput
    from registry.domain.eval_schemas import EvaluationIn

    wl = dash.app.state.wanlora.wl
    with wl.evaluation() as ev:
        digest = ev.digest(project="p1", name="sarah", version="1.3.0")
    bad = {
        "technical": {"phase": "technical", "report_md": "# no"},
        "base64": {"phase": "quality", "contact_sheet_png": "!!!"},
        "png": {"phase": "quality", "contact_sheet_png": base64.b64encode(b"GIF89a" + b"\0" * 20).decode()},
    }
    for why, fields in bad.items():
        with pytest.raises(InvalidInput), wl.evaluation() as ev:
            ev.record(project="p1", name="sarah", version="1.3.0",
                      result=EvaluationIn(digest=digest, passed=True, **fields))  # type: ignore[arg-type]  # fmt: skip
        assert why
    root = dash.client("root")
    assert root.get("/loras/p1/sarah/v/1.2.0/evaluations/1/secrets.txt").status_code == 404
    production = dash.client("production")  # 1.2.0 is testing: its evidence does not exist for production
    page = root.get("/loras/p1/sarah/v/1.2.0").text
    sheet = re.search(r'src="(/loras/p1/sarah/v/1.2.0/evaluations/\d+/contact.png)"', page)[1]  # type: ignore[index]
    assert production.get(sheet).status_code == 404


def test_wanlora_dashboard_serves_the_embedded_default_to_the_local_user(tmp_path: Path) -> None:
    env = {**os.environ, "WANLORA_HOME": str(tmp_path / "home"), "WANLORA_USER": "dana"}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "dashboard", "--no-browser"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        link = ""
        deadline = time.monotonic() + 60
        while not link and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            found = re.search(r"(http://127\.0\.0\.1:\d+/)signin#(\S+)", line)
            link = found[0] if found else ""
        assert link, "no sign-in link printed"
        base, code = link.split("signin#")
        with httpx.Client(base_url=base) as browser:
            nonce = NONCE.search(browser.get("/signin").text)[1]  # type: ignore[index]
            signed = browser.post("/signin/local", data={"code": code, "nonce": nonce})
            assert signed.status_code == 303 and "HttpOnly" in signed.headers["set-cookie"]
            assert "dana · admin in every project" in browser.get("/").text
            again = httpx.post(
                base + "signin/local", data={"code": code, "nonce": nonce}, cookies={"wanlora_signin": nonce}
            )
            assert again.status_code == 401  # the code works once
            assert httpx.get(base, headers={"Host": "rebound.example"}).status_code == 400  # loopback names only
    finally:
        proc.terminate()
        proc.wait(10)


def test_odd_recorded_data_never_breaks_a_page(dash: Dash, tmp_path: Path) -> None:
    """Hyperparameters and evaluation details are whatever a trainer or an evaluator sent: a page shows
    what it can read and leaves the rest out, never a 500."""
    from registry.domain.eval_schemas import EvaluationIn
    from tests.helpers import register

    wl = dash.app.state.wanlora.wl
    odd = {"training": {"loss_curve": [["a", 1], [1, "b"], 5, [True, 2], [3, 0.5]], "val_loss_by_timestep": [1],
                        "diagnostics": 3, "checkpoint_step": {"x": 1}}, "note": None, "tags": [1, {"a": 2}]}  # fmt: skip
    register(wl, tmp_path, project="p1", lora="odd", version="0.1.0", seed=40, hyperparameters=odd)
    with wl.evaluation() as ev:
        digest = ev.digest(project="p1", name="odd", version="0.1.0")
        ev.record(project="p1", name="odd", version="0.1.0", result=EvaluationIn(
            phase="quality", digest=digest, passed=True, scores={"consistency": 7.0},
            details={"checks": 5, "sweep": {"x": {"a": 1}, "0.5": {"a": "b", "c": 2}, "1": 3}, "base": [1],
                     "previous": "no", "best_strength": {"odd": True}},
        ))  # fmt: skip
    root = dash.client("root")
    for path in ("/loras/p1/odd", "/loras/p1/odd/v/0.1.0", "/?q=odd"):
        assert root.get(path).status_code == 200, path
    register(wl, tmp_path, project="p1", lora="odd", version="0.2.0", seed=41)
    assert root.get("/loras/p1/odd/compare?old=0.1.0&new=0.2.0").status_code == 200


def test_the_event_timeline_pages_back_through_older_events(dash: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.web.pages

    monkeypatch.setattr(api.web.pages, "EVENTS_PER_PAGE", 5)
    root = dash.client("root")
    seen: list[str] = []
    path = "/projects/p1/events"
    for _ in range(20):
        html = root.get(path).text
        ids = re.findall(r'<time datetime="([^"]+)"', html)
        assert 0 < len(ids) <= 5
        seen += re.findall(r'<li class="event (event-[a-z_]+)', html)
        older = re.search(r'<a href="([^"]+)" rel="next">Older events', html)
        if older is None:
            break
        path = older[1].replace("&amp;", "&")
    with dash.app.state.wanlora.wl.registry(write=False) as reg:
        everything = reg.history(project="p1")
    assert len(seen) == len(everything) > 5  # every event once, newest first, page after page
    assert seen == [f"event-{e.kind}" for e in everything]


def test_the_monthly_review_names_what_to_retrain_within_the_callers_view(dash: Dash) -> None:
    from datetime import timedelta

    from sqlmodel import select

    from registry.db.tables import Lora, Version
    from registry.domain.clock import utcnow

    wl = dash.app.state.wanlora.wl
    with wl.db.session() as session:  # agent 1.0.0 (project p2) was trained long ago
        lora = session.exec(select(Lora).where(Lora.name == "agent")).one()
        version = session.exec(select(Version).where(Version.lora_id == lora.id)).one()
        version.training_date = utcnow() - timedelta(days=400)
        session.add(version)
    review = dash.client("root").get("/review").text
    assert "p2/agent" in review and "retrain" in review and "trained 400 days ago" in review
    assert "p2/agent" not in dash.client("admin").get("/review").text  # another project's


def test_admin_forms_stop_and_start_a_trial_deprecate_and_manage_users_and_webhooks(dash: Dash) -> None:
    root = dash.client("root")
    trial = root.get("/loras/p1/sarah/trial").text
    assert 'data-field="status">running' in trial
    stopped = root.post("/loras/p1/sarah/trial/stop", data={"csrf": csrf_of(trial), "reason": "enough"})
    assert stopped.status_code == 303 and 'data-field="status">stopped' in root.get("/loras/p1/sarah/trial").text

    version = root.get("/loras/p1/sarah/v/1.2.0").text
    assert "Start a trial" in version
    started = root.post(
        "/loras/p1/sarah/trial/start", data={"csrf": csrf_of(version), "version": "1.2.0", "share": "10"}
    )
    assert started.status_code == 303
    assert root.get("/loras/p1/sarah/trial.json").json()["share"] == 10 and "Start a trial" not in root.get(
        "/loras/p1/sarah/v/1.2.0").text  # fmt: skip
    refused = root.post("/loras/p1/sarah/trial/start", data={"csrf": csrf_of(version), "version": "1.3.0"})
    assert refused.status_code == 409 and "already has a trial running" in refused.text  # one at a time

    gone = root.post("/loras/p1/sarah/v/1.0.0/deprecate", data={"csrf": csrf_of(version), "reason": "old"})
    assert gone.status_code == 303
    done = root.post("/loras/p1/sarah/v/1.3.0/deprecate", data={"csrf": csrf_of(version), "reason": "never"})
    assert done.status_code == 303 and "Done: deprecated 1.3.0." in root.get(done.headers["location"]).text

    admin = root.get("/admin").text
    csrf = csrf_of(admin)
    assert root.post("/admin/users", data={"csrf": csrf, "name": "newbie"}).status_code == 303
    bad = root.post("/admin/users", data={"csrf": csrf, "name": "../etc"})
    assert bad.status_code == 400 and "user name" in bad.text  # refused on the page, with what to do
    assert root.post("/admin/users/newbie/remove", data={"csrf": csrf}).status_code == 303
    assert "removed" in root.get("/admin").text
    hook = root.post("/admin/webhooks", data={"csrf": csrf, "url": "http://127.0.0.1:9/hook", "project": "p1",
                                              "events": ["promote", "rollback"]})  # fmt: skip
    assert hook.status_code == 200 and "signing secret, shown once" in hook.text
    assert "http://127.0.0.1:9/hook" in root.get("/admin").text


def test_error_pages_keep_the_signed_in_header(dash: Dash) -> None:
    production = dash.client("production")
    missing = production.get("/loras/p1/sarah/v/1.2.0")
    denied = production.get("/admin")
    for answer in (missing, denied):
        assert "production · production in p1" in answer.text and "Sign out" in answer.text
    assert missing.status_code == 404 and denied.status_code == 403 and "may not" in denied.text
    assert "Sign out" not in dash.client().get("/static/nope.css").text  # not a page: no header, no session
