"""Where archive files live: a directory or S3-compatible object storage, both through ``pyarrow.fs`` (so
production needs no boto3). A file is named by its URL (``file:///dir/name`` or ``s3://bucket/prefix/name``);
the manifests in PostgreSQL keep those URLs, and this module opens them with the configured credentials."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from pyarrow import fs as pafs

from config.retention import RetentionConfig

COPY_CHUNK = 8 * 1024 * 1024


class DestinationError(Exception):
    """The archive destination could not be reached or a file in it could not be read or written."""


def archive_url(config: RetentionConfig, name: str) -> str:
    """The URL of a file called ``name`` in the configured destination."""
    return f"{config.scheme}://{config.location.rstrip('/')}/{name}"


def filesystem_for(url: str, config: RetentionConfig) -> tuple[pafs.FileSystem, str]:
    """The file system that holds ``url`` and the path of the file in it."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return pafs.LocalFileSystem(), parts.path
    if parts.scheme == "s3":
        options = {"region": config.s3_region}
        if config.s3_access_key:
            options |= {"access_key": config.s3_access_key, "secret_key": config.s3_secret_key}
        if config.s3_endpoint:
            options |= {"endpoint_override": config.s3_endpoint, "scheme": urlsplit(config.s3_endpoint).scheme}
        return pafs.S3FileSystem(**options), f"{parts.netloc}{parts.path}"
    raise DestinationError(f"{url}: not a file:// or s3:// URL")


def file_upload(local: Path, url: str, config: RetentionConfig) -> None:
    filesystem, path = filesystem_for(url, config)
    try:
        if isinstance(filesystem, pafs.LocalFileSystem):
            filesystem.create_dir(str(Path(path).parent), recursive=True)
        with local.open("rb") as source, filesystem.open_output_stream(path) as target:
            shutil.copyfileobj(source, target, COPY_CHUNK)
    except OSError as error:
        raise DestinationError(f"could not write {url}: {error}") from error


def file_digest(url: str, config: RetentionConfig) -> tuple[str, int]:
    """The sha256 and size of the file as the destination returns it, read in chunks."""
    filesystem, path = filesystem_for(url, config)
    digest, size = hashlib.sha256(), 0
    try:
        with filesystem.open_input_stream(path) as stream:
            while chunk := stream.read(COPY_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as error:
        raise DestinationError(f"could not read {url}: {error}") from error
    return digest.hexdigest(), size


def file_open(url: str, config: RetentionConfig):
    """A random-access handle on the file (Parquet reads its footer first)."""
    filesystem, path = filesystem_for(url, config)
    try:
        return filesystem.open_input_file(path)
    except OSError as error:
        raise DestinationError(f"could not open {url}: {error}") from error
