"""LoRAs and versions: read, register, promote, roll back, deprecate, annotate, history, diff, notes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from api.deps import MAX_ID, CallerDep, StateDep
from api.errors import ERROR_RESPONSES
from api.routes.files import ClientQuery, find_upload, may_register
from registry.backends.uploads import KeptUpload
from registry.domain.errors import NotFound, PermissionDenied
from registry.domain.limits import MAX_PAGE
from registry.domain.register import RegisterRequest, VersionFields
from registry.domain.schemas import EventPublic, LoraPublic, LoraSummary, VersionDiff, VersionPublic

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["loras"], responses=ERROR_RESPONSES)


class LoraCreate(BaseModel):
    name: str = Field(examples=["sarah"])
    category: str = Field(examples=["character"])
    base_model: str = Field(examples=["wan2.2-t2v-a14b"])
    trigger_words: list[str] = Field(default_factory=list, examples=[["sarah"]])
    description: str = ""


class VersionCreate(VersionFields):
    """Register uploaded files (see POST /api/v1/uploads) as a new testing version."""

    file: str = Field(description="Upload id of the file (the high-noise expert for A14B).", examples=["u_3f2a…"])
    low_noise: str | None = Field(default=None, description="Upload id of the low-noise expert (A14B).")


class Reason(BaseModel):
    reason: str | None = Field(default=None, examples=["passed the three-phase test"])


class Promotion(Reason):
    override: bool = Field(default=False, description="Promote without the required evidence (admin; needs a reason).")


class Annotation(BaseModel):
    scores: dict[str, float] = Field(default_factory=dict, examples=[{"prompt_flexibility": 8.9}])
    known_issues: str | None = None


ReasonBody = Annotated[Reason | None, Body()]


every_project = APIRouter(prefix="/api/v1", tags=["loras"], responses=ERROR_RESPONSES)


PageLimit = Annotated[
    int | None, Query(ge=1, le=MAX_PAGE, description="At most this many LoRAs (a page); without it, all.")
]
PageAfter = Annotated[
    str | None,
    Query(max_length=200, description="The page after this LoRA (`name`, or `project/name` across projects)."),
]


@every_project.get("/loras", summary="List LoRAs of every project this caller may read (paged with limit/after)")
def list_all_loras(
    caller: CallerDep,
    category: str | None = None,
    status: str | None = None,
    limit: PageLimit = None,
    after: PageAfter = None,
) -> list[LoraSummary]:
    with caller.registry(write=False) as reg:
        return reg.list_loras(category=category, status=status, limit=limit, after=after)


@router.get("/loras", summary="List LoRAs (paged with limit/after)")
def list_loras(
    project: str,
    caller: CallerDep,
    category: str | None = None,
    status: str | None = None,
    limit: PageLimit = None,
    after: PageAfter = None,
) -> list[LoraSummary]:
    """Ordered by name. With `limit`, one page; the next starts `after` the last name of this one."""
    with caller.registry(write=False) as reg:
        return reg.list_loras(project=project, category=category, status=status, limit=limit, after=after)


@router.post("/loras", status_code=201, summary="Create a LoRA")
def create_lora(project: str, body: LoraCreate, caller: CallerDep) -> LoraPublic:
    with caller.registry() as reg:
        return reg.create_lora(project=project, **body.model_dump())


@router.get("/loras/{name}", summary="A LoRA with the versions this caller may see")
def get_lora(project: str, name: str, caller: CallerDep) -> LoraPublic:
    with caller.registry(write=False) as reg:
        return reg.get_lora(project=project, name=name)


@router.get("/loras/{name}/versions/{version}", summary="One version")
def get_version(project: str, name: str, version: str, caller: CallerDep) -> VersionPublic:
    with caller.registry(write=False) as reg:
        return reg.get_version(project=project, name=name, version=version)


@router.get(
    "/loras/{name}/versions/{version}/preview.png",
    summary="The version's phase 2 preview (a contact-sheet frame)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def preview(project: str, name: str, version: str, caller: CallerDep, client: ClientQuery = None) -> Response:
    with caller.registry(write=False) as reg:
        png = reg.preview(project=project, name=name, version=version, client=client)
    if png is None:
        raise NotFound(f"{project}/{name}@{version} has no preview", hint="phase 2 (`wanlora eval quality`) makes one")
    return Response(png, media_type="image/png")


@router.post("/loras/{name}/versions", status_code=201, summary="Register uploaded files as a testing version")
def register_version(project: str, name: str, body: VersionCreate, caller: CallerDep, state: StateDep) -> VersionPublic:
    if not may_register(caller, project):  # before anything about the uploads it names
        raise PermissionDenied(f"{caller.principal.describe()} may not register versions in {project}")
    files = [body.file] + ([body.low_noise] if body.low_noise else [])
    found = [find_upload(state, upload_id) for upload_id in files]
    # what each upload hashed and stored as it arrived: used only while the file is the one it was made of
    kept = {upload.path: upload for _, upload in found}
    paths = [upload.path for _, upload in found]
    try:
        return caller.register_uploaded(
            RegisterRequest(
                project=project,
                lora=name,
                file=paths[0],
                low_noise=paths[1] if len(paths) > 1 else None,
                **body.fields(),
            ),
            kept,
        )
    finally:
        for path, _ in found:
            KeptUpload.remove(path)  # an upload is used once, whatever the outcome


@router.post("/loras/{name}/versions/{version}/promote", summary="testing → current (admin)")
def promote(
    project: str, name: str, version: str, caller: CallerDep, body: Annotated[Promotion | None, Body()] = None
) -> VersionPublic:
    """Refused (409 `gate_refused`) unless the phases the project's policy requires passed for this
    version's files, or `override` is set with a reason (recorded as an override)."""
    with caller.registry() as reg:
        return reg.promote(
            project=project, name=name, version=version, reason=body.reason if body else None,
            override=bool(body and body.override),
        )  # fmt: skip


