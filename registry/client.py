"""The HTTP implementation of the registry client: the same calls as the embedded ``Wanlora``, against
a team server (``--server URL`` / ``WANLORA_SERVER`` with ``WANLORA_TOKEN``).

``RemoteWanlora.registry()`` and ``.accounts()`` yield objects with the methods of ``RegistryService``
and ``AccountService`` that the CLI, the trainer and the evaluator use, returning the same public
models; server errors come back as the same ``WanloraError`` subclasses. Files go up and come down as
streams, verified by sha256 on both sides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from registry.accounts import TokenCreated, TokenPublic, UserPublic
from registry.app import RegisterRequest, _read_json_object
from registry.dataset import dataset_fingerprint
from registry.errors import (
    AlreadyExists,
    Conflict,
    GateRefused,
    IntegrityError,
    InvalidFile,
    InvalidInput,
    NotFound,
    PermissionDenied,
    SchemaOutdated,
    Unauthenticated,
    WanloraError,
)
from registry.eval_schemas import (
    EvaluationIn,
    EvaluationPublic,
    GateStatus,
    Metrics,
    Pick,
    ReportIn,
    ReviewItem,
    TrialPublic,
)
from registry.schemas import EventPublic, LoraPublic, LoraSummary, SyncTarget, VersionDiff, VersionPublic
from registry.storage import CHUNK, VerifyingReader
from registry.webhooks import DeliveryPublic, WebhookCreated, WebhookPublic

__all__ = ["RemoteWanlora"]

_ERRORS: dict[str, type[WanloraError]] = {
    cls.code: cls
    for cls in (
        NotFound, AlreadyExists, InvalidInput, InvalidFile, PermissionDenied, Unauthenticated,
        IntegrityError, Conflict, GateRefused, SchemaOutdated,
    )
}  # fmt: skip

Progress = Callable[[str, int, int], None]


def _raise_for(response: httpx.Response) -> None:
    if response.is_success or response.status_code == 304:
        return
    try:
        error = response.json()["error"]
        cls = _ERRORS.get(error.get("code", ""), WanloraError)
        raise cls(error.get("message") or response.reason_phrase, hint=error.get("hint"))
    except (ValueError, KeyError, TypeError):
        raise WanloraError(f"server answered {response.status_code} {response.reason_phrase}") from None


class _Http:
    def __init__(self, server: str, token: str | None, timeout: float = 60.0) -> None:
        self.base = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.base, headers=headers, timeout=timeout, follow_redirects=True)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise WanloraError(f"cannot reach {self.base}: {exc}", hint="check --server / WANLORA_SERVER") from exc
        _raise_for(response)
        return (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )


def _p(project: str) -> str:
    return f"/api/v1/projects/{quote(project, safe='')}"


def _l(project: str, name: str) -> str:
    return f"{_p(project)}/loras/{quote(name, safe='')}"


class RemoteRegistry:
    """The RegistryService calls, over HTTP."""

    def __init__(self, http: _Http) -> None:
        self.http = http

    def list_loras(
        self, *, project: str | None = None, category: str | None = None, status: str | None = None
    ) -> list[LoraSummary]:
        params = {k: v for k, v in (("category", category), ("status", status)) if v}
        if project:
            rows = self.http.call("GET", f"{_p(project)}/loras", params=params)
        else:
            rows = self.http.call("GET", "/api/v1/loras", params=params)
        return [LoraSummary.model_validate(r) for r in rows]

    def create_lora(self, *, project: str, **body: Any) -> LoraPublic:
        body["trigger_words"] = list(body.get("trigger_words") or [])
        return LoraPublic.model_validate(self.http.call("POST", f"{_p(project)}/loras", json=body))

    def get_lora(self, *, project: str, name: str) -> LoraPublic:
        return LoraPublic.model_validate(self.http.call("GET", _l(project, name)))

    def find_lora(self, *, project: str, name: str) -> LoraPublic | None:
        try:
            return self.get_lora(project=project, name=name)
        except NotFound:
            return None

    def get_version(self, *, project: str, name: str, version: str | None = None) -> VersionPublic:
        if version is None:
            lora = self.get_lora(project=project, name=name)
            version = lora.current_version or lora.latest_version
            if version is None:
                raise NotFound(f"{project}/{name} has no versions yet")
        return VersionPublic.model_validate(self.http.call("GET", f"{_l(project, name)}/versions/{quote(version)}"))

    def _transition(self, path: str, reason: str | None) -> VersionPublic:
        return VersionPublic.model_validate(self.http.call("POST", path, json={"reason": reason}))

    def promote(
        self, *, project: str, name: str, version: str, reason: str | None = None, override: bool = False
    ) -> VersionPublic:
        path = f"{_l(project, name)}/versions/{quote(version)}/promote"
        return VersionPublic.model_validate(self.http.call("POST", path, json={"reason": reason, "override": override}))

    def rollback(self, *, project: str, name: str, reason: str | None = None) -> VersionPublic:
        return self._transition(f"{_l(project, name)}/rollback", reason)

    def deprecate(self, *, project: str, name: str, version: str, reason: str | None = None) -> VersionPublic:
        return self._transition(f"{_l(project, name)}/versions/{quote(version)}/deprecate", reason)

    def annotate(
        self,
        *,
        project: str,
        name: str,
        version: str,
        scores: dict[str, float] | None = None,
        known_issues: str | None = None,
    ) -> VersionPublic:
        body = {"scores": scores or {}, "known_issues": known_issues}
        path = f"{_l(project, name)}/versions/{quote(version)}/annotations"
        return VersionPublic.model_validate(self.http.call("POST", path, json=body))

    def history(self, *, project: str, name: str | None = None, limit: int | None = None) -> list[EventPublic]:
        path = f"{_l(project, name)}/history" if name else f"{_p(project)}/history"
        rows = self.http.call("GET", path, params={"limit": limit} if limit else None)
        return [EventPublic.model_validate(r) for r in rows]

    def diff(self, *, project: str, name: str, old: str, new: str) -> VersionDiff:
        return VersionDiff.model_validate(
            self.http.call("GET", f"{_l(project, name)}/diff", params={"old": old, "new": new})
        )

    def notes(self, *, project: str, name: str) -> str:
        return str(self.http.call("GET", f"{_l(project, name)}/notes"))

    def current_targets(self, *, project: str | None = None, client: str | None = None) -> list[SyncTarget]:
        params = {k: v for k, v in (("project", project), ("client", client)) if v}
        rows = self.http.call("GET", "/api/v1/resolve", params=params or None)
        return [SyncTarget.model_validate(r) for r in rows]

    def last_event_id(self) -> int:
        return int(self.http.call("GET", "/api/v1/changes", params={"wait": 0})["last_event_id"])

    def wait_for_change(self, since: int, wait: float = 25.0) -> int:
        """Block until the server's event log moves past ``since`` (long poll), or ``wait`` passes."""
        answer = self.http.call("GET", "/api/v1/changes", params={"since": since, "wait": wait}, timeout=wait + 30)
        return int(answer["last_event_id"])


