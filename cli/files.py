"""`wanlora pull` (alias `download`) and `wanlora which`: a version's files to a folder, and which
version a stray file is."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cli import render
from cli.app import JsonOpt, ProjectOpt, app, backend, byte_progress, project_of, split_ref
from registry.domain.errors import InvalidInput

if TYPE_CHECKING:
    from registry.domain.schemas import FilePublic, VersionPublic

__all__ = ["pull", "which"]


def _file_name(version: "VersionPublic", f: "FilePublic") -> str:
    suffix = "" if f.role.value == "single" else f"-{f.role.value}"
    name = f"{version.lora}-{version.version}{suffix}.safetensors"
    if os.sep in name or (os.altsep and os.altsep in name) or name.startswith("."):
        raise InvalidInput(f"the server named a file {name!r}, which is not a plain file name")
    return name


def _already(path: Path, sha256: str) -> bool:
    from registry.domain.digests import file_sha256

    return path.is_file() and file_sha256(path) == sha256


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: the current version, else the latest).")],
    to: Annotated[Path, typer.Option("--to", "-o", help="Folder to write the files into.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Replace a different file of the same name.")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a version's files, any status you may see (to try a testing version by hand): verified
    against their sha256, written whole or not at all. Also `wanlora download`."""
    name, version = split_ref(ref)
    done: list[dict[str, Any]] = []
    with backend() as wl:
        with wl.registry(write=False) as reg:
            v = reg.get_version(project=project_of(wl, project), name=name, version=version)
        to.mkdir(parents=True, exist_ok=True)
        with byte_progress(not as_json) as progress:
            for f in v.files:
                path = to / _file_name(v, f)
                skipped = _already(path, f.sha256)
                if not skipped:
                    if path.exists() and not force:
                        raise InvalidInput(
                            f"{path} exists and is another file",
                            hint="pass --force to replace it, or --to another folder",
                        )
                    _download(wl.store, f, path, progress)
                done.append({"role": f.role.value, "path": str(path), "sha256": f.sha256, "size": f.size,
                             "skipped": skipped})  # fmt: skip
    result = {"project": v.project, "lora": v.lora, "version": v.version, "status": v.status.value, "files": done}
    lines = [f"{v.project}/{v.lora}@{v.version} ({v.status.value})"]
    lines += [f"  {d['path']}" + ("  (already there)" if d["skipped"] else "") for d in done]
    render.output(result, as_json, lambda: "\n".join(lines))


def _download(store: Any, f: "FilePublic", path: Path, progress: Any) -> None:
    from registry.blobs.base import CHUNK

    tmp = path.with_name(f".{path.name}.part")
    try:
        with store.open(f.sha256) as src, open(tmp, "wb") as dst:
            got = 0
            while chunk := src.read(CHUNK):  # the reader raises IntegrityError on a digest mismatch
                dst.write(chunk)
                got += len(chunk)
                if progress:
                    progress(path.name, got, f.size)
            dst.flush()
            os.fsync(dst.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


app.command("download", help="Same as `wanlora pull`.", hidden=True)(pull)


@app.command()
def which(
    file: Annotated[Path, typer.Argument(help="A LoRA file of unknown origin.")],
    as_json: JsonOpt = False,
) -> None:
    """Which registered version is this file? Matched by its weights (the payload hash, whatever its
    format or metadata), by its sha256 (Civitai's AutoV2) and by its data section (AutoV3). Exits 1
    when it is no version you may see."""
    from registry.files.ingest import file_digests

    digests = file_digests(file)
    with backend() as wl, wl.registry(write=False) as reg:
        matches = reg.which(sha256=digests.sha256, payload_sha256=digests.payload_sha256, autov3=digests.autov3)
    result = {
        "file": str(file),
        "sha256": digests.sha256,
        "autov2": digests.sha256[:10].upper(),
        "autov3": digests.autov3[:12].upper() if digests.autov3 else None,
        "payload_sha256": digests.payload_sha256,
        "not_a_lora": digests.problem,
        "matches": [m.model_dump(mode="json") for m in matches],
    }

    def human() -> Any:
        head = f"{file}: AutoV2 {result['autov2']}, AutoV3 {result['autov3'] or '—'}"
        if digests.problem:
            head += f"\n(no payload hash: {digests.problem})"
        if not matches:
            return head + "\nno registered version you may see is this file"
        table = Table(title=head, title_justify="left")
        for column in ("version", "status", "file", "matched by"):
            table.add_column(column)
        for m in matches:
            table.add_row(f"{m.project}/{m.lora}@{m.version}", m.status.value, m.role.value, ", ".join(m.by))
        return table

    render.output(result, as_json, human)
    if not matches:
        raise typer.Exit(1)
