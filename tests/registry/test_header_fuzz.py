"""Property: whatever bytes arrive, inspection either accepts a LoRA or raises InvalidFile — never
another exception, never a huge allocation."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.domain.errors import InvalidFile
from registry.files.ingest import Inspection, inspect_lora


def outcome(path: Path) -> Inspection | None:
    try:
        return inspect_lora(path)
    except InvalidFile as exc:  # anything else escaping is the bug this test looks for
        assert exc.message
        return None


dtypes = st.sampled_from(["F16", "BF16", "F32", "I8", "X9", "", "F8_E4M3"])
specs = st.fixed_dictionaries(
    {
        "dtype": dtypes,
        "shape": st.lists(st.integers(-2, 5000), max_size=3),
        "data_offsets": st.lists(st.integers(-10, 100_000), min_size=0, max_size=3),
    }
)
names = st.sampled_from(
    [
        "lora_unet_blocks_0_self_attn_q.lora_down.weight",
        "lora_unet_blocks_0_self_attn_q.lora_up.weight",
        "lora_unet_blocks_0_self_attn_q.alpha",
        "diffusion_model.blocks.1.ffn.0.lora_A.weight",
        "transformer.blocks.0.attn1.to_q.lora_B.weight",
        "__metadata__",
        "random",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.dictionaries(names, specs, max_size=4), data=st.binary(max_size=512), lie=st.integers(-5, 5))
def test_random_headers_only_raise_invalid_file(header: dict, data: bytes, lie: int) -> None:
    blob = json.dumps(header).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.safetensors"
        path.write_bytes(max(0, len(blob) + lie).to_bytes(8, "little") + blob + data)
        result = outcome(path)
        assert result is None or all(m.rank > 0 for m in result.modules)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=256))
def test_random_bytes_only_raise_invalid_file(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.safetensors"
        path.write_bytes(raw)
        assert outcome(path) is None  # 256 random bytes never make a LoRA
