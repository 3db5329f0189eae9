"""Files: streaming uploads (size limit, digest check), verified downloads (ETag, Range) and resolve."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Annotated, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, TypeAdapter
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, ServerState, StateDep
from api.errors import ERROR_RESPONSES, error_response
from registry.backends.local import Wanlora
from registry.backends.uploads import (
    FollowedUpload,
    KeptUpload,
    UploadIngest,
    digests_path,
    ingest_path,
    refusal_path,
    routed_path,
)
from registry.blobs.base import CHUNK, BackgroundHash
from registry.blobs.local import LocalStore
from registry.domain.access import Action, Principal
from registry.domain.errors import CorruptArtifact, IntegrityError, InvalidInput, NotFound, WanloraError
from registry.domain.schemas import FileMatch, SyncTarget, check_name
from registry.domain.wan import BASE_MODELS
from registry.domain.wan import BaseModel as WanBase
from registry.files.source_digests import DataSectionHash, SourceDigests, file_identity

router = APIRouter(prefix="/api/v1", tags=["files"], responses=ERROR_RESPONSES)
_UPLOAD_ID = re.compile(r"u_[A-Za-z0-9_-]{20,64}")
IMMUTABLE = "private, max-age=31536000, immutable"
UPLOAD_BATCH = 8 * 1024 * 1024  # received chunks (~64 KiB) are gathered and written this much at a time


class _BigChunkFile(FileResponse):
    """Starlette's FileResponse reads 64 KiB per thread hop; 1 MiB keeps a download at disk speed."""

    chunk_size = 1024 * 1024


class Upload(BaseModel):
    upload_id: str
    size: int
    sha256: str


def find_upload(state: ServerState, upload_id: str) -> tuple[Path, KeptUpload]:
    """The upload's path (named by its id) and how it was kept."""
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise InvalidInput(f"invalid upload id {upload_id!r}")
    path = state.uploads / upload_id
    kept = KeptUpload.find(path)
    if kept is None:
        raise NotFound(f"upload {upload_id} does not exist or was used already", hint="upload the file again")
    return path, kept


ClientQuery = Annotated[
    str | None,
    Query(max_length=128, description="A ComfyUI host's id: it gets a trial's candidate for its sticky share."),
]


