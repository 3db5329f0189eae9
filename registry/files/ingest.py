"""Inspect a LoRA file without torch and stream it into the store in canonical form.

``inspect_lora`` reads only the header (and the few alpha scalars) and refuses anything that is not a
well-formed LoRA of the WAN DiT. ``ingest_lora`` then streams the tensors, in canonical-name order, from
the source into the store, checking every float for NaN/Inf on the way and computing three digests at
once: the source file's sha256, the stored file's sha256 and the payload hash (the sha256 of the
canonical file without metadata, so the same weights give the same payload hash whatever format or
metadata they came in). Memory stays at a few chunks whatever the file size.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from registry.blobs.base import CHUNK, ArtifactSink, BackgroundHash
from registry.domain.errors import InvalidFile
from registry.domain.keys import KeyFormat, LoraPart, family, is_block_module, parse_key
from registry.domain.wan import BaseModel
from registry.files.arrival import Arrival, Placer
from registry.files.modules import AlphaReader, ModuleInfo, Row, adapter_config, module_info, read_scalar
from registry.files.safetensors_io import Header, TensorInfo, build_header, has_nonfinite, read_header, refuse_pickle
from registry.files.source_digests import EarlyHash, SourceDigests, early_digests, file_identity, hash_source

__all__ = ["IngestedFile", "Inspection", "ModuleInfo", "ingest_lora", "inspect_lora"]

Progress = Callable[[int, int], None]
CANONICAL_FORMAT = "canonical-v2"  # v2: LoKr, LoHa and diff kept; non-block LoRAs carry no alpha


@dataclass(frozen=True)
class Inspection:
    path: Path
    source_format: KeyFormat
    header: Header
    modules: list[ModuleInfo]
    identity: tuple[int, ...] = ()  # the file as it was inspected: device, inode, size, mtime, ctime

    @property
    def metadata(self) -> dict[str, str]:
        return self.header.metadata

    @property
    def rank(self) -> int:
        """The most common rank (0 for a file of whole differences only)."""
        ranked = [m.rank for m in self.modules if m.rank] or [0]
        return Counter(ranked).most_common(1)[0][0]

    @property
    def alpha(self) -> float:
        ranked = [m.alpha for m in self.modules if m.rank] or [0.0]
        return Counter(ranked).most_common(1)[0][0]

    @property
    def dtype(self) -> str:
        return Counter(m.dtype for m in self.modules).most_common(1)[0][0]

    @property
    def target_modules(self) -> list[str]:
        """Module kinds targeted (``self_attn.q``, ``ffn.0``, ``head.head``), without block indices."""
        kinds = {m.module.split(".", 2)[2] if m.module.startswith("blocks.") else m.module for m in self.modules}
        return sorted(kinds)

    @property
    def algorithms(self) -> list[str]:
        """The kinds of adapter in the file: lora, lokr, loha, diff."""
        return sorted(
            {m.algorithm for m in self.modules} | {"diff" for m in self.modules if LoraPart.DIFF_B in m.parts}
        )

    def canonical_layout(self) -> list[Row]:
        """The stored tensors, sorted by name."""
        return sorted((row for m in self.modules for row in m.rows()), key=lambda r: r.name)


@dataclass(frozen=True)
class IngestedFile:
    sha256: str
    payload_sha256: str
    size: int
    source_sha256: str
    source_autov3: str  # sha256 of the source's data section
    source_format: str
    rank: int
    alpha: float
    dtype: str
    target_modules: list[str]
    module_count: int
    metadata: dict[str, str] = field(default_factory=dict)
    created: bool = True  # False when the store already held these exact bytes

    @classmethod
    def of(
        cls, ins: Inspection, sha256: str, payload: str, size: int, source: str, autov3: str, *, created: bool
    ) -> IngestedFile:
        """The stored file's digests and size, with what ``ins`` says of the file."""
        return cls(sha256, payload, size, source, autov3, ins.source_format.value, ins.rank, ins.alpha, ins.dtype,
                   ins.target_modules, len(ins.modules), ins.metadata, created)  # fmt: skip


