"""The dashboard's pages: what the caller may read, through the same services (and casbin answers) as
the API. A version the caller's role may not see does not exist here either (404)."""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.deps import MAX_ID, IdPath
from api.web.render import HEADERS, page
from api.web.report import render_markdown
from api.web.session import WebDep
from registry.domain.access import Action
from registry.domain.enums import Category, Status
from registry.domain.errors import NotFound, PermissionDenied
from registry.domain.eval_schemas import EvaluationPublic, TrialPublic
from registry.domain.notes import training_notes
from registry.domain.schemas import Change, VersionPublic

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
LORA = "/loras/{project}/{name}"
Text = Annotated[str | None, Query(max_length=200)]
PER_PAGE = 50


@router.get("/")
def loras(
    web: WebDep, request: Request, project: Text = None, q: Text = None, category: Text = None, status: Text = None,
    base_model: Text = None, trigger: Text = None, page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(alias="per", ge=1, le=200)] = PER_PAGE,
) -> HTMLResponse:  # fmt: skip
    """Projects and LoRAs: search and filters, a page at a time."""
    filters = {"project": project or None, "q": q or None, "category": category or None, "status": status or None,
               "base_model": base_model or None, "trigger": trigger or None}  # fmt: skip
    with web.wl.registry(write=False) as reg:
        found = reg.browse(
            project=filters["project"], search=filters["q"], category=filters["category"], status=filters["status"],
            base_model=filters["base_model"], trigger=filters["trigger"], offset=(page_no - 1) * per_page,
            limit=per_page,
        )  # fmt: skip
        facets = reg.facets()
        projects = reg.projects()
    pages = max(1, math.ceil(found.total / per_page))
    kept: dict[str, str | int] = {k: v for k, v in filters.items() if v}
    if per_page != PER_PAGE:
        kept["per"] = per_page

    def link(n: int) -> str:
        return "/?" + urlencode({**kept, "page": n})

    return page(request, "loras.html", {
        "found": found, "filters": filters, "facets": facets, "projects": projects, "page_no": page_no, "pages": pages,
        "prev": link(page_no - 1) if page_no > 1 else None, "next": link(page_no + 1) if page_no < pages else None,
        "categories": [c.value for c in Category], "statuses": [s.value for s in Status],
        "history": {p: web.can(p, Action.HISTORY_READ) for p in projects},
    }, web=web)  # fmt: skip


def _trial(web: WebDep, project: str, name: str) -> TrialPublic | None:
    if not web.can(project, Action.VERSION_READ_TESTING):
        return None
    try:
        with web.wl.evaluation() as ev:  # judging a running trial may end it (it also passes by the clock)
            return ev.trial(project=project, name=name)
    except NotFound:
        return None


@router.get(LORA)
def lora(web: WebDep, request: Request, project: str, name: str) -> HTMLResponse:
    """A LoRA: its current version, its trial, and every version the caller may see, with badges."""
    with web.wl.registry(write=False) as reg:
        found = reg.get_lora(project=project, name=name)
    trial = _trial(web, project, name)
    return page(request, "lora.html", {
        "lora": found, "versions": list(reversed(found.versions)), "trial": trial, "project": project,
        "can": _abilities(web, project),
    }, web=web)  # fmt: skip


def _abilities(web: WebDep, project: str) -> dict[str, bool]:
    names = {"promote": Action.VERSION_PROMOTE, "rollback": Action.VERSION_ROLLBACK,
             "deprecate": Action.VERSION_DEPRECATE, "trial": Action.VERSION_TRIAL, "history": Action.HISTORY_READ,
             "testing": Action.VERSION_READ_TESTING}  # fmt: skip
    return {key: web.can(project, action) for key, action in names.items()}


def _latest(evaluations: list[EvaluationPublic]) -> dict[str, EvaluationPublic]:
    latest: dict[str, EvaluationPublic] = {}
    for e in evaluations:
        latest[e.phase] = e
    return latest


def _evidence(web: WebDep, project: str, name: str, version: str, *, report: bool = True) -> dict[str, Any]:
    """The version's evaluations, the gate, what each evaluation kept, and the latest phase 2 report
    rendered (``report=False``: not read at all)."""
    with web.wl.evaluation(write=False) as ev:
        evaluations = ev.evaluations(project=project, name=name, version=version)
        gate = ev.gate(project=project, name=name, version=version)
        kept = ev.attachment_names(project=project, name=name, version=version)
        quality = _latest(evaluations).get("quality")
        reports = {}
        if report and quality is not None and "report.md" in kept.get(quality.id, []):
            _, text = ev.attachment(
                project=project, name=name, version=version, evaluation_id=quality.id, file="report.md"
            )
            sheet = f"{LORA.format(project=project, name=name)}/v/{version}/evaluations/{quality.id}/contact.png"
            reports[quality.id] = render_markdown(text.decode("utf-8", "replace"), images={"contact.png": sheet})
    return {"evaluations": evaluations, "latest": _latest(evaluations), "gate": gate, "kept": kept, "reports": reports}


