"""`wanlora eval`, `trial`, `report`, `pick`, `metrics`, `review` and `policy`: the three-phase
evaluation, the production trial and the monitoring. Registered on the app when ``cli.main`` imports it."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cli import render
from cli.app import (
    JsonOpt,
    ProjectOpt,
    ReasonOpt,
    app,
    backend,
    command_group,
    exact_ref,
    hub_offline,
    project_of,
    split_ref,
    train_extra_missing,
)
from registry.domain.errors import InvalidInput

if TYPE_CHECKING:
    from registry.domain.eval_schemas import GateStatus, Metrics, TrialPublic

eval_app = command_group("eval", "Phases 1 and 2: technical validation and quality assessment.")
trial_app = command_group("trial", "Phase 3: a candidate on a sticky share of ComfyUI jobs.")
policy_app = command_group("policy", "The evaluation policy (phases required, thresholds).")

RefArg = Annotated[str, typer.Argument(help="NAME@VERSION (NAME alone: the latest version).")]
TinyOpt = Annotated[bool, typer.Option("--tiny", help="Tiny random models on CPU (tests, demo).")]
ModelOpt = Annotated[Path | None, typer.Option("--model-path", help="Local WAN 2.2 diffusers folder.")]
PromptsOpt = Annotated[int | None, typer.Option("--prompts", help="How many prompts; default from the policy.")]
PromptsFileOpt = Annotated[Path | None, typer.Option("--prompts-file", help="One prompt per line.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Where reports and fetched files go.")]
ClipOpt = Annotated[Path | None, typer.Option("--clip", help="Local CLIP model folder for the scores.")]
RefsOpt = Annotated[Path | None, typer.Option("--references", help="Dataset folder: reference images for style.")]
RecordOpt = Annotated[bool, typer.Option("--record/--no-record", help="Write the results to the registry.")]
FileOpt = Annotated[Path | None, typer.Option("--file", help="Check an unregistered file instead (not recorded).")]
LowOpt = Annotated[Path | None, typer.Option("--low-noise", help="With --file: the low-noise expert (A14B).")]
BaseOpt = Annotated[str | None, typer.Option("--base-model", "-b", help="With --file: its base model.")]


def _evaluate(phases: list[str], refs: str | list[str], project: str | None, as_json: bool, **kw: Any) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    hub_offline()
    try:
        from evaluator.run import EvalRequest, evaluate
    except ImportError:  # pragma: no cover - depends on the install
        raise train_extra_missing("evaluation") from None
    file, low = kw.pop("file"), kw.pop("low_noise")
    files = None
    if file is not None:
        files = {"high_noise": file, "low_noise": low} if low else {"single": file}
    columns = (TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    summaries = []
    with backend() as wl:
        generator = None  # one base model (and its cached outputs) for every version evaluated
        for ref in [refs] if isinstance(refs, str) else refs:
            name, version = split_ref(ref)
            req = EvalRequest(
                project=project_of(wl, project), lora=name, version=version, files=files, generator=generator, **kw
            )
            with Progress(*columns, console=render.err_console, transient=True) as bar:
                tasks: dict[str, Any] = {}

                def progress(
                    what: str, done: int, total: int, bar: Progress = bar, tasks: dict[str, Any] = tasks, ref: str = ref
                ) -> None:
                    if "task" not in tasks:
                        tasks["task"] = bar.add_task(what, total=total)
                    bar.update(tasks["task"], description=f"{ref}: {what}", completed=done, total=total)

                summaries.append(evaluate(wl, req, phases, progress))
            generator = req.generator
    if as_json:
        render.emit_json(summaries[0] if isinstance(refs, str) else summaries)
    else:
        for summary in summaries:
            _show(summary)
    if any(not result["passed"] for summary in summaries for result in summary["phases"].values()):
        raise typer.Exit(1)  # a check command: 0 passed, 1 failed, 2 bad input


def _show(summary: dict[str, Any]) -> None:
    for phase, result in summary["phases"].items():
        table = Table(title=f"{summary['lora']} · phase {1 if phase == 'technical' else 2} ({phase})")
        table.add_column("check")
        table.add_column("")
        table.add_column("detail", overflow="fold")
        for check in result["checks"]:
            table.add_row(check["name"], "[green]✓[/]" if check["passed"] else "[red]✗[/]", check["detail"])
        render.console.print(table)
        verdict = "[bold green]passed[/]" if result["passed"] else "[bold red]failed[/]"
        recorded = f" · recorded as evaluation {result['evaluation_id']}" if "evaluation_id" in result else ""
        render.console.print(f"phase {phase}: {verdict}{recorded}")
        if result.get("report"):
            render.console.print(f"report: {result['report']}")


@eval_app.command("technical")
def eval_technical(
    ref: Annotated[
        str | None, typer.Argument(help="NAME@VERSION (default: the latest); leave out with --file.")
    ] = None,
    project: ProjectOpt = None, tiny: TinyOpt = False, model_path: ModelOpt = None,
    prompts: PromptsOpt = None, prompts_file: PromptsFileOpt = None, out: OutOpt = Path("wanlora-evals"),
    record: RecordOpt = True, file: FileOpt = None, low_noise: LowOpt = None, base_model: BaseOpt = None,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Phase 1: integrity, structure, rank/alpha, the effect check (0.6/0.8/1.0), test generations without
    NaN/black/frozen frames, speed and memory against the base model. Exits 1 when it fails."""
    if ref is None and file is None:
        raise InvalidInput("name the version to check (NAME@VERSION), or an unregistered file with --file")
    if ref is None:
        ref, record = file.stem, False  # type: ignore[union-attr]
    _evaluate(["technical"], ref, project, as_json, tiny=tiny, model_path=model_path, prompts=prompts,
              prompts_file=prompts_file, out=out, record=record, file=file, low_noise=low_noise,
              base_model=base_model)  # fmt: skip


