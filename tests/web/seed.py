"""A registry that looks like a team's: the data the dashboard tests (and screenshots) run on.

Project p1: ``sarah`` with 1.0.0 (deprecated), 1.1.0 (current), 1.2.0 (testing, phases 1 and 2 passed,
with a loss curve, a strength sweep, a contact sheet and report.md, and a running trial) and 1.3.0
(testing, no evidence: the gate refuses it); ``ink`` (style) and ``walk`` (motion). Project p2: ``agent``,
another team's. The policy requires phases 1 and 2.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from PIL import Image

from registry.backends.local import Wanlora
from registry.domain.eval_schemas import EvaluationIn, ReportIn
from tests.helpers import register

POLICY = "[default]\nrequire = ['technical', 'quality']\n"


@dataclass
class Seeded:
    tokens: dict[str, str]


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (384, 144)) -> str:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 48):  # a grid, so that the sheet reads as one
        for y in range(size[1]):
            image.putpixel((x, y), (255, 255, 255))
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _hyper(seed: int) -> dict[str, object]:
    curve = [[step, round(0.2 * math.exp(-step / (40 + 10 * seed)) + 0.03 + 0.004 * math.sin(step), 5)]
             for step in range(1, 301, 5)]  # fmt: skip
    return {"learning_rate": 1e-4 * (1 + seed), "rank": 16 * (1 + seed % 2), "epochs": 10 + seed,
            "training": {"checkpoint_step": 300, "train_loss": curve[-1][1], "loss_curve": curve,
                         "val_loss_by_timestep": {"0.25": 0.05, "0.75": 0.07}, "diagnostics": []}}  # fmt: skip


def evidence(wl: Wanlora, project: str, name: str, version: str, seed: int, *, sheet: bool = True) -> None:
    with wl.evaluation() as ev:
        digest = ev.digest(project=project, name=name, version=version)
        ev.record(project=project, name=name, version=version, result=EvaluationIn(
            phase="technical", digest=digest, passed=True, summary="loads, no NaN, rank and alpha as declared",
            details={"checks": [{"name": "loads", "passed": True, "detail": "ComfyUI key names, 240 modules"},
                                {"name": "nan_inf", "passed": True, "detail": "no NaN or Inf"}]},
        ))  # fmt: skip
        ours = {"consistency": 7.5 + 0.4 * seed, "style_adherence": 7.0 + 0.3 * seed, "prompt_flexibility": 7.2}
        sweep = {f"{s:g}": {k: v * (0.8 + 0.2 * s) for k, v in ours.items()} for s in (0.5, 0.7, 0.9, 1.0)}
        report = (
            f"# {name} {version}: phase 2\n\n| score | candidate | base |\n|---|---|---|\n"
            + "".join(f"| {k} | {v:.2f} | 5.00 |\n" for k, v in ours.items())
            + "\n![scores](scores.png)\n\n## Contact sheet\n\n![contact sheet](contact.png)\n"
        )
        ev.record(project=project, name=name, version=version, result=EvaluationIn(
            phase="quality", digest=digest, passed=True, summary=f"best strength 0.9; consistency {ours['consistency']:.2f}",
            scores={**ours, "best_strength": 0.9},
            details={"best_strength": 0.9, "overfitting": False, "base": {k: 5.0 for k in ours},
                     "previous": {k: v - 0.3 for k, v in ours.items()} if seed else None,
                     "previous_version": f"1.{seed - 1}.0" if seed else None, "sweep": sweep,
                     "checks": [{"name": k, "passed": True, "detail": f"{v:.2f} at strength 0.9"} for k, v in ours.items()]},
            contact_sheet_png=_png((40 * seed % 255, 90, 160)) if sheet else None, report_md=report,
        ))  # fmt: skip


def seed(wl: Wanlora, tmp: Path) -> Seeded:
    for i, version in enumerate(("1.0.0", "1.1.0", "1.2.0", "1.3.0")):
        register(wl, tmp, project="p1", version=version, seed=i, trigger_words=["sarah woman"],
                 description="Sarah, the studio's lead character", changelog=f"{version}: more expressions",
                 hyperparameters=_hyper(i), dataset_summary={"samples": 120 + 10 * i, "kind": "images"},
                 dataset_hash=f"{i:064x}")  # fmt: skip
        if version != "1.3.0":
            evidence(wl, "p1", "sarah", version, i)
    register(wl, tmp, project="p1", lora="ink", version="0.1.0", seed=10, category="style", trigger_words=["inkwash"])
    register(wl, tmp, project="p1", lora="walk", version="0.1.0", seed=11, category="motion")
    register(wl, tmp, project="p2", lora="agent", version="1.0.0", seed=12)
    with wl.registry() as reg:
        reg.promote(project="p1", name="sarah", version="1.0.0", reason="first release")
        reg.promote(project="p1", name="sarah", version="1.1.0", reason="better hands")
        reg.promote(project="p2", name="agent", version="1.0.0", reason="x", override=True)
    with wl.evaluation() as ev:
        ev.start_trial(project="p1", name="sarah", version="1.2.0", share=20, reason="try the new expressions")
        for job in range(6):
            ev.report(project="p1", name="sarah", version="1.2.0",
                      outcome=ReportIn(job_id=f"c{job}", success=job != 3, rating=8, seconds=30.0))  # fmt: skip
            ev.report(project="p1", name="sarah", version="1.1.0",
                      outcome=ReportIn(job_id=f"b{job}", success=True, rating=7, seconds=31.0))  # fmt: skip
    tokens: dict[str, str] = {}
    with wl.accounts() as acc:
        first = acc.bootstrap_admin(name="root")
        assert first is not None
        tokens["root"] = first.token
        for role in ("trainer", "production", "admin"):
            acc.add_user(name=role)
            tokens[role] = acc.create_token(user=role, project="p1", role=role).token
        tokens["short"] = acc.create_token(
            user="admin", project="p1", role="admin", expires_in=timedelta(hours=1)
        ).token
    return Seeded(tokens)
