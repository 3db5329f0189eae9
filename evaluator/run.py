"""Phases 1 and 2 end to end against the registry (embedded or a server): fetch the version's files
(verified), load the base model once, run the phases, record each result with the digest of the files
it was made on, and write the report.

A file that is not registered yet can be checked too (``EvalRequest.files``): nothing is recorded then.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import semver

from evaluator.generate import GenerationSettings, Generator
from evaluator.prompts import load_prompts, production_prompts
from evaluator.quality import run_quality
from evaluator.scorer import ClipScorer, Scorer
from evaluator.technical import PhaseResult, check_structure, run_technical
from registry.backends.contract import Backend
from registry.blobs.base import ArtifactSource
from registry.domain.digests import file_sha256, files_digest
from registry.domain.errors import InvalidFile, InvalidInput, WanloraError
from registry.domain.eval_schemas import MAX_CONTACT_SHEET_BYTES, MAX_PREVIEW_BYTES, MAX_REPORT_CHARS, EvaluationIn
from registry.domain.policy import ProjectPolicy
from registry.domain.schemas import VersionPublic
from registry.domain.wan import base_model as lookup_base_model
from registry.files.ingest import ingest_lora

__all__ = ["EvalRequest", "evaluate"]

Progress = Callable[[str, int, int], None]


@dataclass
class EvalRequest:
    project: str
    lora: str
    version: str | None = None
    files: dict[str, Path] | None = None  # an unregistered file (or pair): checked, not recorded
    base_model: str | None = None  # needed with ``files``
    tiny: bool = False
    model_path: Path | None = None
    clip: Path | None = None
    references: Path | None = None
    prompts_file: Path | None = None
    prompts: int | None = None
    out: Path = Path("wanlora-evals")
    seed: int = 0
    record: bool = True
    settings: GenerationSettings | None = None
    scorer: Scorer | None = None
    generator: Generator | None = None  # reuse a loaded base model (and its cached outputs) across versions
    results: dict[str, PhaseResult] = field(default_factory=dict)


def _fetch(store: ArtifactSource, version: VersionPublic, folder: Path) -> dict[str, Path]:
    """The version's files, streamed from the store and verified against their sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for f in version.files:
        path = folder / f"{f.sha256}.safetensors"
        if not path.exists():
            tmp = path.with_suffix(".part")
            with store.open(f.sha256) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # the reader raises IntegrityError on a mismatch
            tmp.replace(path)
        out[f.role.value] = path
    return out


def _previous(versions: list[VersionPublic], version: VersionPublic) -> VersionPublic | None:
    """The version this one is compared with: its parent, else the highest one below it."""
    by_name = {v.version: v for v in versions}
    if version.parent_version and version.parent_version in by_name:
        return by_name[version.parent_version]
    below = [v for v in versions if semver.Version.parse(v.version) < semver.Version.parse(version.version)]
    return max(below, key=lambda v: semver.Version.parse(v.version)) if below else None


def _references(folder: Path, limit: int = 32) -> list[np.ndarray]:
    """Up to ``limit`` reference images from a dataset folder (images, or the first frame of videos)."""
    from trainer.dataset import check_dataset

    report = check_dataset(folder)
    if not report.samples:
        raise InvalidInput(f"no images or videos in {folder}", hint="--references takes a dataset folder")
    images = []
    for sample in report.samples[:limit]:
        if sample.kind == "image":
            from PIL import Image

            with Image.open(sample.path) as im:
                images.append(np.asarray(im.convert("RGB")))
        else:
            import av

            with av.open(str(sample.path)) as container:
                frame = next(container.decode(video=0))
                images.append(frame.to_ndarray(format="rgb24"))
    return images


