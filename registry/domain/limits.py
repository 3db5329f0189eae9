"""The sizes wanlora accepts for free text and JSON documents: the same on SQLite and PostgreSQL,
checked before anything is stored, and refused with a message that names the field and the limit."""

from __future__ import annotations

import json
from typing import Any

from registry.domain.errors import InvalidInput

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_PAGE",
    "MAX_REASON",
    "MAX_TEXT",
    "MAX_TRIGGER_WORD",
    "MAX_TRIGGER_WORDS",
    "check_json",
    "check_text",
    "check_trigger_words",
]

MAX_TEXT = 64 * 1024  # a changelog, known issues, a description, an evaluation summary (characters)
MAX_REASON = 4000  # a promote, rollback, deprecate or trial reason
MAX_PAGE = 1000  # LoRAs in one page of a listing
MAX_TRIGGER_WORDS = 64
MAX_TRIGGER_WORD = 128
MAX_JSON_DEPTH = 16  # hyperparameters, dataset summary, evaluation details: nesting levels
MAX_JSON_BYTES = 256 * 1024  # the same documents, serialised


def check_text(value: str | None, what: str, limit: int = MAX_TEXT) -> str | None:
    if value is not None and len(value) > limit:
        raise InvalidInput(
            f"{what} is {len(value):,} characters; at most {limit:,} are kept", hint=f"shorten the {what}"
        )
    return value


def check_json(value: Any, what: str, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Refuse a document nested deeper than ``max_depth`` or larger than ``max_bytes``. The depth is
    measured without recursion, so a hostile document cannot exhaust the stack while it is checked."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise InvalidInput(f"{what} is nested more than {max_depth} levels deep", hint=f"flatten the {what}")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    size = len(json.dumps(value, default=str))
    if size > max_bytes:
        raise InvalidInput(f"{what} is {size:,} bytes as JSON; at most {max_bytes:,}", hint=f"shorten the {what}")
    return value


def check_trigger_words(words: list[str]) -> list[str]:
    if len(words) > MAX_TRIGGER_WORDS:
        raise InvalidInput(f"{len(words)} trigger words; at most {MAX_TRIGGER_WORDS}", hint="keep the ones users type")
    for word in words:
        if len(word) > MAX_TRIGGER_WORD:
            raise InvalidInput(
                f"trigger word {word[:40]!r}… is {len(word):,} characters; at most {MAX_TRIGGER_WORD}",
                hint="a trigger word is a short token users put in prompts",
            )
    return words