@router.post(
    "/uploads",
    status_code=201,
    summary="Upload a LoRA file (raw body), to register it afterwards",
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
    responses={413: {"description": "Over the server's upload limit"}},
)
async def upload(
    request: Request,
    caller: CallerDep,
    state: StateDep,
    project: Annotated[str, Query(description="The project the file will be registered in.")],
    lora: Annotated[str | None, Query(max_length=128, description="The LoRA it will be registered as.")] = None,
    base_model: Annotated[
        str | None, Query(max_length=128, description="Its base model, for a LoRA not created yet.")
    ] = None,
    x_content_sha256: Annotated[str | None, Header(description="sha256 the body must have")] = None,
    content_length: Annotated[int | None, Header()] = None,
) -> Response:
    """Streams to disk with a running sha256: never whole in memory. Over the limit, or with a digest
    that does not match, the request is refused and nothing is kept. Where the base model is known
    (the LoRA exists, or ``base_model`` names it) and the length is declared, the file is also
    inspected and stored as it arrives, so that registering it afterwards need not read it again: once
    that ingest knows where each tensor goes, those bytes are written straight to the stored file, and
    the upload keeps only its header and alphas."""
    check_name(project, "project name")
    if lora is not None:
        check_name(lora, "LoRA name")
    if not await run_in_threadpool(may_register, caller, project):
        return error_response(403, "permission_denied", f"{caller.principal.describe()} may not upload to {project}")
    limit = state.max_upload_bytes
    if content_length is not None and content_length > limit:
        return error_response(413, "too_large", f"upload of {content_length:,} bytes is over the {limit:,}-byte limit")
    upload_id = "u_" + secrets.token_urlsafe(24)
    path = state.uploads / upload_id
    # The file's sha256, and its data section's (AutoV3, so that registering the upload need not read it
    # again), each on its own thread while a third writes the batch: three cores' worth, where there are.
    digest, data_section = BackgroundHash(), BackgroundHash(digest=DataSectionHash())
    size = 0
    fh = await run_in_threadpool(open, path, "wb", 0)
    follower: FollowedUpload | None = None
    if content_length and (base := await run_in_threadpool(_upload_base, caller, project, lora, base_model)):
        follower = FollowedUpload(caller.store, path, content_length, base)
    batch = bytearray()
    pending: asyncio.Future[None] | None = None  # the previous batch, hashed and written off the loop

    def _spill(data: bytearray) -> None:
        # hashlib and the write release the GIL: all of this runs beside the receiving loop. A batch is
        # never changed once spilled (the loop starts a new one), so the hashers may keep a view of it.
        view = memoryview(data)
        digest.update(view, copy=False)
        data_section.update(view, copy=False)
        if follower is None:
            fh.write(view)
        else:  # the tensors go straight to the stored file, once its ingest knows where
            follower.deliver(fh.fileno(), view)

    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            batch += chunk
            if len(batch) >= UPLOAD_BATCH:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(run_in_threadpool(_spill, batch))
                batch = bytearray()
        if pending is not None:
            await pending
            pending = None
        await run_in_threadpool(_spill, batch)
        await run_in_threadpool(fh.close)
        sha = await run_in_threadpool(digest.hexdigest)
        await run_in_threadpool(data_section.wait)
    except _TooLarge:
        await _discard(pending, fh, path, follower)
        return error_response(413, "too_large", f"upload is over the {limit:,}-byte limit", "ask for a higher limit")
    except BaseException:
        await _discard(pending, fh, path, follower)
        raise
    finally:
        digest.close()
        data_section.close()
    if x_content_sha256 is not None and x_content_sha256.lower() != sha:
        await _discard(None, fh, path, follower)
        return error_response(400, "integrity", f"the body's sha256 is {sha}, not {x_content_sha256}", "upload again")
    try:
        await run_in_threadpool(_keep_records, path, sha, data_section.hash.hexdigest(), size, follower)
    except BaseException:
        await run_in_threadpool(KeptUpload.remove, path)  # records that cannot be kept: nothing is
        raise
    return Response(
        Upload(upload_id=upload_id, size=size, sha256=sha).model_dump_json(),
        status_code=201,
        media_type="application/json",
    )


class _TooLarge(Exception):
    pass


async def _discard(
    pending: asyncio.Future[None] | None, fh: BinaryIO, path: Path, follower: FollowedUpload | None
) -> None:
    """A refused or broken upload: let the batch in flight finish, then nothing of it is kept (the
    ingest following it stops within a chunk, keeping nothing: waited for here, off no thread pool,
    so that a cancelled request still waits for it)."""
    if pending is not None:
        await asyncio.wait([pending])
    if follower is not None:
        follower.fail()
    fh.close()
    path.unlink(missing_ok=True)


def _upload_base(caller: Wanlora, project: str, lora: str | None, base_model: str | None) -> WanBase | None:
    """The base model the upload will be registered under, where the request says (None: not known yet,
    and the file is stored when it is registered)."""
    name = base_model
    if lora is not None:
        with suppress(WanloraError), caller.registry(write=False) as reg:
            existing = reg.find_lora(project=project, name=lora)
            name = existing.base_model if existing is not None else name
    return BASE_MODELS.get(name or "")


