"""Embeddings for the quality scores, behind a small interface: a CLIP-family model from a local
folder (``ClipScorer.from_path``), or a tiny random CLIP built in-process (``ClipScorer.tiny``) for
tests and CPU runs. Nothing is downloaded.

The scores (0–10) built on them:
- consistency: mean pairwise cosine similarity of the image embeddings of generations of one subject;
- style adherence: mean cosine similarity of each generation to the reference images (the training
  set), each against its best match;
- prompt flexibility: CLIPScore (2.5 · max(cos, 0), Hessel et al. 2021) of each generation with its own
  prompt, averaged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from registry.domain.errors import InvalidInput

__all__ = ["ClipScorer", "Scorer", "consistency", "flexibility", "style_adherence"]


class Scorer(Protocol):
    def images(self, images: list[np.ndarray]) -> torch.Tensor:
        """(N, D) unit-norm embeddings of HxWx3 uint8 images."""
        ...

    def texts(self, texts: list[str]) -> torch.Tensor:
        """(N, D) unit-norm embeddings of texts, in the images' space."""
        ...


class ClipScorer:
    def __init__(self, model: Any, preprocess: Any, tokenize: Any) -> None:
        self.model = model.eval()
        self._preprocess = preprocess
        self._tokenize = tokenize

    @classmethod
    def from_path(cls, path: Path) -> ClipScorer:
        from transformers import CLIPModel, CLIPProcessor

        if not Path(path).is_dir():
            raise InvalidInput(
                f"CLIP model folder {path} does not exist",
                hint="point --clip at a local CLIP model folder (e.g. a saved openai/clip-vit-large-patch14)",
            )
        model = CLIPModel.from_pretrained(path, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(path, local_files_only=True)

        def preprocess(images: list[np.ndarray]) -> torch.Tensor:
            return processor(images=images, return_tensors="pt")["pixel_values"]

        def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
            return dict(processor(text=texts, return_tensors="pt", padding=True, truncation=True))

        return cls(model, preprocess, tokenize)

    @classmethod
    def tiny(cls, seed: int = 0) -> ClipScorer:
        """A random CLIP at toy size: real architecture, meaningless but deterministic embeddings."""
        from transformers import CLIPConfig, CLIPModel

        torch.manual_seed(seed)
        config = CLIPConfig(
            text_config={"vocab_size": 259, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "max_position_embeddings": 64, "eos_token_id": 258,
                         "bos_token_id": 257, "pad_token_id": 0},
            vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
            projection_dim=16,
        )  # fmt: skip
        model = CLIPModel(config)
        # The default init (std 0.02) makes every image embed alike; a variance-preserving one (std
        # 1/sqrt(fan_in)) keeps the random features apart, so related images score closer than others.
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                    module.weight.normal_(0, module.weight[0].numel() ** -0.5)
                elif isinstance(module, torch.nn.Embedding):
                    module.weight.normal_(0, 0.02)

        def preprocess(images: list[np.ndarray]) -> torch.Tensor:
            from PIL import Image

            arrays = [np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BICUBIC)) for im in images]
            x = torch.from_numpy(np.stack(arrays)).float().permute(0, 3, 1, 2) / 255.0
            return (x - 0.5) / 0.5

        def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
            ids = torch.zeros(len(texts), 64, dtype=torch.long)
            for row, text in enumerate(texts):
                data = [257, *list(text.encode("utf-8"))[:62], 258]
                ids[row, : len(data)] = torch.tensor(data)
            return {"input_ids": ids, "attention_mask": (ids > 0).long()}

        return cls(model, preprocess, tokenize)

    @torch.no_grad()
    def images(self, images: list[np.ndarray]) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=self._preprocess(images))
        out = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(out.float(), dim=-1)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        out = self.model.get_text_features(**self._tokenize(texts))
        out = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(out.float(), dim=-1)


def _to10(value: float) -> float:
    return round(10 * min(1.0, max(0.0, value)), 3)


def consistency(embeddings: torch.Tensor) -> float:
    """0–10: mean pairwise cosine similarity (each pair once)."""
    n = embeddings.shape[0]
    if n < 2:
        return _to10(1.0)
    sim = embeddings @ embeddings.T
    return _to10(float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1))))


def style_adherence(embeddings: torch.Tensor, references: torch.Tensor) -> float:
    """0–10: mean over generations of the cosine similarity to the closest reference image."""
    return _to10(float((embeddings @ references.T).max(dim=1).values.mean()))


def flexibility(embeddings: torch.Tensor, prompts: torch.Tensor) -> float:
    """0–10: mean CLIPScore (2.5 · max(cos, 0)) of each generation with its own prompt."""
    cos = (embeddings * prompts).sum(dim=-1).clamp(min=0)
    return _to10(float((2.5 * cos).mean()))
