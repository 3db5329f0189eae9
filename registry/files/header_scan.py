"""Streaming, bounded parsing of a safetensors header's JSON.

A header may be up to 100 MB, and ``json.loads`` on a hostile one costs gigabytes (a million tiny
entries) or the stack (deep nesting). This scanner reads the header in 1 MB chunks and walks its
top-level object with regular expressions, keeping only the entry it is in. Each entry is bounded
(depth, size, structure) before ``json.loads`` sees it, the number of entries is bounded, and so is
the time. Memory is one chunk, one entry and the parsed result, whatever the header holds.
"""

from __future__ import annotations

import codecs
import json
import re
import time
from typing import BinaryIO

from registry.domain.errors import InvalidFile

__all__ = [
    "MAX_ENTRY_CHARS",
    "MAX_HEADER_DEPTH",
    "MAX_METADATA_CHARS",
    "MAX_METADATA_KEYS",
    "MAX_NAME_CHARS",
    "MAX_PARSE_SECONDS",
    "MAX_TENSORS",
    "scan_header",
]

MAX_TENSORS = 32_768  # a WAN 14B LoKr with every linear layer has about 4,000
MAX_NAME_CHARS = 1_024  # a tensor name or a metadata key, as JSON
MAX_ENTRY_CHARS = 4_096  # one tensor's {dtype, shape, data_offsets}, as JSON
MAX_ENTRY_TOKENS = 64  # brackets, quotes and commas in one tensor's description
MAX_METADATA_CHARS = 16 * 1024 * 1024  # the whole __metadata__ object, as JSON (thumbnails, tag counts)
MAX_METADATA_KEYS = 4_096
MAX_HEADER_DEPTH = 3  # header {entry {shape [..]}}; __metadata__ is {key: string}
MAX_PARSE_SECONDS = 5.0
CHUNK_BYTES = 1024 * 1024

_WS = re.compile(r"[ \t\n\r]*")
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)  # a string's body up to its closing quote
_STRUCTURE = re.compile(r'["{}\[\],]')
_HINT = "this is not a LoRA file, or it was built to exhaust the server; do not use it"


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidFile(f"safetensors header names {key!r} twice", hint="re-save the file")
        out[key] = value
    return out


