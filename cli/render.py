"""Rendering for the CLI: rich tables for people, JSON for scripts. No rules live here."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

if TYPE_CHECKING:
    from registry.domain.schemas import EventPublic, LoraPublic, LoraSummary, VersionDiff, VersionPublic
    from registry.sync.agent import AgentPass
    from registry.sync.comfyui import SyncReport

# Text from the registry (a changelog, a reason, a trigger word) is the user's, not the terminal's: no
# escape sequence in it may set the window title, clear the screen or move the cursor. What reaches
# stdout keeps only SGR sequences (colours, which rich itself writes) and ordinary whitespace.
_UNSAFE = re.compile(
    r"\x1b\[(?![0-9;]*m)[0-?]*[ -/]*[@-~]"  # CSI other than SGR: cursor moves, clearing, …
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window title, hyperlinks, clipboard
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b(?!\[)[ -~]?"  # any other escape
    r"|\x9b[0-?]*[ -/]*[@-~]"  # the one-byte (C1) CSI
    r"|\x1b(?!\[[0-9;]*m)"  # an escape left over that does not start a colour
    r"|[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f-\x9f]"  # C0 (but tab, newline and ESC), DEL and C1 controls
)


def clean(text: str) -> str:
    return _UNSAFE.sub("", text)


class _SafeStdout(io.TextIOBase):
    """stdout, with what ``clean`` removes removed; rich's own colours pass."""

    def write(self, text: str) -> int:
        sys.stdout.write(clean(text))
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()


console = Console(file=_SafeStdout())  # type: ignore[arg-type]  # a TextIOBase is file enough for rich
err_console = Console(stderr=True)

STATUS_STYLE = {"current": "bold green", "testing": "yellow", "deprecated": "dim"}


def emit_json(data: Any, *, lines: bool = False) -> None:
    """Pretty JSON, or one object per line (JSON Lines) for streams such as `sync --watch --json`."""
    if "pydantic" in sys.modules:  # else nothing here can be a model: a fast command need not load it
        from pydantic import BaseModel

        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        elif isinstance(data, list):
            data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    sys.stdout.write(json.dumps(data, indent=None if lines else 2, default=str) + "\n")


def output(data: Any, as_json: bool, human: Callable[[], Any]) -> None:
    """``data`` as JSON with --json, else what ``human()`` draws of it (a table, or lines of text)."""
    if as_json:
        emit_json(data)
    elif (shown := human()) != "":
        console.print(shown, crop=False)  # a digest line longer than the terminal wraps there, whole


def secret(label: str, value: str) -> None:
    """A secret shown once: the warning on the console, the value alone on stdout (for scripts)."""
    console.print(label, style="bold yellow")
    sys.stdout.write(value + "\n")
    sys.stdout.flush()


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def loras_table(rows: Iterable[LoraSummary]) -> Table:
    table = Table(title="LoRAs", header_style="bold")
    for col in ("project", "name", "category", "base model", "current", "latest", "versions"):
        table.add_column(col)
    for r in rows:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r.statuses.items()))
        table.add_row(
            r.project,
            r.name,
            r.category.value,
            r.base_model,
            f"[bold green]{r.current_version}[/]" if r.current_version else "[dim]—[/]",
            r.latest_version or "—",
            f"{r.version_count} ({counts})" if counts else "0",
        )
    return table


def lora_view(lora: LoraPublic) -> Table:
    table = Table(
        title=f"{lora.project}/{lora.name} · {lora.category.value} · {lora.base_model}",
        caption=(f"trigger words: {', '.join(lora.trigger_words)}" if lora.trigger_words else None),
        header_style="bold",
    )
    for col in ("version", "status", "created", "by", "rank", "files", "scores", "changelog"):
        table.add_column(col, overflow="fold")
    for v in reversed(lora.versions):
        table.add_row(
            v.version,
            _status(v.status.value),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            v.created_by,
            str(v.files[0].rank) if v.files else "",
            " + ".join(f"{f.role.value} {_size(f.size)}" for f in v.files),
            ", ".join(f"{k} {s:g}" for k, s in sorted(v.scores.items())),
            v.changelog,
        )
    return table


