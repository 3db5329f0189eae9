"""The version log as ``training_notes.md``, in the form of the practice guide.

Per version, newest first: date, dataset, hyperparameters, changes, test results, issues, status; the
current version is marked in its heading.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from registry.domain.enums import Status
from registry.domain.schemas import LoraPublic, VersionPublic

__all__ = ["training_notes"]

_LABELS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("learning_rate", "LR", lambda v: f"{v:g}"),
    ("rank", "Dim", str),
    ("alpha", "Alpha", lambda v: f"{v:g}"),
    ("epochs", "Epochs", str),
    ("batch_size", "Batch", str),
    ("steps", "Steps", str),
    ("optimizer", "Optimizer", str),
    ("lr_scheduler", "Scheduler", str),
]


def _dataset(v: VersionPublic) -> str:
    s = v.dataset_summary
    parts = []
    if s.get("samples"):
        kind = str(s.get("kind") or "samples")
        parts.append(f"{s['samples']} {kind}")
    if v.dataset_hash:
        parts.append(f"hash {v.dataset_hash[:19]}")
    extra = {k: val for k, val in s.items() if k not in ("samples", "kind")}
    if extra:
        parts.append(", ".join(f"{k} {val}" for k, val in sorted(extra.items())))
    return "; ".join(parts) if parts else "not recorded"


def _hyperparameters(v: VersionPublic) -> str:
    hp = dict(v.hyperparameters)
    if "rank" not in hp and v.files:
        hp["rank"] = v.files[0].rank
    shown = [f"{label} {fmt(hp.pop(key))}" for key, label, fmt in _LABELS if key in hp]
    shown += [f"{k} {val}" for k, val in sorted(hp.items())]
    return ", ".join(shown) if shown else "not recorded"


def _scores(v: VersionPublic) -> str:
    if not v.scores:
        return "not evaluated yet"
    return ", ".join(f"{value:g}/10 {name.replace('_', ' ')}" for name, value in sorted(v.scores.items()))


def _status(v: VersionPublic, lora: LoraPublic) -> tuple[str, str]:
    if v.status is Status.CURRENT:
        if v.promoted_on_override:
            return (
                "CURRENT PRODUCTION (OVERRIDE)",
                f"In production on an admin's override, without the three-phase evidence: {v.promoted_on_override}",
            )
        return "CURRENT PRODUCTION", "Production approved"
    if v.status is Status.TESTING:
        return "TESTING", "Testing"
    order = [x.version for x in lora.versions]
    current = lora.current_version
    if current is None:
        return "DEPRECATED", "Deprecated"
    if order.index(current) > order.index(v.version):
        return "DEPRECATED", f"Superseded by v{current}"
    return "DEPRECATED", f"Deprecated (current is v{current})"


def training_notes(lora: LoraPublic) -> str:
    lines = [f"# {lora.category.value.title()}: {lora.name}", ""]
    meta = [f"Project: {lora.project}", f"Base model: {lora.base_model}"]
    if lora.trigger_words:
        meta.append(f"Trigger words: {', '.join(lora.trigger_words)}")
    lines += [" · ".join(meta), ""]
    if lora.description:
        lines += [lora.description, ""]
    if not lora.versions:
        lines.append("_No versions registered yet._")
    for v in reversed(lora.versions):  # versions only go up, so semver order is time order
        tag, status = _status(v, lora)
        when = (v.training_date or v.created_at).date().isoformat()
        lines += [
            f"## v{v.version} - {when} ({tag})",
            f"- Dataset: {_dataset(v)}",
            f"- Hyperparameters: {_hyperparameters(v)}",
            f"- Changes: {v.changelog}",
            f"- Test results: {_scores(v)}",
            f"- Issues: {v.known_issues or 'None identified'}",
            f"- Status: {status}",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"
