"""`wanlora lora create`, `register` and the lifecycle: promote, rollback, deprecate, annotate."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import render
from cli.app import (
    JsonOpt,
    ProjectOpt,
    ReasonOpt,
    app,
    backend,
    byte_progress,
    command_group,
    exact_ref,
    parse_scores,
    project_of,
    settings,
)
from registry.domain.wan import BASE_MODELS

lora_app = command_group(
    "lora", "Create and inspect LoRAs (the named adapters that own versions).", no_args_is_help=False
)

# -- LoRAs -----------------------------------------------------------------------------------------


@lora_app.command("create")
def lora_create(
    name: Annotated[str, typer.Argument(help="LoRA name: a-z, 0-9, '_' and '-'.")],
    category: Annotated[str, typer.Option("--category", "-c", help="character, style, motion or domain.")],
    base_model: Annotated[str, typer.Option("--base-model", "-b", help=f"One of: {', '.join(BASE_MODELS)}.")],
    trigger: Annotated[list[str] | None, typer.Option("--trigger", "-t", help="Trigger word (repeatable).")] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a LoRA in a project."""
    with backend() as wl, wl.registry() as reg:
        lora = reg.create_lora(
            project=project_of(wl, project),
            name=name,
            category=category,
            base_model=base_model,
            trigger_words=trigger or [],
            description=description,
        )
    render.output(
        lora, as_json, lambda: f"created {lora.project}/{lora.name} ({lora.category.value}, {lora.base_model})"
    )


# -- register and lifecycle ------------------------------------------------------------------------


@app.command()
def register(
    file: Annotated[Path, typer.Argument(help="LoRA .safetensors (the high-noise expert for A14B models).")],
    lora: Annotated[str, typer.Option("--lora", "-l", help="LoRA name.")],
    changelog: Annotated[str, typer.Option("--changelog", "-m", help="What changed from the previous version.")],
    version: Annotated[str | None, typer.Option("--version", "-v", help="Explicit semver, e.g. 1.2.0.")] = None,
    bump: Annotated[str | None, typer.Option("--bump", help="major, minor or patch of the latest version.")] = None,
    low_noise: Annotated[Path | None, typer.Option("--low-noise", help="Low-noise expert file (A14B).")] = None,
    hyperparams: Annotated[Path | None, typer.Option("--hyperparams", help="JSON file of hyperparameters.")] = None,
    from_metadata: Annotated[
        bool, typer.Option("--from-metadata", help="Read hyperparameters and dataset facts from ss_*/modelspec.*.")
    ] = False,
    dataset: Annotated[Path | None, typer.Option("--dataset", help="Dataset folder to fingerprint.")] = None,
    dataset_hash: Annotated[str | None, typer.Option("--dataset-hash", help="Known dataset hash.")] = None,
    score: Annotated[list[str] | None, typer.Option("--score", help="NAME=VALUE on 0-10 (repeatable).")] = None,
    known_issues: Annotated[str, typer.Option("--known-issues")] = "",
    parent: Annotated[str | None, typer.Option("--parent", help="Parent version (default: the latest).")] = None,
    category: Annotated[str | None, typer.Option("--category", "-c", help="Creates the LoRA if new.")] = None,
    base_model: Annotated[str | None, typer.Option("--base-model", "-b", help="Creates the LoRA if new.")] = None,
    trigger: Annotated[list[str] | None, typer.Option("--trigger", "-t", help="Trigger word if new.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Register a LoRA file (or an A14B pair) as a new [yellow]testing[/] version.

    The file is checked without torch (header bounds, LoRA structure, shapes against the base model,
    NaN/Inf), converted to the canonical ComfyUI-loadable form and streamed into the store.
    """
    from registry.domain.register import RegisterRequest

    if not settings().server:
        # the embedded registry: its files are hashed on the other core while it loads
        from registry.files.source_digests import hash_early

        hash_early([file, low_noise])
    with backend() as wl:
        req = RegisterRequest(
            project=project_of(wl, project),
            lora=lora,
            file=file,
            changelog=changelog,
            version=version,
            bump=bump,
            low_noise=low_noise,
            hyperparams_file=hyperparams,
            from_metadata=from_metadata,
            dataset_dir=dataset,
            dataset_hash=dataset_hash,
            scores=parse_scores(score),
            known_issues=known_issues,
            parent=parent,
            category=category,
            base_model=base_model,
            trigger_words=list(trigger or ()),
        )
        with byte_progress(not (quiet or as_json)) as progress:
            result = wl.register(req, progress=progress)
    if as_json:
        render.emit_json(result)
    else:
        files = ", ".join(f"{f.role.value} {f.sha256[:12]}" for f in result.files)
        render.console.print(f"registered {result.project}/{result.lora}@{result.version} [yellow]testing[/] ({files})")


def _transition(action: Callable[..., Any], as_json: bool, message: Callable[[Any], str], **kwargs: Any) -> None:
    with backend() as wl, wl.registry() as reg:
        kwargs["project"] = project_of(wl, kwargs.get("project"))
        result = action(reg, **kwargs)
    render.output(result, as_json, lambda: message(result))


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    version: Annotated[str, typer.Argument(help="Version to make current.")],
    reason: ReasonOpt = None,
    override: Annotated[
        bool, typer.Option("--override", help="Without the required evidence (admin; needs --reason; recorded).")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a testing version [green]current[/]; the old current becomes deprecated, atomically. The
    phases the project's policy requires must have passed for this version's files (`wanlora eval
    status`)."""
    _transition(
        lambda reg, **kw: reg.promote(**kw),
        as_json,
        lambda v: (
            f"{v.project}/{v.lora}@{v.version} is now [bold green]current[/]"
            + (" [yellow](override)[/]" if override else "")
        ),
        project=project,
        name=name,
        version=version,
        reason=reason,
        override=override,
    )


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the version that was current before current again; the rolled-back one is deprecated."""
    _transition(
        lambda reg, **kw: reg.rollback(**kw),
        as_json,
        lambda v: f"rolled back: {v.project}/{v.lora}@{v.version} is [bold green]current[/] again",
        project=project,
        name=name,
        reason=reason,
    )


@app.command()
def deprecate(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    version: Annotated[str, typer.Argument(help="Version to retire.")],
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retire a version (a deprecated current version leaves the LoRA with none)."""
    _transition(
        lambda reg, **kw: reg.deprecate(**kw),
        as_json,
        lambda v: f"{v.project}/{v.lora}@{v.version} is [dim]deprecated[/]",
        project=project,
        name=name,
        version=version,
        reason=reason,
    )


@app.command()
def annotate(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION")],
    score: Annotated[list[str] | None, typer.Option("--score", help="NAME=VALUE on 0-10 (repeatable).")] = None,
    known_issues: Annotated[str | None, typer.Option("--known-issues")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record test scores or known issues on a version (an event in the log)."""
    name, version = exact_ref(ref)
    _transition(
        lambda reg, **kw: reg.annotate(**kw),
        as_json,
        lambda v: f"recorded on {v.project}/{v.lora}@{v.version}",
        project=project,
        name=name,
        version=version,
        scores=parse_scores(score),
        known_issues=known_issues,
    )