def version_view(v: VersionPublic) -> Group:
    table = Table(title=f"{v.project}/{v.lora}@{v.version}", show_header=False, header_style="bold")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    status = _status(v.status.value)
    if v.promoted_on_override:
        status += f" [bold yellow](override: {escape(v.promoted_on_override)})[/]"
    table.add_row("status", status)
    table.add_row("changelog", v.changelog)
    table.add_row("parent", v.parent_version or "—")
    table.add_row("created", f"{v.created_at:%Y-%m-%d %H:%M} by {v.created_by}")
    table.add_row("trained", f"{v.training_date:%Y-%m-%d}" if v.training_date else "—")
    table.add_row("dataset", f"{v.dataset_hash or '—'} {json.dumps(v.dataset_summary) if v.dataset_summary else ''}")
    table.add_row("hyperparameters", _compact(v.hyperparameters) if v.hyperparameters else "—")
    table.add_row("scores", ", ".join(f"{k} {s:g}" for k, s in sorted(v.scores.items())) or "—")
    table.add_row("known issues", v.known_issues or "—")
    for f in v.files:
        repair = " [bold red](needs repair: the stored copy failed its sha256)[/]" if f.needs_repair else ""
        table.add_row(
            f"file {f.role.value}",
            f"sha256 {f.sha256[:12]}… (in full below){repair}\n{_size(f.size)}, rank {f.rank}, alpha {f.alpha:g}, "
            f"{f.dtype}, {f.module_count} modules ({', '.join(f.target_modules)})\n"
            f"from {f.source_format} file {f.source_sha256[:16]}…\n"
            f"Civitai AutoV2 {f.autov2}, AutoV3 {f.autov3 or '— (registered before AutoV3 was kept)'}",
        )
    # digests in full, each on a line of its own and never folded, so that they copy whole
    digests = [Text(f"{f.role.value} {kind} {digest}", no_wrap=True, overflow="ignore")
               for f in v.files for kind, digest in (("sha256", f.sha256), ("payload", f.payload_sha256))]  # fmt: skip
    return Group(table, *digests)


def history_table(events: Iterable[EventPublic], title: str) -> Table:
    table = Table(title=title, header_style="bold")
    for col in ("#", "when (UTC)", "actor", "event", "version", "status", "reason"):
        table.add_column(col, overflow="fold")
    for e in events:
        change = f"{e.from_status or '·'} → {e.to_status}" if e.to_status else ""
        table.add_row(
            str(e.seq),
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.actor,
            f"{e.kind} [bold yellow]override[/]" if e.override else e.kind,
            e.version or "",
            change,
            e.reason or "",
        )
    return table


def diff_table(d: VersionDiff) -> Table:
    table = Table(title=f"{d.project}/{d.lora}: {d.old} → {d.new}", header_style="bold")
    for col in ("section", "key", d.old, d.new):
        table.add_column(col, overflow="fold")
    sections = {"hyperparameters": d.hyperparameters, "dataset": d.dataset, "scores": d.scores, "files": d.files}
    for section, changes in sections.items():
        for key, change in changes.items():
            table.add_row(section, key, _fmt(change.old), _fmt(change.new))
    table.add_row("status", "", d.status.old, d.status.new)
    table.add_row("changelog", "", d.changelog.old, d.changelog.new)
    return table


def tokens_table(tokens: Iterable[Any]) -> Table:
    table = Table(title="API tokens", header_style="bold")
    for col in ("id", "user", "prefix", "project", "role", "created", "expires", "state"):
        table.add_column(col)
    for t in tokens:
        state = "[red]revoked[/]" if t.revoked_at else "[green]active[/]"
        table.add_row(
            str(t.id),
            t.user,
            f"{t.prefix}…",
            t.project,
            t.role,
            f"{t.created_at:%Y-%m-%d} by {t.created_by}",
            f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never",
            state,
        )
    return table