class RemoteAccounts:
    def __init__(self, http: _Http) -> None:
        self.http = http

    def add_user(self, *, name: str) -> UserPublic:
        return UserPublic.model_validate(self.http.call("POST", "/api/v1/users", json={"name": name}))

    def list_users(self) -> list[UserPublic]:
        return [UserPublic.model_validate(r) for r in self.http.call("GET", "/api/v1/users")]

    def create_token(self, *, user: str, project: str, role: str, expires_in: timedelta | None = None) -> TokenCreated:
        body: dict[str, Any] = {"user": user, "project": project, "role": role}
        if expires_in is not None:
            body["expires"] = f"{int(expires_in.total_seconds())}s"
        return TokenCreated.model_validate(self.http.call("POST", "/api/v1/tokens", json=body))

    def list_tokens(self) -> list[TokenPublic]:
        return [TokenPublic.model_validate(r) for r in self.http.call("GET", "/api/v1/tokens")]

    def revoke_token(self, *, token_id: int) -> TokenPublic:
        return TokenPublic.model_validate(self.http.call("DELETE", f"/api/v1/tokens/{token_id}"))


class RemoteWebhooks:
    def __init__(self, http: _Http) -> None:
        self.http = http

    def add(self, *, url: str, project: str, events: list[str], secret: str | None = None) -> WebhookCreated:
        body = {"url": url, "project": project, "events": events, "secret": secret}
        return WebhookCreated.model_validate(self.http.call("POST", "/api/v1/webhooks", json=body))

    def list_webhooks(self) -> list[WebhookPublic]:
        return [WebhookPublic.model_validate(r) for r in self.http.call("GET", "/api/v1/webhooks")]

    def remove(self, *, webhook_id: int) -> WebhookPublic:
        return WebhookPublic.model_validate(self.http.call("DELETE", f"/api/v1/webhooks/{webhook_id}"))

    def deliveries(self, *, webhook_id: int | None = None, limit: int = 50) -> list[DeliveryPublic]:
        params: dict[str, Any] = {"limit": limit}
        if webhook_id is not None:
            params["webhook_id"] = webhook_id
        return [
            DeliveryPublic.model_validate(r)
            for r in self.http.call("GET", "/api/v1/webhooks/deliveries", params=params)
        ]


