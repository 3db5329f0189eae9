"""The host agent: phase 3 from real jobs. It follows the local ComfyUI's ``/history`` and, for each
finished prompt that used a managed LoRA, reports to the registry under the host's client id: the
version the prompt really used, success or the ``execution_error``, and the execution time.

- The version used comes from what the wanlora loader node showed for that prompt (its ``wanlora``
  UI output, which ComfyUI keeps for cached nodes too); for the stock ``LoraLoader`` on a file under
  ``wanlora/``, from the manifest entry of that file when the prompt is seen.
- Reports are idempotent per prompt id: the prompt id is the job id, which the registry refuses twice
  (``AlreadyExists`` counts as sent), and the prompts already handled are remembered on disk, so a
  restarted agent counts nothing twice.
- While the registry cannot be reached, reports wait in an outbox on disk (written atomically) and are
  sent on a later pass.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from registry.domain.errors import AlreadyExists, InvalidInput, NotFound, PermissionDenied, WanloraError
from registry.domain.eval_schemas import ReportIn
from registry.sync.folder import ROOT, load_manifest, write_atomic

__all__ = ["AgentPass", "ReportAgent", "uses_of"]

Reporter = Callable[[str, str, str, ReportIn], object]  # project, lora, version, outcome
STOCK_LOADERS = ("LoraLoader", "LoraLoaderModelOnly")
MAX_REMEMBERED = 20_000  # prompt ids kept to recognise what was already handled
HISTORY_ITEMS = 256


@dataclass
class AgentPass:
    seen: int = 0  # finished prompts new to the agent
    queued: int = 0  # reports added to the outbox
    sent: int = 0
    duplicates: int = 0  # already known to the registry: a restarted agent's earlier sends
    dropped: list[str] = field(default_factory=list)  # refused for good (no such version, no right)
    waiting: int = 0  # still in the outbox: the registry could not be reached
    error: str | None = None


def _manifest_versions(loras_root: Path) -> dict[str, dict[str, Any]]:
    """What sync recorded, to name the version behind a stock loader's file; nothing if unreadable."""
    try:
        return load_manifest(loras_root / ROOT)[0]
    except (OSError, InvalidInput):
        return {}