def deliveries_table(rows: Iterable[Any]) -> Table:
    table = Table(title="webhook deliveries", header_style="bold")
    for col in ("id", "webhook", "event", "status", "attempts", "last answer", "next attempt / delivered"):
        table.add_column(col, overflow="fold")
    style = {"delivered": "green", "pending": "yellow", "failed": "red"}
    for d in rows:
        when = d.delivered_at if d.delivered_at else d.next_attempt_at
        table.add_row(
            str(d.id),
            str(d.webhook_id),
            d.kind,
            f"[{style.get(d.status, '')}]{d.status}[/]",
            str(d.attempts),
            d.last_error or (str(d.last_status_code) if d.last_status_code else ""),
            f"{when:%Y-%m-%d %H:%M:%S}",
        )
    return table


def _compact(doc: dict[str, Any], longest: int = 8) -> str:
    """A document for a table: long lists (a loss curve) as their length and ends, not every value
    (`--json` has them all)."""

    def shorten(value: Any) -> Any:
        if isinstance(value, list) and len(value) > longest:
            return f"[{len(value)} values: {value[0]!r} … {value[-1]!r}]"  # a str: shown as it is
        if isinstance(value, dict):
            return {k: shorten(v) for k, v in value.items()}
        return value

    def show(value: Any) -> str:
        value = shorten(value)
        return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)

    return "\n".join(f"{key}: {show(value)}" for key, value in doc.items())


def _fmt(value: Any) -> str:
    if value is None:
        return "[dim]—[/]"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def agent_summary(outcome: AgentPass) -> str:
    text = f"jobs: {outcome.seen} new, {outcome.sent} reported"
    if outcome.duplicates:
        text += f", {outcome.duplicates} known already"
    if outcome.waiting:
        text += f", [yellow]{outcome.waiting} waiting for the registry[/]"
    for dropped in outcome.dropped:
        text += f"\n[yellow]not reported[/]: {escape(dropped)}"
    if outcome.error:
        text += f"\n[yellow]{escape(outcome.error)}[/]"
    return text


def sync_summary(report: SyncReport) -> str:
    if report.checked:
        if not report.drift:
            return f"[green]in step[/]: {len(report.unchanged)} file(s) match the registry in {report.loras_dir}"
        parts = [
            f"{name} {len(items)}"
            for name, items in (
                ("missing", report.missing),
                ("modified", report.modified),
                ("outdated", report.outdated),
                ("stale", report.stale),
                ("unknown", report.unknown),
                ("conflicts", report.conflicts),
                ("sidecars to write", report.sidecars_missing),
            )
            if items
        ]
        return f"[yellow]drift[/]: {', '.join(parts)}"
    text = (
        f"copied {len(report.copied)} ({_size(report.bytes_copied)}), removed {len(report.removed)}, "
        f"unchanged {len(report.unchanged)}"
    )
    if report.sidecars_written or report.sidecars_removed:
        text += f"; sidecars written {len(report.sidecars_written)}, removed {len(report.sidecars_removed)}"
    if report.conflicts:
        text += f", [red]left alone {len(report.conflicts)} unmanaged file(s) in the way[/]"
    if report.comfyui_freed:
        text += "; ComfyUI dropped its caches"
    elif report.comfyui_error:
        text += f"; [yellow]{escape(report.comfyui_error)}[/] (the files are in place; restart ComfyUI or free it)"
    return text


def drift_table(report: SyncReport) -> Table:
    table = Table(header_style="bold")
    table.add_column("state")
    table.add_column("file", overflow="fold")
    states = (
        ("missing", "modified", "outdated", "stale", "unknown", "conflicts")
        if report.checked
        else ("copied", "removed", "conflicts")
    )
    for state in states:
        for rel in getattr(report, state):
            table.add_row(state, rel)
    return table


def folder_tree(root: Any, label: str) -> Tree:
    tree = Tree(label)

    def add(node: Tree, path: Any) -> None:
        for child in sorted(path.iterdir()):
            if child.is_dir():
                add(node.add(f"[bold]{child.name}/[/]"), child)
            else:
                node.add(f"{child.name} [dim]({_size(child.stat().st_size)})[/]")

    add(tree, root)
    return tree
