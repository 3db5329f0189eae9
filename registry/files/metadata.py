"""Read training facts from the metadata trainers write into safetensors headers.

kohya's ``ss_*`` keys (sd-scripts, musubi-tuner) and the ``modelspec.*`` keys become hyperparameters,
a dataset summary, a training date and a dataset hash (``wanlora.dataset_hash`` or ``ss_dataset_hash``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["TrainingFacts", "facts_from_metadata"]

# ss_* key → (hyperparameter name, parser)
_SS_KEYS: dict[str, tuple[str, type]] = {
    "ss_learning_rate": ("learning_rate", float),
    "ss_unet_lr": ("learning_rate", float),
    "ss_network_dim": ("rank", int),
    "ss_network_alpha": ("alpha", float),
    "ss_num_epochs": ("epochs", int),
    "ss_max_train_steps": ("steps", int),
    "ss_batch_size_per_device": ("batch_size", int),
    "ss_gradient_accumulation_steps": ("gradient_accumulation_steps", int),
    "ss_optimizer": ("optimizer", str),
    "ss_lr_scheduler": ("lr_scheduler", str),
    "ss_lr_scheduler_num_cycles": ("lr_scheduler_num_cycles", int),
    "ss_lr_warmup_steps": ("warmup_steps", int),
    "ss_mixed_precision": ("mixed_precision", str),
    "ss_seed": ("seed", int),
    "ss_max_grad_norm": ("max_grad_norm", float),
    "ss_network_module": ("network_module", str),
    "ss_timestep_sampling": ("timestep_sampling", str),
    "ss_discrete_flow_shift": ("discrete_flow_shift", float),
    "ss_min_timestep": ("min_timestep", int),
    "ss_max_timestep": ("max_timestep", int),
    "ss_noise_offset": ("noise_offset", float),
}


@dataclass
class TrainingFacts:
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    dataset_summary: dict[str, Any] = field(default_factory=dict)
    dataset_hash: str | None = None
    training_date: datetime | None = None
    trigger_words: list[str] = field(default_factory=list)
    description: str | None = None


def _parse(kind: type, raw: str) -> Any:
    if raw in ("", "None", "null"):
        return None
    if kind is bool:
        return raw.lower() == "true"
    try:
        return kind(float(raw)) if kind is int else kind(raw)
    except ValueError:
        return None


def _date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromtimestamp(float(raw), tz=timezone.utc)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def facts_from_metadata(meta: dict[str, str]) -> TrainingFacts:
    facts = TrainingFacts()
    for key, (name, kind) in _SS_KEYS.items():
        if key in meta and name not in facts.hyperparameters:
            value = _parse(kind, meta[key])
            if value is not None:
                facts.hyperparameters[name] = value
    if "ss_gradient_checkpointing" in meta:
        facts.hyperparameters["gradient_checkpointing"] = meta["ss_gradient_checkpointing"].lower() == "true"
    if meta.get("ss_resolution"):
        try:
            res = json.loads(meta["ss_resolution"].replace("(", "[").replace(")", "]"))
            facts.hyperparameters["resolution"] = res if isinstance(res, int) else [int(x) for x in res]
        except (ValueError, TypeError):
            pass
    images = _parse(int, meta.get("ss_num_train_images", ""))
    if images:
        facts.dataset_summary["samples"] = images
    if meta.get("ss_dataset_dirs"):
        try:
            dirs = json.loads(meta["ss_dataset_dirs"])
            facts.dataset_summary["dirs"] = {k: v.get("img_count") for k, v in dirs.items() if isinstance(v, dict)}
        except (ValueError, AttributeError):
            pass
    facts.dataset_hash = meta.get("wanlora.dataset_hash") or meta.get("ss_dataset_hash") or None
    facts.training_date = (
        _date(meta.get("ss_training_finished_at"))
        or _date(meta.get("ss_training_started_at"))
        or _date(meta.get("modelspec.date"))
    )
    trigger = meta.get("modelspec.trigger_phrase")
    if trigger:
        facts.trigger_words = [w.strip() for w in trigger.split(",") if w.strip()]
    facts.description = meta.get("modelspec.description") or None
    if meta.get("modelspec.architecture"):
        facts.hyperparameters.setdefault("architecture", meta["modelspec.architecture"])
    return facts
