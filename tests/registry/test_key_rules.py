"""Block indices are ASCII decimal without leading zeros (issue 11, item 4): `blocks.00`, `blocks.٠` and
`blocks.０` would name block 0 a second way, and let the same weights in as new ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from registry.backends.local import Wanlora
from registry.domain.errors import AlreadyExists, InvalidFile
from registry.domain.wan import parse_key
from tests.helpers import make, register

SPELLINGS = ["00", "٠", "０", "01", "0٠", "１"]


@pytest.mark.parametrize("index", SPELLINGS)
@pytest.mark.parametrize(
    "template",
    [
        "diffusion_model.blocks.{}.self_attn.q.lora_A.weight",
        "lora_unet_blocks_{}_self_attn_q.lora_down.weight",
        "transformer.blocks.{}.attn1.to_q.lora_A.weight",
        "diffusion_model.blocks.{}.ffn.0.lora_B.weight",
    ],
)
def test_a_second_spelling_of_a_block_index_is_refused(template: str, index: str) -> None:
    with pytest.raises(InvalidFile):
        parse_key(template.format(index))
    assert parse_key(template.format("0"))[1].startswith("blocks.0.")
    assert parse_key(template.format("10"))[1].startswith("blocks.10.")


def test_the_same_weights_cannot_come_back_under_another_spelling(wl: Wanlora, tmp_path: Path) -> None:
    original = make(tmp_path, "a", seed=1, fmt="canonical")
    register(wl, tmp_path, version="1.0.0", file=original)
    tensors = load_file(str(original))
    for spelling in ("00", "٠"):
        respelled = {k.replace("blocks.0.", f"blocks.{spelling}."): np.ascontiguousarray(v) for k, v in tensors.items()}
        path = tmp_path / f"respelled-{len(spelling)}-{ord(spelling[0])}.safetensors"
        save_file(respelled, str(path))
        with pytest.raises(InvalidFile):
            register(wl, tmp_path, version="1.1.0", file=path)
    with pytest.raises(AlreadyExists):  # the one spelling there is: a duplicate, as before
        register(wl, tmp_path, version="1.1.0", file=make(tmp_path, "b", seed=1, fmt="canonical"))