class _StreamBody:
    """An HTTP response body as ``read``: each call returns the next chunk as it arrives (no copying
    into a buffer), which is all a verifying, streaming reader needs."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.iter_bytes(1 << 20)

    def read(self, n: int = CHUNK) -> bytes:
        return next(self._chunks, b"")

    def close(self) -> None:
        self._response.close()


class RemoteStore:
    """Reads artifacts from the server (or the presigned URL it redirects to), verified by sha256."""

    def __init__(self, http: _Http) -> None:
        self.http = http
        self.url = f"{http.base}/api/v1/artifacts"

    def open(self, sha256: str) -> VerifyingReader:
        request = self.http.client.build_request("GET", f"/api/v1/artifacts/{sha256}")
        response = self.http.client.send(request, stream=True)
        if not response.is_success:
            response.read()
            _raise_for(response)
        size = int(response.headers.get("content-length", "-1"))
        return VerifyingReader(_StreamBody(response), sha256, size)  # type: ignore[arg-type]


class RemoteEvaluation:
    """The HTTP implementation of ``registry.evaluation.EvaluationService``."""

    def __init__(self, http: _Http) -> None:
        self.http = http

    def _v(self, project: str, name: str, version: str) -> str:
        return f"{_l(project, name)}/versions/{quote(version)}"

    def digest(self, *, project: str, name: str, version: str) -> str:
        return str(self.http.call("GET", f"{self._v(project, name, version)}/digest")["digest"])

    def record(self, *, project: str, name: str, version: str, result: EvaluationIn) -> EvaluationPublic:
        body = result.model_dump(mode="json")
        return EvaluationPublic.model_validate(
            self.http.call("POST", f"{self._v(project, name, version)}/evaluations", json=body)
        )

    def evaluations(self, *, project: str, name: str, version: str) -> list[EvaluationPublic]:
        rows = self.http.call("GET", f"{self._v(project, name, version)}/evaluations")
        return [EvaluationPublic.model_validate(r) for r in rows]

    def gate(self, *, project: str, name: str, version: str) -> GateStatus:
        return GateStatus.model_validate(self.http.call("GET", f"{self._v(project, name, version)}/gate"))

    def start_trial(
        self, *, project: str, name: str, version: str, share: float | None = None, reason: str | None = None
    ) -> TrialPublic:
        body = {"version": version, "share": share, "reason": reason}
        return TrialPublic.model_validate(self.http.call("POST", f"{_l(project, name)}/trial", json=body))

    def stop_trial(self, *, project: str, name: str, reason: str | None = None) -> TrialPublic:
        answer = self.http.call("POST", f"{_l(project, name)}/trial/stop", json={"reason": reason})
        return TrialPublic.model_validate(answer)

    def trial(self, *, project: str, name: str) -> TrialPublic:
        return TrialPublic.model_validate(self.http.call("GET", f"{_l(project, name)}/trial"))

    def pick(self, *, project: str, name: str, key: str) -> Pick:
        return Pick.model_validate(self.http.call("GET", f"{_l(project, name)}/pick", params={"key": key}))

    def report(self, *, project: str, name: str, version: str, outcome: ReportIn) -> TrialPublic | None:
        answer = self.http.call("POST", f"{self._v(project, name, version)}/reports", json=outcome.model_dump())
        return TrialPublic.model_validate(answer) if answer else None

    def metrics(self, *, project: str, name: str, days: float = 30) -> list[Metrics]:
        rows = self.http.call("GET", f"{_l(project, name)}/metrics", params={"days": days})
        return [Metrics.model_validate(r) for r in rows]

    def review(self, *, project: str | None = None) -> list[ReviewItem]:
        rows = self.http.call("GET", "/api/v1/review", params={"project": project} if project else None)
        return [ReviewItem.model_validate(r) for r in rows]

    def policy_for(self, *, project: str) -> dict[str, Any]:
        return dict(self.http.call("GET", f"/api/v1/projects/{quote(project)}/policy"))


class RemoteWanlora:
    def __init__(self, server: str, token: str | None, *, default_project: str = "default") -> None:
        self.http = _Http(server, token)
        self.default_project = default_project
        self.store = RemoteStore(self.http)
        self.server = server

    @contextmanager
    def registry(self, *, write: bool = True) -> Iterator[RemoteRegistry]:
        yield RemoteRegistry(self.http)

    @contextmanager
    def evaluation(self, *, write: bool = True) -> Iterator[RemoteEvaluation]:
        yield RemoteEvaluation(self.http)

    @contextmanager
    def webhooks(self, *, write: bool = True) -> Iterator[RemoteWebhooks]:
        yield RemoteWebhooks(self.http)

    @contextmanager
    def accounts(self, *, write: bool = True) -> Iterator[RemoteAccounts]:
        yield RemoteAccounts(self.http)

    def close(self) -> None:
        self.http.client.close()

    def _upload(self, project: str, path: Path, label: str, progress: Progress | None) -> str:
        size = Path(path).stat().st_size
        digest = hashlib.sha256()

        def body() -> Iterator[bytes]:
            done = 0
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(label, done, size)
                    yield chunk

        answer = self.http.call(
            "POST",
            "/api/v1/uploads",
            params={"project": project},
            content=body(),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            timeout=None,
        )
        if answer["sha256"] != digest.hexdigest():
            raise IntegrityError(f"the server received {path.name} damaged (sha256 differs)", hint="upload again")
        return str(answer["upload_id"])

    def register(self, req: RegisterRequest, *, progress: Progress | None = None) -> VersionPublic:
        hyperparameters = dict(req.hyperparameters or {})
        if req.hyperparams_file is not None:
            hyperparameters.update(_read_json_object(req.hyperparams_file))
        dataset_hash, dataset_summary = req.dataset_hash, None
        if req.dataset_dir is not None:
            dataset_hash, dataset_summary = dataset_fingerprint(req.dataset_dir)
        for path in (req.file, req.low_noise):
            if path is not None and not Path(path).is_file():
                raise InvalidFile(f"{path} does not exist or is not a regular file")
        label = "high_noise" if req.low_noise else "single"
        body: dict[str, Any] = {
            "version": req.version,
            "bump": req.bump,
            "changelog": req.changelog,
            "file": self._upload(req.project, req.file, label, progress),
            "low_noise": self._upload(req.project, req.low_noise, "low_noise", progress) if req.low_noise else None,
            "hyperparameters": hyperparameters,
            "from_metadata": req.from_metadata,
            "dataset_hash": dataset_hash,
            "dataset_summary": dataset_summary,
            "scores": req.scores or {},
            "known_issues": req.known_issues,
            "parent": req.parent,
            "category": req.category,
            "base_model": req.base_model,
            "trigger_words": list(req.trigger_words),
        }
        answer = self.http.call("POST", f"{_l(req.project, req.lora)}/versions", content=json.dumps(body),
                                headers={"Content-Type": "application/json"})  # fmt: skip
        return VersionPublic.model_validate(answer)