def _keep_records(path: Path, sha: str, autov3: str | None, size: int, follower: FollowedUpload | None) -> None:
    """Beside a whole, checked upload: its digests, and what its ingest stored while it arrived, or
    why it refused the file (the ingest always ends here: finished, or stopped keeping nothing). A
    routed upload is renamed first: its holes are never read as the file."""
    try:
        whole = follower is not None and size == follower.arrival.size
        if follower is not None and follower.routed:  # its tensors are only in the stored file
            if not whole:
                raise InvalidInput(f"the upload ended after {size:,} of its {follower.arrival.size:,} bytes",
                                   hint="upload again")  # fmt: skip
            if autov3 is None:
                raise InvalidInput("the upload's header could not be read a second time", hint="upload again")
            kept = path.replace(routed_path(path))
        else:
            kept = path
        if autov3 is None:  # not safetensors: registering it is refused anyway, after its own read
            return
        record = SourceDigests(sha, autov3, file_identity(kept.stat()))
        digests_path(path).write_text(record.to_json())
        if follower is None or not whole:
            return
        stored = follower.finish(record)
        if isinstance(stored, UploadIngest):
            ingest_path(path).write_text(stored.to_json())
        elif stored is not None:
            refusal_path(path).write_text(stored.to_json())
    finally:
        if follower is not None:
            follower.fail()  # after finish, a no-op


def may_register(caller: Wanlora, project: str) -> bool:
    with caller.registry(write=False) as reg:
        return reg.can(project, Action.VERSION_REGISTER)


@router.get(
    "/artifacts/{sha256}",
    summary="Download a stored file (ETag = sha256, Range supported)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Partial content"}},
)
def download(
    sha256: str,
    caller: CallerDep,
    state: StateDep,
    if_none_match: Annotated[str | None, Header()] = None,
    client: ClientQuery = None,
) -> Response:
    with caller.registry(write=False) as reg:
        reg.require_artifact(sha256, client=client)
    with state.wl.maintenance(write=False) as upkeep:
        faulty = upkeep.is_faulty(sha256)
    if faulty:
        raise _corrupt(sha256)
    # The bytes behind a digest never change: a client may keep them as long as it likes without
    # asking again (private: a shared cache must not hand one caller's download to another).
    headers = {"ETag": f'"{sha256}"', "Cache-Control": IMMUTABLE}
    if _matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    store = state.wl.store
    try:
        store.check(sha256)  # a file that fails its digest is never served, nor handed out by a presigned URL
    except IntegrityError as exc:
        state.wl.take_out_of_service(sha256, exc.message)
        raise _corrupt(sha256) from exc
    if isinstance(store, LocalStore):
        return _BigChunkFile(store.path(sha256), media_type="application/octet-stream", headers=headers)
    url = getattr(store, "download_url", lambda _: None)(sha256)
    if url:
        return RedirectResponse(url, status_code=307, headers={"ETag": headers["ETag"]})  # a URL that expires
    reader = store.open(sha256)
    return StreamingResponse(
        iter(lambda: reader.read(CHUNK), b""),
        media_type="application/octet-stream",
        headers={**headers, "Content-Length": str(reader.size)},
    )


def _corrupt(sha256: str) -> CorruptArtifact:
    return CorruptArtifact(
        f"the stored file {sha256[:12]} fails its sha256; it is not served, and its versions are marked for repair",
        hint="an admin runs `wanlora repair FILE` on the server host with the file it was registered from",
    )


class ResolvedFile(BaseModel):
    role: str
    sha256: str
    size: int
    download_url: str


class Resolved(BaseModel):
    project: str
    lora: str
    category: str
    version: str
    files: list[ResolvedFile]


def _resolved(t: SyncTarget, base: str, client: str | None) -> Resolved:
    query = f"?client={quote(client, safe='')}" if t.trial and client else ""  # the share's right to the candidate
    return Resolved(
        project=t.project,
        lora=t.lora,
        category=t.category.value,
        version=t.version,
        files=[
            ResolvedFile(
                role=f.role.value,
                sha256=f.sha256,
                size=f.size,
                download_url=f"{base}/api/v1/artifacts/{f.sha256}{query}",
            )
            for f in t.files
        ],
    )


_RESOLVED = TypeAdapter(list[Resolved])


