"""`wanlora gc` and `wanlora repair`: the store's upkeep, on the server host."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import render
from cli.app import JsonOpt, app, backend

if TYPE_CHECKING:
    from registry.domain.schemas import GcReport


def _human(report: "GcReport") -> str:
    lines = [f"temporary files of dead writers removed: {report.temp_files_removed}"]
    lines.append(f"unused uploads removed: {report.uploads_removed}")
    verb = "deleted" if report.deleted else "found (delete them with --delete)"
    lines.append(f"orphan files no version refers to, {verb}: {len(report.orphans)}, {report.orphan_bytes:,} bytes")
    lines += [f"  {o.sha256}  {o.size:,} bytes  {o.age_hours:g} h old" for o in report.orphans]
    if report.verified:
        lines.append(f"stored files checked against their sha256: {report.verified}")
    if report.needs_repair:
        lines.append("[red]failed their sha256, not served until repaired (`wanlora repair FILE`):[/]")
        lines += [f"  {sha}" for sha in report.needs_repair]
    return "\n".join(lines)


@app.command("gc")
def gc(
    delete: Annotated[bool, typer.Option("--delete", help="Delete the orphan files found.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Hash every stored file; those that fail are marked for repair.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Sweep what killed processes left: temporary files, and stored files no version refers to (an hour
    old at least, so a register in flight is never touched). Exits 1 when files need repair."""
    with backend() as wl:
        report = wl.gc(delete=delete, verify=verify)
    render.output(report, as_json, lambda: _human(report))
    if report.needs_repair:
        raise typer.Exit(1)


@app.command("repair")
def repair(
    file: Annotated[Path, typer.Argument(help="The source file a damaged stored file was registered from.")],
    as_json: JsonOpt = False,
) -> None:
    """Store a damaged file again from its source; its versions are served again."""
    with backend() as wl:
        fixed = wl.repair(file)
    render.output({"repaired": fixed}, as_json, lambda: f"repaired: {', '.join(fixed)}")