@eval_app.command("quality")
def eval_quality(
    ref: RefArg, project: ProjectOpt = None, tiny: TinyOpt = False, model_path: ModelOpt = None,
    clip: ClipOpt = None, references: RefsOpt = None, prompts: PromptsOpt = None,
    prompts_file: PromptsFileOpt = None, out: OutOpt = Path("wanlora-evals"), record: RecordOpt = True,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Phase 2: consistency, style adherence and prompt flexibility (0–10) against the base model and the
    previous version, a strength sweep (0.5/0.7/0.9/1.0), and a report with charts and a contact sheet."""
    _evaluate(["quality"], ref, project, as_json, tiny=tiny, model_path=model_path, clip=clip, references=references,
              prompts=prompts, prompts_file=prompts_file, out=out, record=record, file=None, low_noise=None)  # fmt: skip


@eval_app.command("run")
def eval_run(
    refs: Annotated[list[str], typer.Argument(help="NAME@VERSION …: several share one loaded base model.")], project: ProjectOpt = None, tiny: TinyOpt = False, model_path: ModelOpt = None,
    clip: ClipOpt = None, references: RefsOpt = None, prompts: PromptsOpt = None,
    prompts_file: PromptsFileOpt = None, out: OutOpt = Path("wanlora-evals"), record: RecordOpt = True,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Phases 1 and 2 end to end; the results and scores go into the registry. Several versions (a sweep's
    candidates) share one loaded base model and its outputs."""
    _evaluate(["technical", "quality"], refs if len(refs) > 1 else refs[0], project, as_json, tiny=tiny, model_path=model_path, clip=clip,
              references=references, prompts=prompts, prompts_file=prompts_file, out=out, record=record, file=None,
              low_noise=None)  # fmt: skip


def gate_table(gate: "GateStatus") -> Table:
    table = Table(title=f"{gate.project}/{gate.lora}@{gate.version} · files {gate.digest[:12]}")
    table.add_column("phase")
    table.add_column("state")
    table.add_column("detail", overflow="fold")
    colours = {"passed": "green", "failed": "red", "missing": "yellow", "running": "cyan", "not_required": "dim"}
    for p in gate.phases:
        table.add_row(f"{p.number} {p.phase}", f"[{colours[p.state]}]{p.state.replace('_', ' ')}[/]", p.detail)
    return table


@eval_app.command("status")
def eval_status(ref: RefArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Which phases passed for this version's files, and whether it may be promoted (exit 0), or not (1)."""
    name, version = split_ref(ref)
    with backend() as wl:
        proj = project_of(wl, project)
        if version is None:
            with wl.registry(write=False) as reg:
                version = reg.get_version(project=proj, name=name).version
        with wl.evaluation(write=False) as ev:
            gate = ev.gate(project=proj, name=name, version=version)
    if as_json:
        render.emit_json(gate)
    else:
        render.console.print(gate_table(gate))
        render.console.print("[bold green]ready to promote[/]" if gate.ready else "[yellow]not ready to promote[/]")
    if not gate.ready:
        raise typer.Exit(1)


def _metrics_row(m: "Metrics | None") -> list[str]:
    if m is None or not m.reports:
        return ["0", "—", "—", "—"]
    rating = f"{m.rating:.2f} ({m.ratings})" if m.rating is not None else "—"
    seconds = f"{m.seconds:.1f} s" if m.seconds is not None else "—"
    return [str(m.reports), f"{m.error_rate or 0:.1%}", rating, seconds]


def trial_view(t: "TrialPublic") -> Table:
    colours = {"running": "cyan", "passed": "green", "aborted": "red", "stopped": "yellow"}
    table = Table(title=f"trial {t.id}: {t.project}/{t.lora}@{t.version} on {t.share:g}% of jobs "
                        f"· [{colours[t.status]}]{t.status}[/]")  # fmt: skip
    for col in ("version", "reports", "error rate", "rating", "time"):
        table.add_column(col)
    table.add_row(f"{t.version} (candidate)", *_metrics_row(t.candidate))
    if t.baseline:
        table.add_row(f"{t.baseline} (current)", *_metrics_row(t.current))
    table.caption = t.verdict
    return table


@trial_app.command("start")
def trial_start(
    ref: RefArg,
    share: Annotated[
        float | None, typer.Option("--share", help="Percent of jobs, 1–50; default from the policy.")
    ] = None,
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve a testing version to a sticky share of jobs (admin); phases 1 and 2 must have passed."""
    name, version = exact_ref(ref)
    with backend() as wl, wl.evaluation() as ev:
        trial = ev.start_trial(project=project_of(wl, project), name=name, version=version, share=share, reason=reason)
    render.emit_json(trial) if as_json else render.console.print(trial_view(trial))


@trial_app.command("status")
def trial_status(
    name: Annotated[str, typer.Argument(help="LoRA name.")], project: ProjectOpt = None, as_json: JsonOpt = False
) -> None:
    """The running (or last) trial, judged now: it passes after its minimum reports and duration."""
    with backend() as wl, wl.evaluation() as ev:
        trial = ev.trial(project=project_of(wl, project), name=name)
    render.emit_json(trial) if as_json else render.console.print(trial_view(trial))


@trial_app.command("stop")
def trial_stop(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End the running trial by hand (admin)."""
    with backend() as wl, wl.evaluation() as ev:
        trial = ev.stop_trial(project=project_of(wl, project), name=name, reason=reason)
    render.emit_json(trial) if as_json else render.console.print(trial_view(trial))


@app.command()
def report(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION the job used.")],
    job: Annotated[str, typer.Option("--job", help="The ComfyUI job (prompt) id.")],
    success: Annotated[bool, typer.Option("--success/--failure", help="Did the job produce usable output?")],
    rating: Annotated[int | None, typer.Option("--rating", min=1, max=10, help="1–10.")] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", min=0, help="Generation time.")] = None,
    client_id: Annotated[str | None, typer.Option("--client-id", envvar="WANLORA_CLIENT_ID")] = None,
    error: Annotated[str | None, typer.Option("--error", help="What went wrong.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A ComfyUI host reports one job's outcome; a running trial is judged again at once."""
    from registry.domain.eval_schemas import ReportIn

    name, version = exact_ref(ref, "use NAME@VERSION: the version the job used")
    outcome = ReportIn(job_id=job, success=success, rating=rating, seconds=seconds, client_id=client_id, error=error)
    with backend() as wl, wl.evaluation() as ev:
        trial = ev.report(project=project_of(wl, project), name=name, version=version, outcome=outcome)
    if as_json:
        render.emit_json({"recorded": True, "trial": trial.model_dump(mode="json") if trial else None})
        return
    render.console.print(f"recorded {job} for {name}@{version}")
    if trial is not None:
        render.console.print(trial_view(trial))


@app.command()
def pick(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    job: Annotated[str, typer.Option("--job", help="Job or client id: the same id always gets the same answer.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Which version a job gets: a running trial's candidate for its share of ids, else the current one."""
    with backend() as wl, wl.evaluation(write=False) as ev:
        chosen = ev.pick(project=project_of(wl, project), name=name, key=job)
    if as_json:
        render.emit_json(chosen)
    else:
        what = f"[cyan]trial {chosen.trial_id} candidate[/]" if chosen.trial else "[green]current[/]"
        render.console.print(f"{chosen.project}/{chosen.lora}@{chosen.version} ({what}) for {job}")


@app.command()
def metrics(
    name: Annotated[str, typer.Argument(help="LoRA name.")],
    days: Annotated[float, typer.Option("--days", help="Window, days.")] = 30,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per version: jobs reported, error rate, rating and generation time over the last --days."""
    with backend() as wl, wl.evaluation(write=False) as ev:
        rows = ev.metrics(project=project_of(wl, project), name=name, days=days)
    if as_json:
        render.emit_json(rows)
        return
    table = Table(title=f"{name}: the last {days:g} days")
    for col in ("version", "reports", "error rate", "rating", "time"):
        table.add_column(col)
    for m in rows:
        table.add_row(m.version, *_metrics_row(m))
    render.console.print(table)


@app.command()
def review(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The monthly review: current versions whose metrics drifted or that should be retrained."""
    with backend() as wl, wl.evaluation(write=False) as ev:
        items = ev.review(project=project)
    if as_json:
        render.emit_json(items)
        return
    if not items:
        render.console.print("[green]nothing to review[/]: no drift, nothing due for retraining")
        return
    table = Table(title="review")
    for col in ("LoRA", "action", "why"):
        table.add_column(col, overflow="fold")
    for item in items:
        colour = "red" if item.action == "retrain" else "yellow"
        table.add_row(
            f"{item.project}/{item.lora}@{item.version}", f"[{colour}]{item.action}[/]", "; ".join(item.reasons)
        )
    render.console.print(table)


@policy_app.command("show")
def policy_show(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The effective policy of a project: required phases and every threshold."""
    with backend() as wl, wl.evaluation(write=False) as ev:
        policy = ev.policy_for(project=project_of(wl, project))
    if as_json:
        render.emit_json(policy)
        return
    table = Table(title=f"evaluation policy · {project_of(wl, project)}", show_header=False)
    table.add_row("require", ", ".join(policy["require"]) or "[yellow]nothing[/] (no gate)")
    for section in ("technical", "quality", "trial", "review"):
        for key, value in policy[section].items():
            table.add_row(f"{section}.{key}", str(value))
    render.console.print(table)
