"""S3 artifact store (boto3): ``s3://bucket/prefix``, any S3-compatible endpoint.

Objects live at ``<prefix>/sha256/ab/<sha256>``. A write streams into a local spool file while it is
hashed (the key is the digest, which is known only at the end), then goes up with boto3's managed
transfer, which switches to multipart upload above ``multipart_threshold``; an object that already
exists is not uploaded again. Reads stream and are verified like the local store's.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from registry.blobs.base import RecentlyVerified, VerifyingReader, check_digest
from registry.domain.errors import InvalidInput, NotFound, WanloraError

__all__ = ["S3Store"]

MB = 1024 * 1024


class _S3Writer:
    def __init__(self, store: S3Store) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(prefix="wanlora-s3-")
        self._spool = Path(name)
        self._fh = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._fh.write(data)
        self._size += len(data)

    def commit(self) -> tuple[str, int, bool]:
        self._fh.close()
        digest = self._hash.hexdigest()
        try:
            created = not self._store.exists(digest)
            if created:
                self._store.upload(self._spool, digest)
        finally:
            self._spool.unlink(missing_ok=True)
            self._done = True
        return digest, self._size, created

    def abort(self) -> None:
        if not self._done:
            self._fh.close()
            self._spool.unlink(missing_ok=True)
            self._done = True


class _Body:
    """botocore's StreamingBody with the ``read``/``close`` that VerifyingReader expects."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, n: int = -1) -> bytes:
        return self._body.read(n if n >= 0 else None)

    def close(self) -> None:
        self._body.close()


class S3Store:
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        presign: bool = False,
        presign_seconds: int = 3600,
        multipart_threshold: int = 64 * MB,
        client: Any | None = None,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InvalidInput(f"invalid S3 URL {url!r}", hint="use s3://bucket/prefix")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.presign = presign
        self.presign_seconds = presign_seconds
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self._verified = RecentlyVerified()
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=max(8 * MB, multipart_threshold // 8)
        )

    def key(self, sha256: str) -> str:
        check_digest(sha256)
        name = f"sha256/{sha256[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _translate(self, exc: ClientError | BotoCoreError, sha256: str) -> WanloraError:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        if code in ("404", "NoSuchKey", "NotFound"):
            return NotFound(f"artifact {sha256[:12]} is not in {self.url}")
        return WanloraError(
            f"S3 request for artifact {sha256[:12]} failed: {exc}", hint="check the bucket and credentials"
        )

    def writer(self) -> _S3Writer:
        return _S3Writer(self)

    def upload(self, path: Path, sha256: str) -> None:
        self.client.upload_file(str(path), self.bucket, self.key(sha256), Config=self._transfer)

    def open(self, sha256: str) -> VerifyingReader:
        key = self.key(sha256)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, sha256) from exc
        return VerifyingReader(_Body(obj["Body"]), sha256, int(obj["ContentLength"]))  # type: ignore[arg-type]

    def exists(self, sha256: str) -> bool:
        try:
            self.size(sha256)
        except NotFound:
            return False
        return True

    def size(self, sha256: str) -> int:
        key = self.key(sha256)
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, sha256) from exc

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    def listing(self) -> Iterator[tuple[str, int, float]]:
        prefix = f"{self.prefix}/sha256/" if self.prefix else "sha256/"
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if len(name) == 64:
                    yield name, int(obj["Size"]), obj["LastModified"].timestamp()

    def sweep(self) -> int:
        """Writers spool to this machine's temporary folder and upload whole objects: nothing is left
        in the bucket by a killed writer, but an interrupted multipart upload is aborted here."""
        removed = 0
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket):
            for upload in page.get("Uploads", []):
                if upload["Key"].startswith(self.prefix) and time.time() - upload["Initiated"].timestamp() > 3600:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        return removed

    def quarantine(self, sha256: str) -> None:
        key = self.key(sha256)
        aside = f"{self.prefix}/quarantine/{sha256}.{int(time.time())}" if self.prefix else f"quarantine/{sha256}"
        try:
            self.client.copy_object(Bucket=self.bucket, Key=aside, CopySource={"Bucket": self.bucket, "Key": key})
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, sha256) from exc

    def check(self, sha256: str) -> None:
        key = self.key(sha256)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, sha256) from exc
        self._verified.check(self, sha256, (head.get("ETag"), head.get("LastModified"), head.get("ContentLength")))

    def download_url(self, sha256: str) -> str | None:
        """A presigned GET URL when presigning is enabled, else None (download through the API)."""
        if not self.presign:
            return None
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.key(sha256)}, ExpiresIn=self.presign_seconds
            )
        )
