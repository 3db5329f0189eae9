"""Latents and text embeddings, computed once and cached on disk; the VAE and the text encoder are
unloaded before the training loop starts.

Media is centre-cropped to a square, resized to the training resolution and, for videos, cut to the
first ``frames`` frames (4n+1); the cache key covers the file's bytes, the caption and the settings, so
a changed sample or setting is encoded again and nothing stale is ever reused.
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from registry.domain.digests import file_sha256
from trainer.dataset import Sample
from trainer.models import Models

__all__ = ["CachedSample", "build_cache", "load_pixels", "square"]


@dataclass(frozen=True)
class CachedSample:
    stem: str
    latents: torch.Tensor  # (C, F', H', W'), normalised
    text: torch.Tensor  # (L, D)


def square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize (Lanczos) to ``size`` × ``size``."""
    from PIL import Image

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


def load_pixels(sample: Sample, resolution: int, frames: int) -> torch.Tensor:
    """(3, F, H, W) in [-1, 1]: the first ``frames`` frames (an image is one frame)."""
    if sample.kind == "image":
        from PIL import Image

        with Image.open(sample.path) as im:
            arrays = [square(np.asarray(im.convert("RGB")), resolution)]
    else:
        import av

        arrays = []
        with av.open(str(sample.path)) as container:
            for frame in container.decode(video=0):
                arrays.append(square(frame.to_ndarray(format="rgb24"), resolution))
                if len(arrays) == frames:
                    break
        if len(arrays) < frames:
            raise ValueError(f"{sample.path.name} has {len(arrays)} frames, fewer than the {frames} asked for")
    video = torch.from_numpy(np.stack(arrays)).float().permute(3, 0, 1, 2)  # (3, F, H, W)
    return video / 127.5 - 1.0


def _key(sample: Sample, resolution: int, frames: int, models: str) -> str:
    h = hashlib.sha256()
    for part in (file_sha256(sample.path), sample.caption, str(resolution), str(frames), models):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


@torch.no_grad()
def build_cache(
    samples: list[Sample],
    models: Models,
    cache_dir: Path,
    resolution: int,
    frames: int,
    device: torch.device | str = "cpu",
) -> list[CachedSample]:
    """Encode what is not cached yet (on ``device``), load everything, then drop the encoders. The
    embeddings are stored cut at the prompt's end; the loop pads them (``pad_text``)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    vae = models.vae.eval()
    mean = torch.tensor(vae.config.latents_mean).view(-1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(-1, 1, 1, 1)
    paths = [cache_dir / f"{_key(s, resolution, frames, models.fingerprint)}.safetensors" for s in samples]
    if not all(path.exists() for path in paths):
        vae.to(device)
        models.text_encoder.eval().to(device)
    out = []
    for sample, path in zip(samples, paths, strict=True):
        if not path.exists():
            pixels = load_pixels(sample, resolution, frames if sample.kind == "video" else 1)
            encoded = vae.encode(pixels.unsqueeze(0).to(device)).latent_dist.mean[0].float().cpu()
            latents = (encoded - mean) / std
            text = models.encode_prompts([sample.caption], device)[0]
            tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two runs may share a cache folder
            save_file({"latents": latents.contiguous(), "text": text.contiguous()}, str(tmp))
            tmp.replace(path)  # atomic: a killed run never leaves a half-written cache entry
        tensors = load_file(str(path))
        out.append(CachedSample(sample.stem, tensors["latents"], tensors["text"]))
    # The encoders are not needed again: free them before the loop.
    models.vae = None
    models.text_encoder = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out
