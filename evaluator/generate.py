"""Generation for evaluation: the WAN DiT with LoRA versions as peft adapters at a chosen strength.

``Generator`` loads the base model once (tiny random models or a local diffusers folder, as the
trainer does), adds each LoRA file as a named adapter (its LoRA modules through diffusers' peft
loading, its LoKr, LoHa and diff weights as patches of the parameters, ``evaluator.weights``), and samples with flow-matching Euler steps, switching
from the high-noise to the low-noise expert at the boundary for the A14B models.

Base-model outputs do not depend on the LoRA, so they are computed once per (prompt, seed, settings)
and reused across strengths and versions (``cache_base``); ``forward_passes`` counts the DiT calls by
kind, which is what the benchmark compares.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evaluator.weights import Patch, resolve, split_stored
from registry.domain.errors import InvalidInput
from registry.domain.wan import BASE_MODELS, EXPERT_BOUNDARY
from trainer.models import Models, load_base_models, pad_text, place

__all__ = ["GenerationSettings", "Generator"]


@dataclass(frozen=True)
class GenerationSettings:
    height: int = 480
    width: int = 832
    frames: int = 33
    steps: int = 30
    guidance: float = 5.0
    shift: float = 5.0
    negative: str = "blurry, low quality, static, distorted, watermark, text"

    @classmethod
    def tiny(cls) -> GenerationSettings:
        return cls(height=32, width=32, frames=5, steps=4, guidance=3.0)

    def key(self) -> str:
        return f"{self.height}x{self.width}x{self.frames}:{self.steps}:{self.guidance}:{self.shift}:{self.negative}"


@dataclass
class Output:
    frames: torch.Tensor  # (F, H, W, 3) float in [0, 1]
    seconds: float
    peak_memory: int  # bytes: peak allocated on CUDA; the weights' bytes on the CPU


@dataclass
class Generator:
    base_model: str
    models: Models
    settings: GenerationSettings
    device: torch.device
    cache_base: bool = True
    tiny: bool = False
    forward_passes: Counter[str] = field(default_factory=Counter)
    _base: dict[str, Output] = field(default_factory=dict)
    _adapters: dict[str, dict[str, str]] = field(default_factory=dict)  # adapter -> expert -> file
    _lora_experts: dict[str, set[str]] = field(default_factory=dict)  # adapter -> experts with a peft adapter
    _patches: dict[str, dict[str, list[Patch]]] = field(default_factory=dict)  # adapter -> expert -> patches
    _originals: list[tuple[torch.nn.Parameter, torch.Tensor]] = field(default_factory=list)
    _active: tuple[str | None, float] = (None, 0.0)

    @classmethod
    def load(
        cls,
        base_model: str,
        *,
        tiny: bool,
        model_path: Path | None = None,
        settings: GenerationSettings | None = None,
        seed: int = 42,
        cache_base: bool = True,
    ) -> Generator:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        models = load_base_models(base_model, tiny=tiny, model_path=model_path, seed=seed)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        for model in models.transformers.values():
            place(model, device, dtype)  # keeps the fp32 modules (norms, time embedding) in fp32
            model.eval()
        models.vae.to(device).eval()
        models.text_encoder.to(device).eval()
        settings = settings or (GenerationSettings.tiny() if tiny else GenerationSettings())
        return cls(base_model, models, settings, device, cache_base, tiny)

    # -- adapters -----------------------------------------------------------------------------------

    def has_lora(self, name: str) -> bool:
        """Whether an adapter of that name is loaded (versions sharing a generator load each once)."""
        return name in self._adapters

    def add_lora(self, name: str, files: dict[str, Path]) -> None:
        """Load one version (``{"single": path}`` or ``{"high_noise": …, "low_noise": …}``) as adapter
        ``name`` on the matching experts: its LoRA modules as a peft adapter, its LoKr, LoHa and diff
        weights as patches (``evaluator.weights``)."""
        lora_experts = set()
        for expert, path in files.items():
            state, patches = split_stored(path)
            model = self.models.transformers[expert]
            try:
                for patch in patches:
                    param = resolve(model, patch)
                    patch.delta(param.shape)  # fits, or says so now rather than mid-generation
                if state:
                    with warnings.catch_warnings():  # peft warns that a second adapter joins the first: the point
                        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                        model.load_lora_adapter(state, adapter_name=name, prefix="transformer")
                    lora_experts.add(expert)
            except (RuntimeError, KeyError) as exc:
                if isinstance(exc, RuntimeError) and "size mismatch" not in str(exc) and "shape" not in str(exc):
                    raise
                raise self._misfit(path, model) from None
            self._patches.setdefault(name, {})[expert] = patches
        self._adapters[name] = {k: str(v) for k, v in files.items()}
        self._lora_experts[name] = lora_experts
        self._active = ("?", -1.0)  # force the next use() to set the adapters

    def _misfit(self, path: Path, model: Any) -> InvalidInput:
        config = getattr(model, "config", None)
        width = getattr(config, "num_attention_heads", 0) * getattr(config, "attention_head_dim", 0)
        return InvalidInput(
            f"{path.name} does not fit the loaded model ({width} wide): "
            + (
                "--tiny runs a tiny random WAN, which only LoRAs trained on it fit"
                if self.tiny
                else "its shapes are those of another base model"
            ),
            hint="evaluate it on its own base model with --model-path DIR (a local diffusers folder)",
        )

    def use(self, name: str | None, strength: float = 1.0) -> None:
        """Generate with adapter ``name`` at ``strength`` (None: the base model, adapters off)."""
        if self._active == (name, strength):
            return
        self._unpatch()
        for expert, model in self.models.transformers.items():
            if getattr(model, "peft_config", None):
                if name is None or expert not in self._lora_experts.get(name, set()):
                    model.disable_adapters()
                else:
                    model.enable_adapters()
                    model.set_adapters([name], weights=[strength])
            if name is not None:
                self._patch(model, self._patches.get(name, {}).get(expert, []), strength)
        self._active = (name, strength)

    @torch.no_grad()
    def _patch(self, model: Any, patches: list[Patch], strength: float) -> None:
        for patch in patches:
            param = resolve(model, patch)
            self._originals.append((param, param.detach().clone()))
            delta = patch.delta(param.shape).to(param.device)
            param.copy_((param.float() + strength * delta).to(param.dtype))

    @torch.no_grad()
    def _unpatch(self) -> None:
        while self._originals:
            param, original = self._originals.pop()
            param.copy_(original)

    # -- sampling -----------------------------------------------------------------------------------

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return pad_text(self.models.encode_prompts(prompts, self.device), self.models.text_length).to(self.device)

    def _forward(self, model: Any, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.forward_passes["base" if self._active[0] is None else "lora"] += 1
        dtype = next(model.parameters()).dtype
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = model(hidden_states=latents.to(dtype), timestep=t, encoder_hidden_states=text.to(dtype)).sample
        return out.float()

    def _expert(self, t: float) -> Any:
        experts = self.models.transformers
        if "single" in experts:
            return experts["single"]
        boundary = EXPERT_BOUNDARY.get(self.base_model, 0.875) * 1000
        return experts["high_noise"] if t >= boundary else experts["low_noise"]

    def latent_shape(self) -> tuple[int, int, int, int, int]:
        s = self.settings
        channels = BASE_MODELS[self.base_model].out_channels
        return (1, channels, (s.frames - 1) // 4 + 1, s.height // 8, s.width // 8)

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, sigma: float, text: torch.Tensor) -> torch.Tensor:
        """One denoiser prediction (the effect check's probe)."""
        t = torch.tensor([sigma * 1000.0], device=self.device)
        return self._forward(self._expert(sigma * 1000), latents.to(self.device), t, text)

    @torch.no_grad()
    def generate(self, prompt: str, seed: int) -> Output:
        """A video (or image, at one frame) for ``prompt`` with the active adapter."""
        cacheable = self.cache_base and self._active[0] is None
        key = hashlib.sha256(f"{prompt}\0{seed}\0{self.settings.key()}".encode()).hexdigest()
        if cacheable and key in self._base:
            return self._base[key]
        out = self._sample(prompt, seed)
        if cacheable:
            self._base[key] = out
        return out

    def _sample(self, prompt: str, seed: int) -> Output:
        from diffusers import FlowMatchEulerDiscreteScheduler

        s = self.settings
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        text = self.encode([prompt])
        negative = self.encode([s.negative]) if s.guidance > 1 else None
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(self.latent_shape(), generator=generator).to(self.device)
        scheduler: Any = FlowMatchEulerDiscreteScheduler(shift=s.shift)
        scheduler.set_timesteps(s.steps, device=self.device)
        for t in scheduler.timesteps:
            model = self._expert(float(t))
            tt = t.reshape(1).to(self.device)
            pred = self._forward(model, latents, tt, text)
            if negative is not None:
                uncond = self._forward(model, latents, tt, negative)
                pred = uncond + s.guidance * (pred - uncond)
            latents = scheduler.step(pred, t, latents).prev_sample
        frames = self._decode(latents)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        # No allocator statistics on the CPU: there, the weights in use, the active adapter's included.
        peak = torch.cuda.max_memory_allocated() if cuda else self._weight_bytes()
        return Output(frames, seconds, peak)

    def _weight_bytes(self) -> int:
        adapter = self._active[0]
        total = 0
        for model in self.models.transformers.values():
            for name, t in model.named_parameters():
                if "lora_" not in name or (adapter is not None and f".{adapter}." in name):
                    total += t.numel() * t.element_size()
        for patches in self._patches.get(adapter or "", {}).values():  # the factors a patched version keeps
            total += sum(t.numel() * t.element_size() for patch in patches for t in patch.tensors.values())
        return total

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.models.vae
        mean = torch.tensor(vae.config.latents_mean, device=self.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=self.device).view(1, -1, 1, 1, 1)
        video = vae.decode(latents * std + mean).sample  # (1, 3, F, H, W) in [-1, 1]
        return ((video[0].permute(1, 2, 3, 0).float().clamp(-1, 1) + 1) / 2).cpu()
