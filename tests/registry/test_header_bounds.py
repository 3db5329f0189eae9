"""The streaming header scanner: the same answer as json.loads on every real header, wherever the
chunks split it, and a bounded refusal (memory and time) on every hostile one."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.domain.errors import InvalidFile
from registry.files import header_scan
from registry.files.header_scan import MAX_METADATA_KEYS, MAX_TENSORS, scan_header


def scan(blob: bytes) -> tuple[dict, object]:
    return scan_header(io.BytesIO(blob), len(blob), name="x")


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F16", "BF16", "F32"]),
        "shape": st.lists(st.integers(0, 10**6), max_size=4),
        "data_offsets": st.lists(st.integers(0, 10**9), min_size=2, max_size=2),
    }
)
headers = st.tuples(st.dictionaries(texts.filter(lambda k: k != "__metadata__"), entries, max_size=6),
                    st.none() | st.dictionaries(texts, texts, max_size=6))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(header=headers, chunk=st.integers(1, 64), indent=st.sampled_from([None, 1]), ascii_=st.booleans())
def test_scanner_agrees_with_json_loads_wherever_chunks_split(header, chunk, indent, ascii_) -> None:
    tensors, metadata = header
    doc = dict(tensors) | ({"__metadata__": metadata} if metadata is not None else {})
    blob = json.dumps(doc, indent=indent, ensure_ascii=ascii_).encode() + b"   "
    old = header_scan.CHUNK_BYTES
    header_scan.CHUNK_BYTES = chunk
    try:
        got_tensors, got_metadata = scan(blob)
    finally:
        header_scan.CHUNK_BYTES = old
    assert got_tensors == tensors and got_metadata == metadata


HOSTILE = {
    "deep list": (b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested more than 3"),
    "deep object in metadata": (b'{"__metadata__":{"a":{"b":{}}}}', "nested more than 3"),
    "too many tensors": (
        b"{" + b",".join(b'"t%d":{}' % i for i in range(MAX_TENSORS + 1)) + b"}",
        "more than 32,768 tensors",
    ),
    "too many metadata keys": (
        b'{"__metadata__":{' + b",".join(b'"k%d":""' % i for i in range(MAX_METADATA_KEYS * 2)) + b"}}",
        "more than 4,096 entries",
    ),
    "commas in metadata": (b'{"__metadata__":{' + b"," * 100_000 + b"}}", "more than 4,096 entries"),
    "huge metadata": (b'{"__metadata__":{"a":"' + b"x" * (17 * 2**20) + b'"}}', "over 16,777,216 characters"),
    "huge tensor entry": (b'{"a":{"dtype":"' + b"x" * 10_000 + b'"}}', "over 4,096 characters"),
    "busy tensor entry": (b'{"a":{"shape":[' + b",".join([b"1"] * 200) + b"]}}", "not a plain"),
    "long name": (b'{"' + b"n" * 5000 + b'":{}}', "name over 1,024"),
    "huge number": (b'{"a":' + b"9" * 100_000 + b"}", "over 4,096 characters"),
    "escapes": (b'{"' + b"\\\\" * 5000 + b'":{}}', "name over 1,024"),
    "duplicate metadata": (b'{"__metadata__":{},"__metadata__":{}}', "twice"),
    "duplicate inner key": (b'{"a":{"dtype":"F16","dtype":"F32"}}', "twice"),
    "trailing data": (b'{"a":{}} {"b":{}}', "after its closing brace"),
    "incomplete": (b'{"a":{"dtype":"F16"', "incomplete"),
    "unclosed string": (b'{"a', "incomplete"),
    "bad value": (b'{"a":{nope}}', "not valid JSON"),
    "missing colon": (b'{"a" {}}', "expected ':'"),
    "bad key": (b"{a:{}}", "expected a name"),
    "not an object": (b"[]", "not a JSON object"),
    "raw newline escape": (b'{"a\\\n":{}}', "invalid name"),
    "invalid utf-8": (b'{"a\xc3":{}}', "not UTF-8"),
    "overlong utf-8": (b'{"\xc0\xaf":{}}', "not UTF-8"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_header_is_refused_with_its_problem(case: str) -> None:
    blob, message = HOSTILE[case]
    with pytest.raises(InvalidFile, match=message):
        scan(blob)


def test_memory_stays_flat_on_a_hostile_header() -> None:
    """A 24 MB header of tiny entries is refused after at most MAX_TENSORS entries, holding a few MB:
    json.loads on it would hold over a gigabyte."""
    entry = b'"%07d":{},'
    blob = b"{" + b"".join(entry % i for i in range(2_000_000)) + b'"end":{}}'
    tracemalloc.start()
    try:
        with pytest.raises(InvalidFile, match="tensors"):
            scan(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_time_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(header_scan, "MAX_PARSE_SECONDS", -1.0)
    with pytest.raises(InvalidFile, match="took over"):
        scan(b'{"a":{}}')