def _sweep(evaluation: EvaluationPublic | None) -> dict[str, list[list[float]]]:
    """Phase 2's strength sweep as one line per score: strength → score."""
    sweep = (evaluation.details.get("sweep") if evaluation else None) or {}
    if not isinstance(sweep, dict):
        return {}
    by_strength = sorted(
        ((s, scores) for k, scores in sweep.items() if (s := _strength(k)) is not None and isinstance(scores, dict)),
        key=lambda pair: pair[0],
    )
    lines: dict[str, list[list[float]]] = {}
    for strength, scores in by_strength:
        for key, value in scores.items():
            if _is_number(value):
                lines.setdefault(str(key).replace("_", " "), []).append([strength, float(value)])
    return lines


def _against(evaluation: EvaluationPublic | None) -> dict[str, dict[str, float]]:
    """Phase 2's scores against the base model and the previous version."""
    if evaluation is None:
        return {}

    def numbers(values: object) -> dict[str, float]:
        return {str(k): float(v) for k, v in values.items() if _is_number(v)} if isinstance(values, dict) else {}

    ours = {k: v for k, v in evaluation.scores.items() if k != "best_strength"}
    out = {"this version": ours, "base model": numbers(evaluation.details.get("base"))}
    if evaluation.details.get("previous"):
        out[f"previous ({evaluation.details.get('previous_version', '?')})"] = numbers(evaluation.details["previous"])
    return out


def _loss(version: VersionPublic) -> dict[str, list[list[float]]]:
    curve = _training(version).get("loss_curve") or []
    if not isinstance(curve, list):
        return {"training loss": []}
    points = [p for p in curve if isinstance(p, list | tuple) and len(p) == 2 and all(map(_is_number, p))]
    return {"training loss": [[float(x), float(y)] for x, y in points]}


def _training(version: VersionPublic) -> dict[str, Any]:
    """What the bundled trainer recorded (hyperparameters["training"]); anything else is left out."""
    training = version.hyperparameters.get("training")
    if not isinstance(training, dict):
        return {}
    out = dict(training)
    for key, kind in (("val_loss_by_timestep", dict), ("diagnostics", list)):
        if not isinstance(out.get(key), kind):
            out.pop(key, None)
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strength(key: object) -> float | None:
    try:
        return float(key)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@router.get(LORA + "/v/{version}")
def version(web: WebDep, request: Request, project: str, name: str, version: str) -> HTMLResponse:
    """A version: what it was trained on and how, its files, its loss curve, its evaluation and notes."""
    with web.wl.registry(write=False) as reg:
        lora = reg.get_lora(project=project, name=name)  # every version the caller may see: one query for all
        found = next((v for v in lora.versions if v.version == version), None)
        if found is None:
            found = reg.get_version(project=project, name=name, version=version)  # raises its NotFound
    notes = training_notes(lora)
    evidence = _evidence(web, project, name, found.version)
    quality = evidence["latest"].get("quality")
    trial = _trial(web, project, name)
    training = _training(found)
    return page(request, "version.html", {
        "v": found, "lora": lora, "project": project, **evidence, "quality": quality, "sweep": _sweep(quality),
        "against": _against(quality), "loss": _loss(found), "training": training,
        "hyper": {k: v for k, v in found.hyperparameters.items() if k != "training"}, "notes": notes,
        "trial": trial, "can": _abilities(web, project),
    }, web=web)  # fmt: skip


@router.get(LORA + "/v/{version}/evaluations/{evaluation_id}/{file}")
def attachment(web: WebDep, project: str, name: str, version: str, evaluation_id: IdPath, file: str) -> Response:
    """A kept file of an evaluation: the contact sheet (PNG) or report.md (as text)."""
    if file not in ("contact.png", "report.md"):
        raise NotFound(f"evaluations keep contact.png and report.md, not {file[:64]!r}")
    with web.wl.evaluation(write=False) as ev:
        media_type, data = ev.attachment(
            project=project, name=name, version=version, evaluation_id=evaluation_id, file=file
        )
    headers = {**HEADERS, "Cache-Control": "private, max-age=3600"}
    if file == "report.md":
        media_type = "text/plain; charset=utf-8"
    return Response(data, media_type=media_type, headers=headers)


@router.get(LORA + "/v/{version}/preview.png")
def preview(web: WebDep, project: str, name: str, version: str) -> Response:
    with web.wl.registry(write=False) as reg:
        png = reg.preview(project=project, name=name, version=version)
    if png is None:
        raise NotFound(f"{project}/{name}@{version} has no preview yet", hint="phase 2 makes one")
    return Response(png, media_type="image/png", headers={**HEADERS, "Cache-Control": "private, max-age=3600"})


