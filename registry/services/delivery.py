"""The webhook dispatcher: claims due deliveries (SKIP LOCKED leases), POSTs them signed to checked
public addresses, retries with exponential backoff and logs every attempt.

Each hook is served by one worker at a time, in delivery order, and has its own time budget: a hook
that hangs holds only its own worker, so every other hook's deliveries go on. Between rounds the
dispatcher sleeps until the next delivery falls due, or until it is nudged: deliveries are queued in the
transaction of an event, so the server nudges it when the event log moves (its change watcher), and a
worker nudges it when it is done with a hook; it does not query the database in a loop. Errors are logged in
coarse words ("could not connect", "timed out"), which tell an operator what to fix but do not map
the receiver's network.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlmodel import col, func, select

from registry.db.engine import Database
from registry.db.tables import Webhook, WebhookDelivery, delivery_due
from registry.domain.clock import as_utc, utcnow
from registry.domain.webhooks import sign
from registry.services.egress import EgressPolicy, TargetRefused

__all__ = ["Dispatcher", "Sender", "ping"]

MAX_REDIRECTS = 3


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    url: str
    secret: str
    timeout: float
    payload: dict[str, Any]
    kind: str


def _coarse(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    return "the receiver's answer was not valid HTTP"


class Sender:
    """Sends one signed delivery within its hook's time budget: to checked addresses only, following
    307/308 redirects (each checked again); answers (status code, coarse error or None)."""

    def __init__(self, egress: EgressPolicy | None = None) -> None:
        self.egress = egress or EgressPolicy()
        # no environment proxies: they would carry the request past the address check
        self.client = httpx.Client(follow_redirects=False, trust_env=False)

    def _post(self, job: _Job, url: str, body: bytes, deadline: float) -> httpx.Response:
        target = self.egress.resolve(url)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise httpx.TimeoutException("the hook's time budget is spent")
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": "wanlora-webhook/2",
            "X-Wanlora-Event": job.kind,
            "X-Wanlora-Delivery": str(job.delivery_id),
            "X-Wanlora-Signature": sign(job.secret, body, int(time.time())),
        }
        extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
        request = self.client.build_request(
            "POST", target.url, content=body, headers=headers, timeout=remaining, extensions=extensions
        )
        return self.client.send(request)

    def send(self, job: _Job) -> tuple[int | None, str | None]:
        body = json.dumps(job.payload, separators=(",", ":"), sort_keys=True).encode()
        deadline = time.monotonic() + job.timeout
        url = job.url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                response = self._post(job, url, body, deadline)
                if response.status_code not in (307, 308) or "location" not in response.headers:
                    break
                url = str(response.url.join(response.headers["location"]))  # checked again by _post
            else:
                return response.status_code, f"more than {MAX_REDIRECTS} redirects"
        except TargetRefused as exc:
            return None, f"refused: {exc.message}"[:500]
        except httpx.HTTPError as exc:
            return None, _coarse(exc)
        if response.is_success:
            return response.status_code, None
        if response.is_redirect:
            return response.status_code, f"HTTP {response.status_code}: only 307 and 308 redirects are followed"
        return response.status_code, f"HTTP {response.status_code}"

    def close(self) -> None:
        self.client.close()


def ping(egress: EgressPolicy, hook: Webhook) -> tuple[int | None, str | None]:
    """A signed ``ping`` to the hook now, outside the delivery log (``wanlora webhook test``)."""
    payload = {"event": "ping", "webhook_id": hook.id, "project": hook.project, "at": utcnow().isoformat()}
    sender = Sender(egress)
    try:
        return sender.send(_Job(0, hook.url, hook.secret, hook.timeout_seconds, payload, "ping"))
    finally:
        sender.close()


class Dispatcher:
    """Delivers due webhook deliveries. Safe to run in several processes: a claimed delivery is leased
    (its next attempt pushed past its hook's time budget) before it is sent, with SKIP LOCKED on
    PostgreSQL."""

    def __init__(
        self,
        db: Database,
        *,
        egress: EgressPolicy | None = None,
        timeout: float | None = None,
        max_attempts: int = 8,
        base_delay: float = 2.0,
        max_delay: float = 3600.0,
        workers: int = 8,
    ) -> None:
        self.db = db
        self.sender = Sender(egress)
        self.timeout = timeout  # caps every hook's own budget (the CLI's short pass after a command)
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wanlora-webhook")
        self._busy: set[int] = set()  # hooks with a worker on them
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.max_delay, self.base_delay * 2 ** (attempts - 1)))

    def _budget(self, hook: Webhook) -> float:
        return min(hook.timeout_seconds, self.timeout) if self.timeout else hook.timeout_seconds

    def _without_busy_hooks(self, query: Any) -> Any:
        """``query`` (on webhook_deliveries) less the deliveries of hooks a worker is on: each hook's
        deliveries go one after the other, so those wait for their worker, which nudges when done."""
        with self._lock:
            busy = set(self._busy)
        return query.where(col(WebhookDelivery.webhook_id).not_in(busy)) if busy else query

    def _claim(self, limit: int) -> dict[int, list[_Job]]:
        now = utcnow()
        query = self._without_busy_hooks(
            select(WebhookDelivery, Webhook)
            .join(Webhook, col(Webhook.id) == WebhookDelivery.webhook_id)
            .where(*delivery_due(now))
            .order_by(col(WebhookDelivery.id))
            .limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        )
        jobs: dict[int, list[_Job]] = {}
        with self.db.session() as s:
            for delivery, hook in s.exec(query).all():
                budget = self._budget(hook)
                queue = jobs.setdefault(hook.id or 0, [])
                delivery.attempts += 1
                # the lease: this hook's deliveries run one after the other, each within its budget
                # (redirects included), so this one is done by then or its worker is gone
                delivery.next_attempt_at = now + timedelta(seconds=budget * (MAX_REDIRECTS + 1) * (len(queue) + 1) + 30)
                s.add(delivery)
                queue.append(_Job(delivery.id or 0, hook.url, hook.secret, budget, delivery.payload, delivery.kind))
        return jobs

    def _record(self, job: _Job, code: int | None, error: str | None) -> None:
        with self.db.session() as s:
            d = s.get(WebhookDelivery, job.delivery_id)
            assert d is not None
            d.last_status_code, d.last_error = code, error
            if error is None:
                d.status, d.delivered_at = "delivered", utcnow()
            elif d.attempts >= self.max_attempts:
                d.status = "failed"
            else:
                d.next_attempt_at = utcnow() + self.backoff(d.attempts)
            s.add(d)

    def _serve(self, hook_id: int, jobs: list[_Job]) -> None:
        try:
            for job in jobs:
                self._record(job, *self.sender.send(job))
        finally:
            with self._lock:
                self._busy.discard(hook_id)
            self.nudge()  # the hook's next deliveries waited for this worker

    def nudge(self) -> None:
        """Something may be due now: an event was recorded (its deliveries are queued with it), a worker
        finished, or the dispatcher is to stop. Cheap and safe from any thread."""
        self._wake.set()

    def seconds_to_next(self) -> float | None:
        """How long until the next pending delivery of a hook without a worker falls due (0 when one
        is due now), or None when none waits. One indexed query."""
        query = self._without_busy_hooks(
            select(func.min(WebhookDelivery.next_attempt_at)).where(col(WebhookDelivery.status) == "pending")
        )
        with self.db.session(write=False) as s:  # a read: no write lock on SQLite
            due = as_utc(s.exec(query).one())
        return None if due is None else max(0.0, (due - utcnow()).total_seconds())

    def dispatch(self, limit: int = 50) -> tuple[int, list[Future[None]]]:
        """Claim what is due and hand each hook's deliveries to a worker; returns at once, with how
        many deliveries were claimed."""
        claimed = self._claim(limit)
        with self._lock:
            self._busy.update(claimed)
        futures = [self.pool.submit(self._serve, hook_id, jobs) for hook_id, jobs in claimed.items()]
        return sum(len(jobs) for jobs in claimed.values()), futures

    def run_once(self, limit: int = 50) -> int:
        """Deliver what is due and wait for it; returns how many were attempted."""
        count, futures = self.dispatch(limit)
        for future in futures:
            future.result()
        return count

    def run_forever(self, stop: threading.Event, longest_wait: float = 0.5) -> None:
        """Deliver until ``stop`` is set (then ``nudge()``, so that a sleeping dispatcher sees it). Between
        rounds it sleeps until the next delivery falls due or a nudge, and at most ``longest_wait``
        seconds: the whole wait where nothing nudges it, a safety net where something does."""
        while not stop.is_set():
            self._wake.clear()  # before looking: a nudge from now on is not lost
            try:
                claimed = self.dispatch()[0]
                wait = 0.0 if claimed else self.seconds_to_next()
            except Exception:  # a database hiccup must not kill the dispatcher; try again shortly
                wait = min(longest_wait, 0.5)
            wait = longest_wait if wait is None else min(wait, longest_wait)
            if wait > 0:
                self._wake.wait(wait)
        self.close()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.sender.close()
