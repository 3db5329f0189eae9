"""The remote backend: the same calls as the in-process ``Wanlora``, against a team server over HTTP
(``--server URL`` / ``WANLORA_SERVER`` with ``WANLORA_TOKEN``).

``RemoteWanlora.registry()``, ``.evaluation()``, ``.accounts()`` and ``.webhooks()`` yield objects with
the operations of the backend contract (``registry.backends.contract``), returning the same public
models; server errors come back as the same ``WanloraError`` subclasses. Files go up and come down as
streams, verified by sha256 on both sides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from registry.backends.contract import Progress, SchemaStatus
from registry.backends.http import Http, RemoteStore, lora_path, project_path, raise_for
from registry.blobs.base import CHUNK
from registry.domain.accounts import TokenCreated, TokenPublic, UserPublic, UserRemoved
from registry.domain.errors import IntegrityError, InvalidFile, InvalidInput, NotFound, WanloraError
from registry.domain.eval_schemas import (
    EvaluationIn,
    EvaluationPublic,
    GateStatus,
    Metrics,
    Pick,
    ReportIn,
    ReviewItem,
    TrialPublic,
)
from registry.domain.register import RegisterRequest
from registry.domain.schemas import (
    EventPublic,
    FileMatch,
    GcReport,
    LoraPublic,
    LoraSummary,
    SyncTarget,
    VersionDiff,
    VersionPublic,
)
from registry.domain.webhooks import DeliveryPublic, PingResult, WebhookCreated, WebhookPublic
from registry.files.dataset import dataset_fingerprint
from registry.files.jsonfile import read_json_object

__all__ = ["RemoteAccounts", "RemoteEvaluation", "RemoteRegistry", "RemoteWanlora", "RemoteWebhooks"]


class RemoteRegistry:
    """The RegistryService calls, over HTTP."""

    def __init__(self, http: Http) -> None:
        self.http = http

    def list_loras(
        self,
        *,
        project: str | None = None,
        category: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[LoraSummary]:
        given = (("category", category), ("status", status), ("limit", limit), ("after", after))
        params = {k: v for k, v in given if v is not None}
        if project:
            rows = self.http.call("GET", f"{project_path(project)}/loras", params=params)
        else:
            rows = self.http.call("GET", "/api/v1/loras", params=params)
        return [LoraSummary.model_validate(r) for r in rows]

    def create_lora(
        self, *, project: str, name: str, category: str, base_model: str, trigger_words: Iterable[str] = (),
        description: str = "",
    ) -> LoraPublic:  # fmt: skip
        body = {
            "name": name,
            "category": category,
            "base_model": base_model,
            "trigger_words": list(trigger_words),
            "description": description,
        }
        return LoraPublic.model_validate(self.http.call("POST", f"{project_path(project)}/loras", json=body))

    def get_lora(self, *, project: str, name: str) -> LoraPublic:
        return LoraPublic.model_validate(self.http.call("GET", lora_path(project, name)))

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
        return VersionPublic.model_validate(
            self.http.call("GET", f"{lora_path(project, name)}/versions/{quote(version)}")
        )

    def _transition(self, path: str, reason: str | None) -> VersionPublic:
        return VersionPublic.model_validate(self.http.call("POST", path, json={"reason": reason}))

    def promote(
        self, *, project: str, name: str, version: str, reason: str | None = None, override: bool = False
    ) -> VersionPublic:
        path = f"{lora_path(project, name)}/versions/{quote(version)}/promote"
        return VersionPublic.model_validate(self.http.call("POST", path, json={"reason": reason, "override": override}))

    def rollback(self, *, project: str, name: str, reason: str | None = None) -> VersionPublic:
        return self._transition(f"{lora_path(project, name)}/rollback", reason)

    def deprecate(self, *, project: str, name: str, version: str, reason: str | None = None) -> VersionPublic:
        return self._transition(f"{lora_path(project, name)}/versions/{quote(version)}/deprecate", reason)

    def annotate(
        self, *, project: str, name: str, version: str, scores: Mapping[str, float] | None = None,
        known_issues: str | None = None,
    ) -> VersionPublic:  # fmt: skip
        body = {"scores": dict(scores or {}), "known_issues": known_issues}
        path = f"{lora_path(project, name)}/versions/{quote(version)}/annotations"
        return VersionPublic.model_validate(self.http.call("POST", path, json=body))

    def history(
        self, *, project: str, name: str | None = None, limit: int | None = None, before: int | None = None
    ) -> list[EventPublic]:
        path = f"{lora_path(project, name)}/history" if name else f"{project_path(project)}/history"
        params = {k: v for k, v in (("limit", limit), ("before", before)) if v}
        rows = self.http.call("GET", path, params=params or None)
        return [EventPublic.model_validate(r) for r in rows]

    def which(
        self, *, sha256: str | None = None, payload_sha256: str | None = None, autov3: str | None = None
    ) -> list[FileMatch]:
        params = {k: v for k, v in (("sha256", sha256), ("payload_sha256", payload_sha256), ("autov3", autov3)) if v}
        return [FileMatch.model_validate(r) for r in self.http.call("GET", "/api/v1/which", params=params)]

    def diff(self, *, project: str, name: str, old: str, new: str) -> VersionDiff:
        return VersionDiff.model_validate(
            self.http.call("GET", f"{lora_path(project, name)}/diff", params={"old": old, "new": new})
        )

    def notes(self, *, project: str, name: str) -> str:
        return str(self.http.call("GET", f"{lora_path(project, name)}/notes"))

    def current_targets(
        self, *, project: str | None = None, client: str | None = None, lora: str | None = None
    ) -> list[SyncTarget]:
        targets = self.tagged_targets(project=project, client=client)[1]
        return [t for t in targets if lora is None or t.lora == lora]

    def tagged_targets(self, *, project: str | None = None, client: str | None = None) -> tuple[str, list[SyncTarget]]:
        params = {k: v for k, v in (("project", project), ("client", client)) if v}
        response = self.http.request("GET", "/api/v1/resolve", params=params or None)
        rows = response.json()
        if not isinstance(rows, list):
            raise WanloraError(f"{self.http.base} answered /api/v1/resolve with {type(rows).__name__}, not a list")
        return response.headers.get("etag", ""), [SyncTarget.model_validate(r) for r in rows]

    def preview(self, *, project: str, name: str, version: str, client: str | None = None) -> bytes | None:
        response = self.http.client.get(
            f"{lora_path(project, name)}/versions/{quote(version)}/preview.png",
            params={"client": client} if client else None,
        )
        if response.status_code == 404:
            return None
        raise_for(response)
        return response.content

    def last_event_id(self) -> int:
        return int(self.http.call("GET", "/api/v1/changes", params={"wait": 0})["last_event_id"])


class RemoteAccounts:
    def __init__(self, http: Http) -> None:
        self.http = http

    def add_user(self, *, name: str) -> UserPublic:
        return UserPublic.model_validate(self.http.call("POST", "/api/v1/users", json={"name": name}))

    def list_users(self, *, removed: bool = False) -> list[UserPublic]:
        rows = self.http.call("GET", "/api/v1/users", params={"removed": "true"} if removed else None)
        return [UserPublic.model_validate(r) for r in rows]

    def remove_user(self, *, name: str) -> UserRemoved:
        return UserRemoved.model_validate(self.http.call("DELETE", f"/api/v1/users/{quote(name, safe='')}"))

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
    def __init__(self, http: Http) -> None:
        self.http = http

    def add(
        self, *, url: str, project: str, events: list[str], secret: str | None = None, timeout: float = 5.0
    ) -> WebhookCreated:
        body = {"url": url, "project": project, "events": events, "secret": secret, "timeout_seconds": timeout}
        return WebhookCreated.model_validate(self.http.call("POST", "/api/v1/webhooks", json=body))

    def list_webhooks(self) -> list[WebhookPublic]:
        return [WebhookPublic.model_validate(r) for r in self.http.call("GET", "/api/v1/webhooks")]

    def remove(self, *, webhook_id: int) -> WebhookPublic:
        return WebhookPublic.model_validate(self.http.call("DELETE", f"/api/v1/webhooks/{webhook_id}"))

    def test(self, *, webhook_id: int) -> PingResult:
        return PingResult.model_validate(self.http.call("POST", f"/api/v1/webhooks/{webhook_id}/test"))

    def deliveries(self, *, webhook_id: int | None = None, limit: int = 50) -> list[DeliveryPublic]:
        params: dict[str, Any] = {"limit": limit}
        if webhook_id is not None:
            params["webhook_id"] = webhook_id
        return [
            DeliveryPublic.model_validate(r)
            for r in self.http.call("GET", "/api/v1/webhooks/deliveries", params=params)
        ]


class RemoteEvaluation:
    """The HTTP implementation of ``registry.evaluation.EvaluationService``."""

    def __init__(self, http: Http) -> None:
        self.http = http

    def _v(self, project: str, name: str, version: str) -> str:
        return f"{lora_path(project, name)}/versions/{quote(version)}"

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
        return TrialPublic.model_validate(self.http.call("POST", f"{lora_path(project, name)}/trial", json=body))

    def stop_trial(self, *, project: str, name: str, reason: str | None = None) -> TrialPublic:
        answer = self.http.call("POST", f"{lora_path(project, name)}/trial/stop", json={"reason": reason})
        return TrialPublic.model_validate(answer)

    def trial(self, *, project: str, name: str) -> TrialPublic:
        return TrialPublic.model_validate(self.http.call("GET", f"{lora_path(project, name)}/trial"))

    def pick(self, *, project: str, name: str, key: str) -> Pick:
        return Pick.model_validate(self.http.call("GET", f"{lora_path(project, name)}/pick", params={"key": key}))

    def report(self, *, project: str, name: str, version: str, outcome: ReportIn) -> TrialPublic | None:
        answer = self.http.call("POST", f"{self._v(project, name, version)}/reports", json=outcome.model_dump())
        return TrialPublic.model_validate(answer) if answer else None

    def metrics(self, *, project: str, name: str, days: float = 30) -> list[Metrics]:
        rows = self.http.call("GET", f"{lora_path(project, name)}/metrics", params={"days": days})
        return [Metrics.model_validate(r) for r in rows]

    def review(self, *, project: str | None = None) -> list[ReviewItem]:
        rows = self.http.call("GET", "/api/v1/review", params={"project": project} if project else None)
        return [ReviewItem.model_validate(r) for r in rows]

    def policy_for(self, *, project: str) -> dict[str, Any]:
        return dict(self.http.call("GET", f"/api/v1/projects/{quote(project)}/policy"))


class RemoteWanlora:
    def __init__(self, server: str, token: str | None, *, default_project: str = "default") -> None:
        self.http = Http(server, token)
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

    # -- the rest of the backend contract -----------------------------------------------------------

    def wait_for_change(self, since: int, *, timeout: float = 25.0, poll: float = 0.2) -> int:
        """A long poll of the server's change feed: it answers when the log moves past ``since``."""
        answer = self.http.call(
            "GET", "/api/v1/changes", params={"since": since, "wait": timeout}, timeout=timeout + 30
        )
        return int(answer["last_event_id"])

    def _on_server(self, what: str) -> InvalidInput:
        return InvalidInput(
            f"{what} runs on the server host, not through --server ({self.server})", hint="unset WANLORA_SERVER"
        )

    def schema_status(self) -> SchemaStatus:
        raise self._on_server("`wanlora db status`")

    def upgrade_schema(self) -> tuple[str | None, str | None]:
        raise self._on_server("`wanlora db upgrade`")

    def gc(self, *, delete: bool = False, verify: bool = False) -> GcReport:
        raise self._on_server("`wanlora gc`")

    def repair(self, path: Path) -> list[str]:
        raise self._on_server("`wanlora repair`")

    def pull_as(self, client: str | None) -> None:
        self.store.client = client

    def after_command(self) -> None:
        """The server delivers webhooks itself."""

    def _upload(self, req: RegisterRequest, path: Path, label: str, progress: Progress | None) -> str:
        """One file to the server's uploads, hashed beside the send; the LoRA and base model it will be
        registered under let the server store it as it arrives."""
        size = Path(path).stat().st_size
        digest = hashlib.sha256()

        def body(hasher: ThreadPoolExecutor) -> Iterator[bytes]:
            done = 0
            pending: Future[None] | None = None
            with open(path, "rb", buffering=0) as fh:
                while chunk := fh.read(CHUNK):
                    # the previous chunk is hashed on another core while this one goes out
                    if pending is not None:
                        pending.result()
                    pending = hasher.submit(digest.update, chunk)
                    done += len(chunk)
                    if progress:
                        progress(label, done, size)
                    yield chunk
            if pending is not None:
                pending.result()

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wanlora-upload-hash") as hasher:
            answer = self.http.call(
                "POST",
                "/api/v1/uploads",
                params={
                    "project": req.project,
                    "lora": req.lora,
                    **({"base_model": req.base_model} if req.base_model else {}),
                },
                content=body(hasher),
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                timeout=None,
            )
        if answer["sha256"] != digest.hexdigest():
            raise IntegrityError(f"the server received {path.name} damaged (sha256 differs)", hint="upload again")
        return str(answer["upload_id"])

    def register(self, req: RegisterRequest, *, progress: Progress | None = None) -> VersionPublic:
        req.check()  # before a byte is uploaded
        body = req.fields()
        if req.hyperparams_file is not None:
            body["hyperparameters"] = {**read_json_object(req.hyperparams_file), **req.hyperparameters}
        if req.dataset_dir is not None:
            body["dataset_hash"], body["dataset_summary"] = dataset_fingerprint(req.dataset_dir)
        for path in (req.file, req.low_noise):
            if path is not None and not Path(path).is_file():
                raise InvalidFile(f"{path} does not exist or is not a regular file")
        label = "high_noise" if req.low_noise else "single"
        body["file"] = self._upload(req, req.file, label, progress)
        body["low_noise"] = self._upload(req, req.low_noise, "low_noise", progress) if req.low_noise else None
        answer = self.http.call("POST", f"{lora_path(req.project, req.lora)}/versions", content=json.dumps(body),
                                headers={"Content-Type": "application/json"})  # fmt: skip
        return VersionPublic.model_validate(answer)
