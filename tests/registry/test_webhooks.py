"""Webhooks: signed deliveries to a real receiver on loopback, retries with backoff, a delivery log, and
a failing receiver that never blocks or fails the change."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from registry.backends.local import Wanlora
from registry.db.tables import WebhookDelivery
from registry.domain.clock import utcnow
from registry.domain.errors import InvalidInput, NotFound, PermissionDenied
from registry.domain.webhooks import verify
from registry.services.delivery import Dispatcher
from registry.services.egress import EgressPolicy
from tests.conftest import BACKENDS
from tests.helpers import Receiver, register

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


@pytest.fixture
def wl(wl: Wanlora) -> Wanlora:
    """Receivers here are on loopback, so the operator allows it, as a team with internal hooks would."""
    wl.egress = EgressPolicy.allowing("127.0.0.1")
    return wl


def test_signed_deliveries_for_each_event(wl: Wanlora, tmp_path: Path, receiver: Receiver) -> None:
    with wl.webhooks() as hooks:
        hook = hooks.add(url=receiver.url, project="*", events=["register", "promote", "rollback", "deprecate"])
    register(wl, tmp_path, version="1.0.0", seed=1, scores={"consistency": 8.0})
    register(wl, tmp_path, version="1.1.0", seed=2, changelog="more expressions")
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
        reg.promote(project="default", name="sarah", version="1.1.0", reason="better")
        reg.rollback(project="default", name="sarah", reason="faces drift")
        reg.deprecate(project="default", name="sarah", version="1.0.0", reason="recall")
    assert Dispatcher(wl.db, egress=wl.egress).run_once() == 6
    kinds = [json.loads(body)["event"] for _, body in receiver.requests]
    assert kinds == ["register", "register", "promote", "promote", "rollback", "deprecate"]
    headers, body = receiver.requests[3]
    assert verify(hook.secret, headers["x-wanlora-signature"], body)
    assert not verify(hook.secret, headers["x-wanlora-signature"], body + b" ")
    assert headers["x-wanlora-event"] == "promote"
    payload = json.loads(body)
    assert (
        payload["version"] == "1.1.0" and payload["changelog"] == "more expressions" and payload["reason"] == "better"
    )
    assert json.loads(receiver.requests[0][1])["scores"] == {"consistency": 8.0}
    with wl.webhooks(write=False) as hooks:
        log = hooks.deliveries()
    assert {d.status for d in log} == {"delivered"} and all(d.attempts == 1 for d in log)


def test_failing_receiver_never_blocks_and_is_retried(wl: Wanlora, tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 500
    with wl.webhooks() as hooks:
        hooks.add(url=receiver.url, project="default", events=["register"])
        hooks.add(url="http://127.0.0.1:9/refused", project="default", events=["register"])  # nothing listens
    register(wl, tmp_path)  # the change succeeds whatever the receivers do
    dispatcher = Dispatcher(wl.db, egress=wl.egress, base_delay=60)
    assert dispatcher.run_once() == 2
    with wl.webhooks(write=False) as hooks:
        log = {d.webhook_id: d for d in hooks.deliveries()}
    assert log[1].status == "pending" and log[1].last_status_code == 500 and log[1].attempts == 1
    assert log[2].status == "pending" and log[2].last_error == "could not connect"
    assert log[1].next_attempt_at > utcnow() + timedelta(seconds=50)  # backed off
    assert dispatcher.run_once() == 0  # nothing due yet
    receiver.status = 200
    with wl.db.session() as s:  # let time pass
        for d in s.exec(WebhookDelivery.__table__.select()).all():  # type: ignore[attr-defined]
            row = s.get(WebhookDelivery, d.id)
            assert row is not None
            row.next_attempt_at = utcnow()
            s.add(row)
    assert dispatcher.run_once() == 2
    with wl.webhooks(write=False) as hooks:
        log = {d.webhook_id: d for d in hooks.deliveries()}
    assert log[1].status == "delivered" and log[1].attempts == 2
    assert log[2].status == "pending" and log[2].attempts == 2


def test_gives_up_after_max_attempts(wl: Wanlora, tmp_path: Path) -> None:
    with wl.webhooks() as hooks:
        hooks.add(url="http://127.0.0.1:9/refused", project="*", events=["register"])
    register(wl, tmp_path)
    dispatcher = Dispatcher(wl.db, egress=wl.egress, base_delay=0, max_attempts=3)
    for _ in range(3):
        dispatcher.run_once()
        with wl.db.session() as s:
            for row in s.exec(WebhookDelivery.__table__.select()).all():  # type: ignore[attr-defined]
                d = s.get(WebhookDelivery, row.id)
                assert d is not None
                d.next_attempt_at = utcnow()
                s.add(d)
    with wl.webhooks(write=False) as hooks:
        [d] = hooks.deliveries()
    assert d.status == "failed" and d.attempts == 3


def test_webhook_validation_and_scope(wl: Wanlora, receiver: Receiver) -> None:
    with wl.webhooks() as hooks:
        with pytest.raises(InvalidInput, match="unknown webhook events"):
            hooks.add(url=receiver.url, project="*", events=["explode"])
        with pytest.raises(InvalidInput, match="invalid webhook URL"):
            hooks.add(url="file:///etc/passwd", project="*", events=["register"])
        hook = hooks.add(url=receiver.url, project="p1", events=["promote"])
    with wl.accounts() as acc:
        acc.add_user(name="t")
        token = acc.create_token(user="t", project="p1", role="trainer").token
    with wl.accounts(write=False) as acc:
        trainer = wl.as_principal(acc.authenticate(token))
    with trainer.webhooks() as hooks:
        assert hooks.list_webhooks() == []
        with pytest.raises(PermissionDenied):
            hooks.add(url=receiver.url, project="p1", events=["promote"])
        with pytest.raises(NotFound):
            hooks.remove(webhook_id=hook.id)
    with wl.webhooks() as hooks:
        assert hooks.remove(webhook_id=hook.id).active is False


def test_evaluations_and_trials_can_be_subscribed_to(wl: Wanlora, tmp_path: Path, receiver: Receiver) -> None:
    from registry.domain.eval_schemas import EvaluationIn

    with wl.webhooks() as hooks:
        hooks.add(url=receiver.url, project="*", events=["evaluate", "trial_start", "trial_stop"])
    register(wl, tmp_path, version="1.0.0")
    with wl.evaluation() as ev:
        digest = ev.digest(project="default", name="sarah", version="1.0.0")
        ev.record(project="default", name="sarah", version="1.0.0",
                  result=EvaluationIn(phase="technical", digest=digest, passed=True, summary="ok"))  # fmt: skip
        ev.start_trial(project="default", name="sarah", version="1.0.0", share=10)
        ev.stop_trial(project="default", name="sarah", reason="enough")
    assert Dispatcher(wl.db, egress=wl.egress).run_once() == 3
    bodies = [json.loads(body) for _, body in receiver.requests]
    assert [b["event"] for b in bodies] == ["evaluate", "trial_start", "trial_stop"]
    assert bodies[0]["version"] == "1.0.0" and bodies[2]["reason"] == "enough"


def test_a_test_ping_is_signed_and_says_whether_it_arrived(wl: Wanlora, receiver: Receiver) -> None:
    with wl.webhooks() as hooks:
        good = hooks.add(url=receiver.url, project="*", events=["promote"])
        bad = hooks.add(url="http://127.0.0.1:9/refused", project="*", events=["promote"])
    with wl.webhooks(write=False) as hooks:
        ok = hooks.test(webhook_id=good.id)
        refused = hooks.test(webhook_id=bad.id)
        assert hooks.deliveries() == []  # pings are not deliveries
    assert ok.delivered and ok.status_code == 200 and ok.error is None
    [(headers, body)] = receiver.requests
    assert json.loads(body)["event"] == "ping" and headers["x-wanlora-event"] == "ping"
    assert verify(good.secret, headers["x-wanlora-signature"], body)
    assert not refused.delivered and refused.error == "could not connect"