def uses_of(entry: dict[str, Any], manifest: dict[str, dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(project, lora, version) of every managed LoRA a finished prompt used."""
    uses = set()
    for output in (entry.get("outputs") or {}).values():
        for used in (output or {}).get("wanlora", []) if isinstance(output, dict) else []:
            if isinstance(used, dict) and isinstance(used.get("lora"), str) and used["lora"].count("/") == 2:
                project, _, lora = used["lora"].split("/")
                uses.add((project, lora, str(used.get("version", ""))))
    prompt = entry.get("prompt")
    graph = prompt[2] if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], dict) else {}
    for node in graph.values():
        if not isinstance(node, dict) or node.get("class_type") not in STOCK_LOADERS:
            continue
        name = str((node.get("inputs") or {}).get("lora_name", "")).replace("\\", "/")
        if name.startswith("wanlora/"):
            managed = manifest.get(name.removeprefix("wanlora/"))
            if managed and managed.get("role") != "sidecar":
                uses.add((str(managed.get("project")), str(managed.get("lora")), str(managed.get("version"))))
    return {u for u in uses if all(u)}


def _outcome(prompt_id: str, entry: dict[str, Any], client_id: str | None) -> ReportIn:
    status = entry.get("status") or {}
    messages = [m for m in status.get("messages", []) if isinstance(m, list) and len(m) == 2]
    stamps = {kind: data.get("timestamp") for kind, data in messages if isinstance(data, dict)}
    error = next((data for kind, data in messages if kind == "execution_error" and isinstance(data, dict)), None)
    start, end = stamps.get("execution_start"), stamps.get("execution_success") or stamps.get("execution_error")
    seconds = (
        max(0.0, (end - start) / 1000) if isinstance(start, int | float) and isinstance(end, int | float) else None
    )
    success = status.get("status_str") == "success" and error is None
    why = None
    if not success:
        why = f"{(error or {}).get('exception_type', 'error')}: {(error or {}).get('exception_message', '')}".strip()
    return ReportIn(
        job_id=prompt_id[:128],
        success=success,
        seconds=seconds,
        client_id=client_id,
        error=why[:4000] if why else None,
    )


class ReportAgent:
    """Reports the finished prompts of one ComfyUI (``comfyui_url``) through ``report``."""

    def __init__(
        self, *, comfyui_url: str, loras_root: Path, report: Reporter, state_dir: Path, client_id: str | None = None
    ) -> None:
        self.url = comfyui_url.rstrip("/")
        self.loras_root = loras_root
        self.report = report
        self.client_id = client_id
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._seen_file = state_dir / "prompts-seen.json"
        self._outbox_file = state_dir / "outbox.json"
        self._lock = threading.Lock()

    def _load(self, path: Path, default: Any) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return default
        except ValueError:
            raise WanloraError(
                f"{path} is damaged", hint="delete it; prompts it listed may be reported again"
            ) from None

    def _save(self, path: Path, data: Any) -> None:
        write_atomic(path, json.dumps(data).encode())

    def run_once(self) -> AgentPass:
        """Read the history, queue what is new, send what waits."""
        with self._lock:
            result = AgentPass()
            seen: list[str] = self._load(self._seen_file, [])
            outbox: list[dict[str, Any]] = self._load(self._outbox_file, [])
            try:
                history = httpx.get(f"{self.url}/history", params={"max_items": HISTORY_ITEMS}, timeout=10).json()
            except (httpx.HTTPError, ValueError) as exc:
                history = {}
                result.error = f"ComfyUI at {self.url} did not answer: {exc}"
            known = set(seen)
            manifest = _manifest_versions(self.loras_root)
            for prompt_id, entry in history.items() if isinstance(history, dict) else ():
                done = isinstance(entry, dict) and (entry.get("status") or {}).get("completed") is not None
                if prompt_id in known or not done or not (entry.get("status") or {}).get("status_str"):
                    continue
                outcome = _outcome(str(prompt_id), entry, self.client_id)
                for project, lora, version in sorted(uses_of(entry, manifest)):
                    outbox.append({"project": project, "lora": lora, "version": version, **outcome.model_dump()})
                    result.queued += 1
                seen.append(str(prompt_id))
                known.add(str(prompt_id))
                result.seen += 1
            # The outbox is on disk before the prompts count as seen: a kill in between re-queues, and the
            # registry's per-job uniqueness keeps that from counting twice.
            self._save(self._outbox_file, outbox)
            self._save(self._seen_file, seen[-MAX_REMEMBERED:])
            self._flush(outbox, result)
            return result

    def _flush(self, outbox: list[dict[str, Any]], result: AgentPass) -> None:
        left = []
        for i, item in enumerate(outbox):
            outcome = ReportIn.model_validate(
                {k: v for k, v in item.items() if k not in ("project", "lora", "version")}
            )
            try:
                self.report(item["project"], item["lora"], item["version"], outcome)
                result.sent += 1
            except AlreadyExists:
                result.duplicates += 1
            except (NotFound, PermissionDenied, InvalidInput) as exc:
                result.dropped.append(f"{item['project']}/{item['lora']}@{item['version']} {item['job_id']}: {exc}")
            except WanloraError as exc:  # the registry is out of reach: keep the rest for the next pass
                result.error = str(exc)
                left = outbox[i:]
                break
        result.waiting = len(left)
        self._save(self._outbox_file, left)

    def run_forever(
        self, stop: threading.Event, interval: float = 2.0, on_pass: Callable[[AgentPass], None] | None = None
    ) -> None:
        while not stop.is_set():
            try:
                outcome = self.run_once()
            except WanloraError as exc:  # a damaged state file, say: say so and keep the host syncing
                outcome = AgentPass(error=f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
            if on_pass and (outcome.seen or outcome.sent or outcome.error or outcome.dropped):
                on_pass(outcome)
            stop.wait(interval)