class _Scanner:
    """The top-level object's walk. ``buf[mark:]`` is the token being read; ``pos`` is where the
    walk stands in ``buf``. Each ``_step_*`` returns False when it needs more text."""

    def __init__(self, name: str, deadline: float) -> None:
        self.name = name
        self.deadline = deadline
        self.buf = ""
        self.pos = 0
        self.mark = 0
        self.state = "open"
        self.key = ""
        self.depth = 0
        self.in_string = False
        self.tokens = 0
        self.tensors: dict[str, object] = {}
        self.metadata: object = None

    def refuse(self, problem: str, hint: str = _HINT) -> InvalidFile:
        return InvalidFile(f"{self.name}: safetensors header {problem}", hint=hint)

    def feed(self, text: str) -> None:
        self.buf = self.buf[self.mark :] + text
        self.pos -= self.mark
        self.mark = 0
        if time.monotonic() > self.deadline:
            raise self.refuse(f"took over {MAX_PARSE_SECONDS:g} s to read")
        step = {
            "open": self._step_open,
            "key": self._step_key,
            "first_key": self._step_key,
            "in_key": self._step_in_key,
            "colon": self._step_colon,
            "value": self._step_value,
            "in_value": self._step_in_value,
            "done": self._step_done,
        }
        while step[self.state]():
            pass
        if self.state not in ("in_key", "in_value"):
            self.mark = self.pos  # nothing before pos is needed again

    def finish(self) -> tuple[dict[str, object], object]:
        if self.state != "done":
            raise self.refuse("is incomplete JSON: it ends before its closing brace", hint="re-save the file")
        return self.tensors, self.metadata

    def _skip_ws(self) -> bool:
        self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
        return self.pos < len(self.buf)

    def _step_open(self) -> bool:
        if not self._skip_ws():
            return False
        if self.buf[self.pos] != "{":
            raise self.refuse("is not a JSON object", hint="check that the file is a .safetensors LoRA")
        self.pos += 1
        self.state = "first_key"
        return True

    def _step_key(self) -> bool:
        if not self._skip_ws():
            return False
        c = self.buf[self.pos]
        if c == "}" and self.state == "first_key":
            self.pos += 1
            self.state = "done"
        elif c == '"':
            self.mark = self.pos
            self.pos += 1
            self.state = "in_key"
        else:
            raise self.refuse(f"is not valid JSON: expected a name at character {c!r}", hint="re-save the file")
        return True

    def _string_ends(self) -> bool:
        """Advance over a string's body; True at its closing quote (which is consumed)."""
        self.pos = _STRING_REST.match(self.buf, self.pos).end()  # type: ignore[union-attr]
        if self.pos >= len(self.buf) or self.buf[self.pos] == "\\":  # the text ends inside it
            return False
        self.pos += 1
        return True

    def _step_in_key(self) -> bool:
        ended = self._string_ends()
        if self.pos - self.mark > MAX_NAME_CHARS:
            raise self.refuse(f"has a name over {MAX_NAME_CHARS:,} characters")
        if not ended:
            return False
        try:
            self.key = json.loads(self.buf[self.mark : self.pos])
        except ValueError as exc:
            raise self.refuse(f"has an invalid name ({exc})", hint="re-save the file") from exc
        if self.key in self.tensors or (self.key == "__metadata__" and self.metadata is not None):
            raise self.refuse(f"names {self.key!r} twice", hint="re-save the file")
        if self.key != "__metadata__" and len(self.tensors) >= MAX_TENSORS:
            raise self.refuse(f"lists more than {MAX_TENSORS:,} tensors")
        self.state = "colon"
        return True

    def _step_colon(self) -> bool:
        if not self._skip_ws():
            return False
        if self.buf[self.pos] != ":":
            raise self.refuse(f"is not valid JSON: expected ':' after {self.key!r}", hint="re-save the file")
        self.pos += 1
        self.state = "value"
        return True

    def _step_value(self) -> bool:
        if not self._skip_ws():
            return False
        self.mark, self.depth, self.in_string, self.tokens = self.pos, 0, False, 0
        self.state = "in_value"
        return True

    def _limits(self) -> tuple[int, int]:
        if self.key == "__metadata__":
            return MAX_METADATA_CHARS, 6 * MAX_METADATA_KEYS
        return MAX_ENTRY_CHARS, MAX_ENTRY_TOKENS

    def _check_size(self, max_chars: int, max_tokens: int) -> None:
        what = "__metadata__" if self.key == "__metadata__" else f"the description of tensor {self.key!r}"
        if self.pos - self.mark > max_chars:
            raise self.refuse(f"{what} is over {max_chars:,} characters")
        if self.tokens > max_tokens:
            if self.key == "__metadata__":
                raise self.refuse(f"__metadata__ has more than {MAX_METADATA_KEYS:,} entries")
            raise self.refuse(f"{what} is not a plain {{dtype, shape, data_offsets}} entry")

    def _step_in_value(self) -> bool:
        max_chars, max_tokens = self._limits()
        buf = self.buf
        while True:
            if self.in_string:
                if not self._string_ends():
                    self._check_size(max_chars, max_tokens)
                    return False
                self.in_string = False
                continue
            m = _STRUCTURE.search(buf, self.pos)
            if m is None:
                self.pos = len(buf)
                self._check_size(max_chars, max_tokens)
                return False
            c, self.pos = m.group(), m.end()
            self.tokens += 1
            if self.tokens > max_tokens:
                self._check_size(max_chars, max_tokens)
            if c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
                if self.depth + 1 > MAX_HEADER_DEPTH:
                    raise self.refuse(f"is nested more than {MAX_HEADER_DEPTH} levels deep")
            elif self.depth > 0 and c in "}]":
                self.depth -= 1
            elif self.depth == 0 and c in ",}":
                self._check_size(max_chars, max_tokens)
                self._take(buf[self.mark : self.pos - 1])
                self.state = "key" if c == "," else "done"
                return True

    def _take(self, text: str) -> None:
        try:
            value = json.loads(text, object_pairs_hook=_reject_duplicates)
        except InvalidFile as exc:
            raise self.refuse(exc.message.removeprefix("safetensors header "), hint="re-save the file") from exc
        except (ValueError, RecursionError) as exc:
            raise self.refuse(f"is not valid JSON at {self.key!r} ({exc})", hint="re-save the file") from exc
        if self.key == "__metadata__":
            self.metadata = value
        else:
            self.tensors[self.key] = value

    def _step_done(self) -> bool:
        if self._skip_ws():
            raise self.refuse("has data after its closing brace", hint="re-save the file")
        return False


def scan_header(fh: BinaryIO, header_len: int, *, name: str) -> tuple[dict[str, object], object]:
    """Read ``header_len`` bytes of header JSON from ``fh`` and return (tensor entries, __metadata__).
    Raises InvalidFile as soon as a bound is crossed; nothing larger than the bounds is held."""
    scanner = _Scanner(name, time.monotonic() + MAX_PARSE_SECONDS)
    decoder = codecs.getincrementaldecoder("utf-8")()
    remaining = header_len
    try:
        while remaining:
            chunk = fh.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                raise scanner.refuse("is truncated", hint="copy or download the file again")
            remaining -= len(chunk)
            scanner.feed(decoder.decode(chunk, final=not remaining))
    except UnicodeDecodeError as exc:
        raise scanner.refuse(
            f"is not UTF-8 text ({exc.reason})", hint="check that the file is a .safetensors LoRA"
        ) from exc
    return scanner.finish()