def inspect_lora(path: Path, base: BaseModel | None = None, *, arrival: Arrival | None = None) -> Inspection:
    """Read and check a LoRA file's structure; nothing is written. Raises InvalidFile naming the problem.

    With ``arrival`` (a file still being written), each read waits for its bytes, and a block module's
    alpha that has not arrived yet is read when ingest writes it; such an inspection has no identity."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise InvalidFile(f"{path} does not exist or is not a regular file")
    with open(path, "rb") as fh:
        identity = file_identity(os.fstat(fh.fileno())) if arrival is None else ()
        size = identity[2] if arrival is None else arrival.size
        if arrival is not None:
            arrival.wait_for_header(fh)
        refuse_pickle(path, fh.read(9))
        fh.seek(0)
        header = read_header(fh, size, name=name)
        if not header.tensors:
            raise InvalidFile(f"{name} holds no tensors", hint="the training run saved an empty file")
        groups: dict[str, dict[LoraPart, TensorInfo]] = {}
        formats: set[KeyFormat] = set()
        for t in header.tensors:
            fmt, module, part = parse_key(t.name)
            formats.add(fmt)
            slot = groups.setdefault(module, {})
            if part in slot:
                raise InvalidFile(
                    f"{name}: module {module} has two {part.value} tensors ({slot[part].name!r}, {t.name!r})"
                )
            slot[part] = t
        if len({family(f) for f in formats}) > 1:
            raise InvalidFile(
                f"{name} mixes key formats ({', '.join(sorted(f.value for f in formats))})",
                hint="re-export the LoRA from a single trainer",
            )
        config = adapter_config(header.metadata, name)
        read_alpha = _alpha_reader(name, fh.fileno(), header, arrival)
        modules = [module_info(name, read_alpha, module, parts, base, config) for module, parts in groups.items()]
    modules.sort(key=lambda m: m.module)
    fmt = KeyFormat.COMFYUI if KeyFormat.COMFYUI in formats else formats.pop()
    if fmt is KeyFormat.DIFFUSION_PIPE and all(
        m.alpha_from_file for m in modules if m.rank and m.module.startswith("blocks.")
    ):
        fmt = KeyFormat.CANONICAL  # diffusion_model.… keys with alphas: already what we store
    return Inspection(path=path, source_format=fmt, header=header, modules=modules, identity=identity)


def _alpha_reader(name: str, fd: int, header: Header, arrival: Arrival | None) -> AlphaReader:
    def read(module: str, t: TensorInfo) -> float | None:
        if arrival is not None:
            end = header.data_offset + t.end
            if not arrival.has(end) and is_block_module(module):
                return None  # not there yet: ingest reads it when it writes its row
            arrival.wait(end)
        return read_scalar(fd, header, t, name)

    return read


def nonfinite_tensors(ins: Inspection) -> list[str]:
    """Names of the tensors that hold NaN or infinite values (read in chunks; memory stays flat)."""
    bad = []
    with open(ins.path, "rb") as fh:
        for t in ins.header.tensors:
            fh.seek(ins.header.data_offset + t.start)
            remaining = t.nbytes
            while remaining:
                chunk = fh.read(min(CHUNK, remaining))
                if not chunk:
                    break
                if has_nonfinite(t.dtype, chunk):
                    bad.append(t.name)
                    break
                remaining -= len(chunk)
    return bad


def _unchanged(ins: Inspection, fd: int) -> None:
    """Refuse a source that changed since it was inspected: what was read would be a mix of two files."""
    if not ins.identity:
        return
    try:
        now = [file_identity(os.fstat(fd)), file_identity(os.stat(ins.path))]
    except OSError:
        now = []
    if any(identity != ins.identity for identity in now) or not now:
        raise InvalidFile(
            f"{ins.path.name} changed while it was being registered, so what was read would be a mix of two "
            "files; nothing was stored",
            hint="register it again once whatever writes it has finished",
        )


def _source_digests(
    ins: Inspection,
    known: SourceDigests | None,
    early: EarlyHash | None,
    stop: threading.Event,
    arrival: Arrival | None = None,
) -> tuple[str, str]:
    """The source's sha256 and AutoV3: as its upload or an early read worked them out, when that was
    this very file (same identity), else read and hashed now; for a file still arriving, as its writer
    worked them out once it was whole."""
    if arrival is not None:
        whole = arrival.digests(stop)
        return whole.sha256, whole.autov3
    if early is not None:
        while not early.done.wait(0.05):
            if stop.is_set():  # ingest failed: its error is not held up by the early read
                return "", ""
        known = early.digests
    if known is not None and ins.identity and known.identity == ins.identity:
        return known.sha256, known.autov3
    return hash_source(ins.path, stop)


def _row_bytes(ins: Inspection, fd: int, row: Row, arrival: Arrival | None) -> Iterator[bytes]:
    """The stored bytes of one tensor, a chunk at a time: copied, or converted to float32 and scaled."""
    if row.src is None:
        value = row.value
        if row.alpha_src is not None:  # an alpha that had not arrived when the file was inspected
            if arrival is not None:
                arrival.wait(ins.header.data_offset + row.alpha_src.end)
            value = read_scalar(fd, ins.header, row.alpha_src, ins.path.name)
        yield struct.pack("<f", value)
        return
    src = row.src
    offset = ins.header.data_offset + src.start
    remaining = src.nbytes
    while remaining:
        if arrival is not None:
            arrival.wait(offset + min(CHUNK, remaining))
        chunk = os.pread(fd, min(CHUNK, remaining), offset)
        if not chunk:
            raise InvalidFile(f"{ins.path.name} shrank while it was being read")
        _refuse_nonfinite(ins, src, chunk)
        offset += len(chunk)
        remaining -= len(chunk)
        yield chunk if row.scale is None else scaled_f32(chunk, src.dtype, row.scale, src.name)


def _refuse_nonfinite(ins: Inspection, src: TensorInfo, chunk: bytes | memoryview) -> None:
    if has_nonfinite(src.dtype, chunk):
        raise InvalidFile(
            f"{ins.path.name}: tensor {src.name!r} holds NaN or infinite values",
            hint="the training run diverged; register an earlier checkpoint or retrain "
            "with a lower learning rate and gradient clipping",
        )


class _Steps:
    """The read side of a tensor stored as it is: its bytes a chunk at a time, read into one of two
    buffers that take turns (no allocation per chunk). A chunk's buffer is reused two chunks later, by
    when every hasher given it has finished with it (each waits for its last chunk before the next)."""

    def __init__(self, ins: Inspection, fd: int, arrival: Arrival | None, placer: Placer | None) -> None:
        self.ins, self.fd, self.arrival, self.placer = ins, fd, arrival, placer
        self._buffers = (memoryview(bytearray(CHUNK)), memoryview(bytearray(CHUNK)))
        self._turn = 0

    def of(self, src: TensorInfo) -> Iterator[tuple[int, memoryview]]:
        offset = self.ins.header.data_offset + src.start
        end = offset + src.nbytes
        while offset < end:
            view = self._buffers[self._turn][: min(CHUNK, end - offset)]
            self._turn ^= 1
            if self.arrival is not None:
                self.arrival.wait(offset + len(view))
            if self.placer is not None:  # a file still arriving: some of it is only in the stored file
                self.placer.read(view, offset)
            elif os.preadv(self.fd, [view], offset) != len(view):
                raise InvalidFile(f"{self.ins.path.name} shrank while it was being read")
            _refuse_nonfinite(self.ins, src, view)
            yield offset, view
            offset += len(view)


def scaled_f32(chunk: bytes, dtype: str, scale: float, name: str) -> bytes:
    """``chunk`` (whole elements of ``dtype``) as little-endian float32, times ``scale``."""
    import numpy as np  # here, not at the top: only a rescaled tensor needs it

    if dtype == "BF16":
        values = (np.frombuffer(chunk, "<u2").astype(np.uint32) << 16).view("<f4")
    elif dtype in ("F16", "F32", "F64"):
        values = np.frombuffer(chunk, {"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype]).astype("<f4")
    else:
        raise InvalidFile(
            f"tensor {name!r} is {dtype}, which wanlora cannot rescale; its alpha has to be folded into it",
            hint="save the LoRA in bf16, fp16 or fp32",
        )
    return (values.astype(np.float64) * scale).astype("<f4").tobytes()


def ingest_lora(
    path: Path,
    store: ArtifactSink,
    *,
    base: BaseModel | None = None,
    progress: Progress | None = None,
    inspection: Inspection | None = None,
    source_digests: SourceDigests | None = None,
    arrival: Arrival | None = None,
) -> IngestedFile:
    """Stream a LoRA file into ``store`` as a canonical ComfyUI-loadable safetensors file. With
    ``source_digests`` of this very file (same identity), its own sha256 and AutoV3 are not worked out
    again. With ``arrival``, the file is still being written: each read waits for its bytes, and
    nothing is committed before the writer has finished and checked it (the caller inspects the whole
    file again for the rank, alpha and metadata it reports)."""
    ins = inspection or inspect_lora(path, base, arrival=arrival)
    early = early_digests(ins.path) if source_digests is None and arrival is None else None
    layout = ins.canonical_layout()
    metadata = dict(ins.metadata)
    metadata["wanlora.format"] = CANONICAL_FORMAT
    metadata["wanlora.source_format"] = ins.source_format.value
    metadata["wanlora.algorithms"] = ",".join(ins.algorithms)
    tensors = [(r.name, r.dtype, r.shape) for r in layout]
    file_header = build_header(tensors, metadata)
    payload_header = build_header(tensors, {})
    total = sum(r.src.nbytes for r in layout if r.src is not None)
    done = 0
    stop = threading.Event()
    writer = store.writer()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="wanlora-ingest") as pool:
        source_digest = pool.submit(_source_digests, ins, source_digests, early, stop, arrival)
        payload = BackgroundHash(pool)
        try:
            payload.update(payload_header)
            writer.write(file_header)
            fd = os.open(ins.path, os.O_RDONLY)
            # A tensor stored as it is (most of a file) is read once, into reused buffers, and copied
            # by the kernel where the store can take that (the local one); rescaled ones are written.
            copy_from = getattr(writer, "copy_from", None)
            settle = getattr(writer, "settle", lambda: None)
            # A file still arriving: each such tensor gets to its place as soon as it is there, whatever
            # the order, while the hashes below follow the stored order.
            placer = Placer.of(arrival, fd, writer, ins.header, layout, len(file_header))
            steps = _Steps(ins, fd, arrival, placer)
            try:
                for row in layout:
                    if copy_from is not None and row.copied and row.src is not None:
                        for offset, view in steps.of(row.src):
                            payload.update(view, copy=False)
                            if placer is None:
                                copy_from(fd, offset, view)
                            else:
                                writer.skip(view)  # type: ignore[attr-defined]
                            done += len(view)
                            if progress:
                                progress(done, total)
                        continue
                    for chunk in _row_bytes(ins, fd, row, arrival):
                        payload.update(chunk)
                        writer.write(chunk)
                        if row.src is not None:
                            done += len(chunk) if row.scale is None else len(chunk) * row.src.nbytes // row.nbytes
                            if progress:
                                progress(done, total)
                if placer is not None:
                    placer.join()
                settle()  # the store's copies read the source: they end before it is checked
                payload_sha = payload.hexdigest()
                source_sha, source_autov3 = source_digest.result()
                _unchanged(ins, fd)  # after every read of it: the digests are of one file, or nothing is kept
            finally:
                if placer is not None:
                    placer.stop()
                with contextlib.suppress(Exception):  # a copy in flight after a failure: its error is moot
                    settle()
                os.close(fd)
            sha, size, created = writer.commit()
        except BaseException:
            stop.set()
            payload.wait()
            writer.abort()
            raise
    return IngestedFile.of(ins, sha, payload_sha, size, source_sha, source_autov3, created=created)


class _Discard:
    """An ArtifactSink that keeps nothing: only the digest of what would have been stored."""

    def writer(self) -> _Discard:
        self._hash, self._size = hashlib.sha256(), 0
        return self

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._size += len(data)

    def commit(self) -> tuple[str, int, bool]:
        return self._hash.hexdigest(), self._size, False

    def abort(self) -> None:
        pass


@dataclass(frozen=True)
class FileDigests:
    """What a stray copy of a LoRA can be matched by (``wanlora which``)."""

    sha256: str  # the whole file (Civitai's AutoV2 is its first 10 hex digits)
    autov3: str | None  # its data section, header left out (None: not safetensors)
    payload_sha256: str | None  # its weights in wanlora's canonical form (None: not a LoRA wanlora reads)
    problem: str | None = None  # why there is no payload hash


def file_digests(path: Path) -> FileDigests:
    """Every digest of a file that `which` can match, reading it once or twice; nothing is stored."""
    path = Path(path)
    if not path.is_file():
        raise InvalidFile(f"{path} does not exist or is not a regular file")
    try:
        ingested = ingest_lora(path, _Discard())
    except InvalidFile as exc:
        data_offset = _data_offset(path)
        whole, data = hash_source(path)
        return FileDigests(whole, data if data_offset else None, None, exc.message)
    return FileDigests(ingested.source_sha256, ingested.source_autov3, ingested.payload_sha256)


def _data_offset(path: Path) -> int | None:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            return read_header(fh, size, name=path.name).data_offset
    except (InvalidFile, OSError):
        return None