@router.get(
    "/projects/{project}/resolve",
    summary="What this caller should pull: the current versions",
    response_model=list[Resolved],
)
async def resolve(
    project: str,
    request: Request,
    caller: CallerDep,
    state: StateDep,
    lora: Annotated[str | None, Query()] = None,
    client: ClientQuery = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The hot path of every ComfyUI host. Answers are cached per caller and request, and stay valid
    while the event log does not move (re-checked every `change_check_seconds`); a cached answer is
    served without leaving the event loop, everything else runs in the thread pool. With `client`, a
    LoRA under trial answers with its candidate when the client falls in the trial's share."""
    base = str(request.base_url).rstrip("/")
    return await cached_answer(
        state, caller, ("resolve", project, lora, base, client), if_none_match,
        partial(_resolve_body, caller, project, lora, base, client),
    )  # fmt: skip


def _resolve_body(caller: Wanlora, project: str, lora: str | None, base: str, client: str | None) -> bytes:
    with caller.registry(write=False) as reg:
        targets = reg.current_targets(project=project, client=client, lora=lora)
    return _RESOLVED.dump_json([_resolved(t, base, client) for t in targets if lora is None or t.lora == lora])


@router.get("/which", summary="Which registered versions a file is, by any of its digests")
def which(
    caller: CallerDep,
    sha256: Annotated[str | None, Query(max_length=64, description="The file's sha256 (AutoV2 is its start).")] = None,
    payload_sha256: Annotated[str | None, Query(max_length=64, description="Its payload hash.")] = None,
    autov3: Annotated[str | None, Query(max_length=64, description="Its data section's sha256.")] = None,
) -> list[FileMatch]:
    with caller.registry(write=False) as reg:
        return reg.which(sha256=sha256, payload_sha256=payload_sha256, autov3=autov3)


@router.get(
    "/resolve",
    summary="Current versions of every project (or one) this caller may pull, for sync (ETag, 304)",
    response_model=list[SyncTarget],
    responses={304: {"description": "Nothing changed since the ETag given in If-None-Match"}},
)
async def resolve_all(
    caller: CallerDep,
    state: StateDep,
    project: Annotated[str | None, Query()] = None,
    client: ClientQuery = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """What `wanlora sync` brings into a ComfyUI folder. The answer is tagged with an ETag made of the
    event log's head and this caller's identity and request: while nothing changes, a request with
    `If-None-Match` gets 304 without a database query."""
    return await cached_answer(
        state, caller, ("resolve_all", project, client), if_none_match, partial(_targets_body, caller, project, client)
    )


_TARGETS = TypeAdapter(list[SyncTarget])


def _targets_body(caller: Wanlora, project: str | None, client: str | None) -> bytes:
    with caller.registry(write=False) as reg:
        return _TARGETS.dump_json(reg.current_targets(project=project, client=client))


async def cached_answer(
    state: ServerState,
    caller: Wanlora,
    request: tuple[object, ...],
    if_none_match: str | None,
    compute: Callable[[], bytes],
) -> Response:
    """A JSON answer valid while the event log stays where it is: 304 for a matching If-None-Match,
    else from the per-caller cache, else ``compute()`` in the thread pool, once for every caller
    asking at the same time (and cached)."""
    generation = await current_generation(state)
    etag = answer_etag(generation, caller.principal, *request)
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    body = await state.responses.fill((caller.principal, *request), generation, compute)
    return Response(body, media_type="application/json", headers={"ETag": etag})


async def current_generation(state: ServerState) -> int:
    """The event log's head as this process knows it: off the event loop only when it reads the database."""
    generations = state.generation
    assert generations is not None
    return await run_in_threadpool(generations.current) if generations.due() else generations.current()


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header (one ETag or a list) names ``etag``."""
    return if_none_match is not None and etag in (t.strip() for t in if_none_match.split(","))


def answer_etag(generation: int, principal: Principal, *request: object) -> str:
    """A weak ETag that holds while the event log stays at ``generation``, for this caller and request
    (the same in every worker process: no ``hash()``)."""
    who = hashlib.sha256(repr((principal, request)).encode()).hexdigest()[:20]
    return f'W/"{generation}-{who}"'
