"""Choose an artifact store by URL scheme: a folder path or ``file://``, or ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from registry.blobs.base import ArtifactStore
from registry.blobs.local import LocalStore
from registry.domain.errors import InvalidInput

__all__ = ["open_store"]


def open_store(url: str, *, verified_dir: Path | None = None, **s3_options: Any) -> ArtifactStore:
    """The store for a URL: ``file:///path`` (or a bare path; ``verified_dir`` is where the host's
    processes share their hashes of its files) or ``s3://bucket/prefix`` (which alone takes
    ``s3_options``: endpoint_url, region, presign)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme else url).expanduser(), verified_dir=verified_dir)
    if parsed.scheme == "s3":
        try:
            from registry.blobs.s3 import S3Store
        except ImportError:
            raise InvalidInput("S3 storage needs boto3", hint="pip install 'wanlora[s3]'") from None
        return S3Store(url, **s3_options)
    raise InvalidInput(f"unsupported storage URL {url!r}", hint="use file:///path or s3://bucket/prefix")