class _FolderWriter:
    """Writes one canonical copy into a folder, named by its sha256 when committed."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self._tmp = folder, folder / f".part-{os.getpid()}-{id(self)}"
        self._fh, self._hash, self._size = open(self._tmp, "wb"), hashlib.sha256(), 0  # noqa: SIM115

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._size += self._fh.write(data)

    def commit(self) -> tuple[str, int, bool]:
        self._fh.close()
        sha = self._hash.hexdigest()
        os.replace(self._tmp, self.folder / f"{sha}.safetensors")
        return sha, self._size, True

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


@dataclass
class _Folder:
    folder: Path

    def writer(self) -> _FolderWriter:
        return _FolderWriter(self.folder)


def _canonical(files: dict[str, Path], base_model: str, folder: Path) -> dict[str, Path]:
    """An unregistered file in the canonical form register stores (and ComfyUI and diffusers load), so
    that what is checked is what would be served; the file is refused as register would refuse it."""
    base = lookup_base_model(base_model)
    out = {}
    for role, path in files.items():
        try:
            stored = ingest_lora(path, _Folder(folder), base=base)
        except InvalidFile:
            out[role] = path  # phase 1's integrity check reports what is wrong with it
            continue
        out[role] = folder / f"{stored.sha256}.safetensors"
    return out


def evaluate(backend: Backend, req: EvalRequest, phases: list[str], progress: Progress | None = None) -> dict[str, Any]:
    """Run ``phases`` ("technical", "quality") and, for a registered version, record each result."""
    previous: VersionPublic | None = None
    previous_files: dict[str, Path] | None = None
    trigger = req.lora
    with backend.evaluation(write=False) as ev:
        policy = ProjectPolicy.model_validate(ev.policy_for(project=req.project))
    if req.files is not None:
        if not req.base_model:
            raise InvalidInput("checking a file needs its --base-model")
        base_model, label, version = req.base_model, req.lora, None
        files = _canonical(req.files, base_model, req.out / "files")  # as register would store them
    else:
        with backend.registry(write=False) as reg:
            lora = reg.get_lora(project=req.project, name=req.lora)
            version = reg.get_version(project=req.project, name=req.lora, version=req.version)
        base_model, label = lora.base_model, f"{req.lora}@{version.version}"
        trigger = ", ".join(lora.trigger_words) or req.lora
        files = _fetch(backend.store, version, req.out / "files")
        if "quality" in phases:
            previous = _previous(lora.versions, version)
            previous_files = _fetch(backend.store, previous, req.out / "files") if previous else None
    digest = files_digest(_shas(version, files))

    generator = req.generator
    if generator is None or generator.base_model != base_model:
        generator = Generator.load(base_model, tiny=req.tiny, model_path=req.model_path, settings=req.settings)
        req.generator = generator
    adapter = f"c{digest[:12]}"  # one adapter per file set: versions can share a generator
    summary: dict[str, Any] = {"lora": label, "base_model": base_model, "digest": digest, "phases": {}}
    out = req.out / label.replace("@", "-")
    tiny_counts = {"technical": 3, "quality": 4}
    structure = check_structure(files, base_model, policy.technical)
    if all(c.passed for c in structure) and not generator.has_lora(adapter):
        generator.add_lora(adapter, files)
    for phase in phases:
        if req.prompts_file:
            prompts = load_prompts(req.prompts_file)
        else:
            count = req.prompts or (tiny_counts[phase] if req.tiny else getattr(policy, phase).prompts)
            prompts = production_prompts(trigger, count, seed=req.seed)
        if not all(c.passed for c in structure):  # not a sound LoRA: no phase generates with it
            result = PhaseResult(phase, checks=structure)
        elif phase == "technical":
            result = run_technical(files, base_model, generator, policy.technical, prompts, seed=req.seed,
                                   progress=progress, adapter=adapter, structure=structure)  # fmt: skip
        else:
            prev = None
            if previous is not None and previous_files is not None:
                try:
                    name = "p" + files_digest((f.role.value, f.sha256) for f in previous.files)[:12]
                    if not generator.has_lora(name):
                        generator.add_lora(name, previous_files)
                    prev = (name, float(previous.scores.get("best_strength", 1.0)))
                except (WanloraError, ValueError, KeyError) as exc:  # an older file the base cannot load
                    summary["previous_skipped"] = str(exc)
            scorer = req.scorer or (ClipScorer.from_path(req.clip) if req.clip else _default_scorer(req))
            references = _references(req.references) if req.references else None
            result = run_quality(
                generator, scorer, policy.quality, prompts, adapter=adapter, previous=prev, references=references, out_dir=out,
                seed=req.seed, progress=progress, label=label,
            )  # fmt: skip
            if previous is not None:
                result.details["previous_version"] = previous.version
        req.results[phase] = result
        summary["phases"][phase] = _describe(result)
        if version is not None and req.record:
            with backend.evaluation() as ev:
                recorded = ev.record(
                    project=req.project, name=req.lora, version=version.version,
                    result=EvaluationIn(
                        phase=phase, digest=digest, passed=result.passed, summary=result.summary[:4000],  # type: ignore[arg-type]
                        scores=result.scores, details=_jsonable(result.record()), preview_png=_preview(result),
                        **_report_files(result),
                    ),
                )  # fmt: skip
            summary["phases"][phase]["evaluation_id"] = recorded.id
    summary["forward_passes"] = dict(generator.forward_passes)
    return summary


def _preview(result: PhaseResult) -> str | None:
    """Phase 2's preview frame, base64, for the registry to hand to hosts (sync's ``.preview.png``)."""
    path = result.details.get("preview")
    if not path or not Path(path).is_file() or Path(path).stat().st_size > MAX_PREVIEW_BYTES:
        return None
    return base64.b64encode(Path(path).read_bytes()).decode()


def _report_files(result: PhaseResult) -> dict[str, str]:
    """Phase 2's contact sheet (base64) and report.md, for the dashboard, where they were written and fit."""
    report = result.details.get("report")
    if not report or not Path(report).is_file():
        return {}
    out = {}
    text = Path(report).read_text(encoding="utf-8")
    if len(text) <= MAX_REPORT_CHARS:
        out["report_md"] = text
    sheet = Path(report).parent / "contact.png"
    if sheet.is_file() and sheet.stat().st_size <= MAX_CONTACT_SHEET_BYTES:
        out["contact_sheet_png"] = base64.b64encode(sheet.read_bytes()).decode()
    return out


def _default_scorer(req: EvalRequest) -> Scorer:
    if req.tiny:
        return ClipScorer.tiny()
    raise InvalidInput(
        "phase 2 needs a CLIP model for its scores", hint="pass --clip PATH (a local CLIP folder), or --tiny"
    )


def _shas(version: VersionPublic | None, files: dict[str, Path]) -> list[tuple[str, str]]:
    if version is not None:
        return [(f.role.value, f.sha256) for f in version.files]
    return [(role, file_sha256(path)) for role, path in files.items()]


def _describe(result: PhaseResult) -> dict[str, Any]:
    return {"passed": result.passed, "summary": result.summary, "scores": result.scores, **_jsonable(result.record())}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
