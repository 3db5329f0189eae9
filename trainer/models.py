"""The models a run needs: the WAN DiT (one per expert), the VAE and the text encoder.

``tiny=True`` builds random models in-process with the real architecture at toy sizes (the ``wan-tiny``
base models), for tests and the demo on CPU. Otherwise the models load from local weights (a diffusers
folder with ``transformer/`` (``transformer_2/`` for the A14B low-noise expert), ``vae/``,
``text_encoder/`` and ``tokenizer/``); nothing is fetched from a hub unless ``allow_download`` is set.

Prompts are encoded the way diffusers' WAN pipelines encode them at generation time (cleaned, tokenized
to the maximum length, the encoder's output cut at the prompt's end), and the DiT sees them zero-padded
to that length, as it does in ComfyUI and in the pipelines: a LoRA trained on unpadded prompts would
meet different cross-attention at inference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from registry.domain.errors import InvalidInput
from registry.domain.wan import BASE_MODELS
from trainer.config import TrainConfig

__all__ = ["Models", "Tokenize", "build_tiny_transformer", "load_base_models", "load_models", "pad_text", "place"]

Tokenize = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
TEXT_LENGTH = 64  # the tiny models' prompt length
WAN_TEXT_LENGTH = 512  # WAN 2.x: UMT5-XXL prompts, padded to 512 tokens


@dataclass
class Models:
    transformers: dict[str, Any]  # expert name ("single", "high_noise", "low_noise") -> WanTransformer3DModel
    vae: Any
    text_encoder: Any
    tokenize: Tokenize
    text_length: int = TEXT_LENGTH
    fingerprint: str = ""  # which VAE, text encoder and tokenizer: part of the cache key

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """One (L, D) embedding per prompt, cut at its end (``pad_text`` restores the padding)."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        ids, mask = self.tokenize([prompt_clean(p) for p in prompts])
        hidden = self.text_encoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        return [h[: int(n)].float().cpu() for h, n in zip(hidden, mask.gt(0).sum(dim=1), strict=True)]


def pad_text(embeddings: list[torch.Tensor], length: int) -> torch.Tensor:
    """(B, length, D): the prompts zero-padded to ``length``, as the WAN pipelines hand them to the DiT."""
    out = torch.zeros(len(embeddings), length, embeddings[0].shape[-1], dtype=embeddings[0].dtype)
    for row, text in enumerate(embeddings):
        out[row, : min(length, text.shape[0])] = text[:length]
    return out


def build_tiny_transformer(seed: int) -> Any:
    from diffusers import WanTransformer3DModel

    spec = BASE_MODELS["wan-tiny"]
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=spec.dim // 2,
        in_channels=16,
        out_channels=spec.out_channels,
        text_dim=spec.text_dim,
        freq_dim=spec.freq_dim,
        ffn_dim=spec.ffn_dim,
        num_layers=spec.num_layers,
        rope_max_seq_len=64,
    )


def _byte_tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiny text encoder's tokenizer: UTF-8 bytes (+1, so 0 is padding)."""
    ids = torch.zeros(len(texts), TEXT_LENGTH, dtype=torch.long)
    for row, text in enumerate(texts):
        data = list(text.encode("utf-8"))[:TEXT_LENGTH]
        ids[row, : len(data)] = torch.tensor(data, dtype=torch.long) + 1
    return ids, (ids > 0).long()


def _tiny(seed: int, experts: list[str]) -> Models:
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    text = UMT5EncoderModel(
        UMT5Config(
            vocab_size=257, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2, relative_attention_num_buckets=8
        )
    )
    transformers = {name: build_tiny_transformer(seed + 1 + i) for i, name in enumerate(experts)}
    return Models(transformers, vae, text, _byte_tokenize, TEXT_LENGTH, f"tiny-{seed}")


def _local(model_path: Path | None, allow_download: bool, experts: list[str]) -> Models:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    layout = "a local WAN 2.2 diffusers folder (transformer/, vae/, text_encoder/, tokenizer/)"
    if model_path is None:
        raise InvalidInput(
            "no base model to run: the real model's weights are needed",
            hint=f"pass --model-path DIR, {layout}, or --tiny for a smoke run on a tiny random model",
        )
    root = Path(model_path).expanduser()
    if not root.is_dir():
        raise InvalidInput(f"model path {root} is not a folder", hint=f"point it at {layout}")
    local = not allow_download
    folders = {"single": "transformer", "high_noise": "transformer", "low_noise": "transformer_2"}

    def load(cls: Any, subfolder: str) -> Any:
        try:
            return cls.from_pretrained(root, subfolder=subfolder, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise InvalidInput(
                f"{root} has no loadable {subfolder}/ ({str(exc).splitlines()[0][:200]})", hint=f"point it at {layout}"
            ) from None

    transformers = {name: load(WanTransformer3DModel, folders[name]) for name in experts}
    vae = load(AutoencoderKLWan, "vae")
    text = load(UMT5EncoderModel, "text_encoder")
    tokenizer = load(AutoTokenizer, "tokenizer")

    def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = tokenizer(
            texts, padding="max_length", max_length=WAN_TEXT_LENGTH, truncation=True, add_special_tokens=True,
            return_attention_mask=True, return_tensors="pt",
        )  # fmt: skip
        return out.input_ids, out.attention_mask

    return Models(transformers, vae, text, tokenize, WAN_TEXT_LENGTH, _fingerprint(root))


def _fingerprint(root: Path) -> str:
    """The encoders' identity: folder, configs and the weight files' sizes and times (not their bytes)."""
    import hashlib

    h = hashlib.sha256(str(root.resolve()).encode())
    for sub in ("vae", "text_encoder", "tokenizer"):
        for path in sorted((root / sub).glob("*")):
            stat = path.stat()
            h.update(f"{sub}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_base_models(
    base_model: str, *, tiny: bool, model_path: Path | None = None, allow_download: bool = False, seed: int = 42
) -> Models:
    """The DiT expert(s), VAE and text encoder of ``base_model``: tiny random ones built from ``seed``, or
    a local diffusers folder."""
    experts = ["high_noise", "low_noise"] if BASE_MODELS[base_model].experts else ["single"]
    return _tiny(seed, experts) if tiny else _local(model_path, allow_download, experts)


def load_models(config: TrainConfig) -> Models:
    return load_base_models(
        config.base_model, tiny=config.tiny, model_path=config.model_path, allow_download=config.allow_download,
        seed=config.seed,
    )  # fmt: skip


def place(model: Any, device: torch.device, dtype: torch.dtype) -> None:
    """Move to ``device`` and cast to ``dtype``, except the modules the model keeps in fp32 (norms,
    time embedding, RoPE), as diffusers' ``from_pretrained(torch_dtype=…)`` does."""
    model.to(device)
    if dtype == torch.float32:
        return
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not keep & set(name.split(".")):
            tensor.data = tensor.data.to(dtype)
