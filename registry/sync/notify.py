"""Tell a running ComfyUI that files changed: ``POST /free`` drops its executor caches and unloads its
models, so workflows with the stock ``LoraLoader`` read the new weights on their next prompt."""

from __future__ import annotations

from urllib.parse import urlparse

from registry.domain.errors import InvalidInput

__all__ = ["check_comfyui_url", "free_comfyui"]


def check_comfyui_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidInput(f"invalid ComfyUI URL {url!r}", hint="e.g. --comfyui-url http://127.0.0.1:8188")
    return url.rstrip("/")


def free_comfyui(url: str, *, timeout: float = 5.0) -> str | None:
    """``None`` once ComfyUI has dropped its caches, else why it did not (sync goes on either way)."""
    import httpx  # here: a sync that tells no ComfyUI (most, and every local one) never loads it

    try:
        answer = httpx.post(
            f"{check_comfyui_url(url)}/free", json={"unload_models": True, "free_memory": True}, timeout=timeout
        )
    except httpx.HTTPError as exc:
        return f"ComfyUI at {url} did not answer ({type(exc).__name__}: {exc})"
    if answer.status_code != 200:
        return f"ComfyUI at {url} answered {answer.status_code} to POST /free"
    return None