@router.post("/loras/{name}/rollback", summary="Back to the version that was current before (admin)")
def rollback(project: str, name: str, caller: CallerDep, body: ReasonBody = None) -> VersionPublic:
    with caller.registry() as reg:
        return reg.rollback(project=project, name=name, reason=body.reason if body else None)


@router.post("/loras/{name}/versions/{version}/deprecate", summary="Retire a version (admin)")
def deprecate(project: str, name: str, version: str, caller: CallerDep, body: ReasonBody = None) -> VersionPublic:
    with caller.registry() as reg:
        return reg.deprecate(project=project, name=name, version=version, reason=body.reason if body else None)


@router.post("/loras/{name}/versions/{version}/annotations", summary="Record scores or known issues")
def annotate(project: str, name: str, version: str, body: Annotation, caller: CallerDep) -> VersionPublic:
    with caller.registry() as reg:
        return reg.annotate(
            project=project, name=name, version=version, scores=body.scores, known_issues=body.known_issues
        )


HistoryLimit = Annotated[int | None, Query(ge=1, le=10_000)]
Before = Annotated[
    int | None, Query(ge=1, le=MAX_ID, description="Only events older than this event id (paging back).")
]


@router.get("/loras/{name}/history", summary="The LoRA's event log, newest first")
def lora_history(
    project: str, name: str, caller: CallerDep, limit: HistoryLimit = None, before: Before = None
) -> list[EventPublic]:
    with caller.registry(write=False) as reg:
        return reg.history(project=project, name=name, limit=limit, before=before)


@router.get("/history", summary="The project's event log, newest first")
def project_history(
    project: str, caller: CallerDep, limit: HistoryLimit = None, before: Before = None
) -> list[EventPublic]:
    with caller.registry(write=False) as reg:
        return reg.history(project=project, limit=limit, before=before)


@router.get("/loras/{name}/diff", summary="Compare two versions")
def diff(project: str, name: str, old: str, new: str, caller: CallerDep) -> VersionDiff:
    with caller.registry(write=False) as reg:
        return reg.diff(project=project, name=name, old=old, new=new)


@router.get(
    "/loras/{name}/notes",
    summary="training_notes.md for the LoRA",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}}}},
)
def notes(project: str, name: str, caller: CallerDep) -> PlainTextResponse:
    with caller.registry(write=False) as reg:
        text = reg.notes(project=project, name=name)
    return PlainTextResponse(text, media_type="text/markdown")