@router.get(LORA + "/compare")
def compare(
    web: WebDep, request: Request, project: str, name: str, old: Annotated[str, Query(max_length=64)],
    new: Annotated[str, Query(max_length=64)],
) -> HTMLResponse:  # fmt: skip
    """Two versions side by side: the diff, both sets of scores on one chart, both contact sheets."""
    with web.wl.registry(write=False) as reg:
        diff = reg.diff(project=project, name=name, old=old, new=new)
        a = reg.get_version(project=project, name=name, version=old)
        b = reg.get_version(project=project, name=name, version=new)
        lora = reg.get_lora(project=project, name=name)
    sheets = {}
    for v in (a, b):
        evidence = _evidence(web, project, name, v.version, report=False)
        q = evidence["latest"].get("quality")
        sheets[v.version] = q.id if q is not None and "contact.png" in evidence["kept"].get(q.id, []) else None
    rows = [(f"{group} · {label}", old_value, new_value)
            for group, changes in (("hyperparameter", diff.hyperparameters), ("dataset", diff.dataset),
                                   ("score", diff.scores), ("file", diff.files))
            for label, old_value, new_value in _flat(changes)]  # fmt: skip
    scores = {a.version: a.scores, b.version: b.scores}
    scores = {k: {m: s for m, s in v.items() if m != "best_strength"} for k, v in scores.items()}
    return page(request, "compare.html", {
        "diff": diff, "rows": rows, "a": a, "b": b, "lora": lora, "project": project, "scores": scores, "sheets": sheets,
        "losses": {f"{a.version}": _loss(a)["training loss"], f"{b.version}": _loss(b)["training loss"]},
    }, web=web)  # fmt: skip


def _flat(changes: dict[str, Change]) -> list[tuple[str, Any, Any]]:
    """A diff's changes as rows a person reads: nested settings one row per changed value (the trainer's
    ``training`` record among them), long lists such as loss curves named, not printed (they are charted)."""
    rows: list[tuple[str, Any, Any]] = []

    def walk(label: str, old: Any, new: Any, depth: int) -> None:
        if old == new:
            return
        if isinstance(old, dict) and isinstance(new, dict) and depth < 3:
            for key in sorted(set(old) | set(new), key=str):
                walk(f"{label} · {key}".replace("_", " "), old.get(key), new.get(key), depth + 1)
        elif any((isinstance(v, list) and len(v) > 8) or isinstance(v, dict) for v in (old, new)):
            rows.append((label, _size(old), _size(new) + (" (charted below)" if "curve" in label else "")))
        else:
            rows.append((label, old, new))

    for key, change in sorted(changes.items()):
        walk(key.replace("_", " "), change.old, change.new, 0)
    return rows


def _size(value: Any) -> str:
    if isinstance(value, list | dict):
        return f"{len(value)} {'values' if isinstance(value, list) else 'settings'}"
    return "—" if value is None else str(value)


def _events(web: WebDep, request: Request, project: str, name: str | None, before: int | None) -> HTMLResponse:
    if not web.can(project, Action.HISTORY_READ):
        raise PermissionDenied(f"{web.principal.describe()} may not read the history of project {project}")
    with web.wl.registry(write=False) as reg:
        events = reg.history(project=project, name=name, limit=EVENTS_PER_PAGE + 1, before=before)
    older = events[EVENTS_PER_PAGE - 1].id if len(events) > EVENTS_PER_PAGE else None
    return page(request, "events.html", {
        "events": events[:EVENTS_PER_PAGE], "project": project, "name": name,
        "older": f"{request.url.path}?before={older}" if older else None, "paged": before is not None,
    }, web=web)  # fmt: skip


EVENTS_PER_PAGE = 100
Before = Annotated[int | None, Query(ge=1, le=MAX_ID)]


@router.get(LORA + "/events")
def lora_events(web: WebDep, request: Request, project: str, name: str, before: Before = None) -> HTMLResponse:
    """The LoRA's event timeline: who, when, from → to, why; overrides with what was missing."""
    return _events(web, request, project, name, before)


@router.get("/projects/{project}/events")
def project_events(web: WebDep, request: Request, project: str, before: Before = None) -> HTMLResponse:
    """Every LoRA's events in a project, newest first, a page at a time."""
    return _events(web, request, project, None, before)


@router.get(LORA + "/trial")
def trial(web: WebDep, request: Request, project: str, name: str) -> HTMLResponse:
    """The running (or last) trial: share, reports, error rate and rating against current, verdict. The
    page refreshes its figures every few seconds from ``trial.json``."""
    with web.wl.evaluation() as ev:
        found = ev.trial(project=project, name=name)
    with web.wl.registry(write=False) as reg:
        lora = reg.get_lora(project=project, name=name)
    return page(request, "trial.html", {"trial": found, "lora": lora, "project": project,
                                         "can": _abilities(web, project)}, web=web)  # fmt: skip


@router.get(LORA + "/trial.json")
def trial_json(web: WebDep, project: str, name: str) -> JSONResponse:
    with web.wl.evaluation() as ev:
        found = ev.trial(project=project, name=name)
    return JSONResponse(found.model_dump(mode="json"), headers=HEADERS)


@router.get("/review")
def review(web: WebDep, request: Request, project: Text = None) -> HTMLResponse:
    """The monthly review: current versions whose metrics drifted, and those due for retraining."""
    with web.wl.evaluation(write=False) as ev:
        items = ev.review(project=project or None)
    return page(request, "review.html", {"items": items, "project": project}, web=web)
