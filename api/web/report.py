"""report.md, rendered safely: markdown-it with raw HTML off, and images only from the evaluation's own
kept files (any other image, local or remote, is shown as its alt text, so a report never makes the
browser fetch anything)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token

__all__ = ["render_markdown"]


def render_markdown(text: str, *, images: Mapping[str, str]) -> str:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")

    def image(_self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        src = str(token.attrs.get("src", ""))
        alt = token.content  # the alt text, as written
        if src not in images:
            return f'<span class="muted">[{escapeHtml(alt)}: drawn above]</span>'
        return f'<img src="{escapeHtml(images[src])}" alt="{escapeHtml(alt)}" loading="lazy">'

    md.add_render_rule("image", image)
    return md.render(text)
