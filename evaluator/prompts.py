"""Production-like prompts: varied scenes, camera work, lighting and actions around the LoRA's subject
(its trigger words), as the guide's protocol asks: "diverse prompts covering the expected uses"."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from registry.domain.errors import InvalidInput

__all__ = ["load_prompts", "production_prompts"]

ACTIONS = [
    "walking through", "turning to the camera in", "laughing in", "sitting quietly in", "running across",
    "looking out of a window in", "dancing in", "reading a book in", "waving at someone in", "standing still in",
]  # fmt: skip
PLACES = [
    "a busy city street", "a sunlit forest", "a cozy cafe", "a rainy night market", "an empty beach at dawn",
    "a modern office", "a snowy mountain village", "a neon-lit alley", "a quiet library", "a wheat field",
    "a train station", "a rooftop garden",
]  # fmt: skip
CAMERA = [
    "slow dolly in", "handheld tracking shot", "static wide shot", "close-up, shallow depth of field",
    "smooth orbit around the subject", "low angle shot", "aerial drone shot", "medium shot, slow pan left",
]  # fmt: skip
LIGHT = [
    "golden hour light", "overcast soft light", "dramatic rim light", "warm indoor light", "cold blue moonlight",
    "bright midday sun", "candle light", "studio lighting",
]  # fmt: skip


def production_prompts(subject: str, count: int, seed: int = 0) -> list[str]:
    """``count`` distinct prompts about ``subject``, the same for the same seed."""
    combos = list(itertools.product(ACTIONS, PLACES, CAMERA, LIGHT))
    random.Random(seed).shuffle(combos)
    return [f"{subject} {a} {p}, {c}, {lt}" for a, p, c, lt in combos[:count]]


def load_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read prompts from {path}: {exc}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise InvalidInput(f"{path} has no prompts", hint="one prompt per line")
    return prompts
