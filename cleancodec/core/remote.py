"""Caches on object storage: where a cache location is a URL instead of a folder.

A cache location is either a local folder or a URL:

- ``http://`` / ``https://``: read-only (any static file server); webdataset shards are streamed
  with webdataset's own opener (``curl``), zarr stores and the manifest through fsspec (aiohttp).
- ``s3://bucket/prefix`` (s3fs; ``AWS_ENDPOINT_URL`` or ``~/.aws`` as usual for its endpoint and
  credentials), ``gs://`` (needs ``pip install gcsfs``) and other fsspec protocols: read and write.
- ``pipe:COMMAND``: each file is read from the standard output of ``COMMAND`` with ``{}``
  replaced by the file's name inside the cache (e.g. ``pipe:curl -fsS http://host/cache/{}``),
  through webdataset's opener. webdataset caches only.

Writing a cache to a URL (``cleancodec cache --out s3://…``) builds it in a local staging
folder (:func:`staging_dir`: resumable like any local build) and then uploads its files
(:func:`upload_tree`; both steps: :func:`build_at`), the manifest last, so a reader never sees
a manifest that names a missing shard.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlparse

PIPE = "pipe:"
PIPE_SLOT = "{}"
READ_ONLY_SCHEMES = ("http", "https")
WDS_OPENER_SCHEMES = ("http", "https")
T = TypeVar("T")


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class RemoteError(OSError):
    """A URL could not be read or written (the message names it and says why)."""


def is_url(location: str | os.PathLike) -> bool:
    """Whether a cache location is a URL (``scheme://…`` or ``pipe:…``) rather than a path."""
    text = str(location)
    return text.startswith(PIPE) or "://" in text


def scheme(url: str) -> str:
    return "pipe" if url.startswith(PIPE) else urlparse(url).scheme


def join(base: str | Path, name: str) -> str | Path:
    """``name`` inside the cache at ``base`` (a path stays a Path; a URL stays a string)."""
    if not is_url(base):
        return Path(base) / name
    base = str(base)
    if base.startswith(PIPE):
        if PIPE_SLOT not in base:
            raise RemoteError(f"{base}: a pipe: cache location needs {PIPE_SLOT} where the file "
                              "name goes, e.g. 'pipe:curl -fsS http://host/cache/{}'")
        return base.replace(PIPE_SLOT, name)
    return base.rstrip("/") + "/" + name


def open_read(url: str) -> IO[bytes]:
    """A binary stream of ``url``: webdataset's opener for ``http(s)`` and ``pipe:``, fsspec for
    the other protocols."""
    import webdataset as wds

    try:
        if scheme(url) in WDS_OPENER_SCHEMES or url.startswith(PIPE):
            return wds.gopen(url, "rb")
        import fsspec

        return fsspec.open(url, "rb").open()
    except (OSError, ValueError, ImportError) as exc:
        raise RemoteError(f"{url}: cannot open ({exc})") from exc


def read_bytes(url: str) -> bytes:
    """The whole content of ``url`` (a small file such as the manifest)."""
    if url.startswith(PIPE):
        stream = open_read(url)
        try:
            data = stream.read()
            stream.close()
        except (OSError, ValueError) as exc:  # webdataset raises on the command's exit status
            raise RemoteError(f"{url}: cannot read ({exc})") from exc
        return data
    import fsspec

    try:
        with fsspec.open(url, "rb") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise RemoteError(f"{url}: not found") from exc
    except (OSError, ValueError, ImportError) as exc:
        raise RemoteError(f"{url}: cannot read ({type(exc).__name__}: {exc})") from exc


def zarr_store(location: str | Path) -> Any:
    """What ``zarr.open_group`` should open for a zarr store at a path or URL (read-only)."""
    if not is_url(location):
        return str(location)
    url = str(location)
    if url.startswith(PIPE):
        raise RemoteError(f"{url}: zarr caches cannot be read through pipe:; use an http(s):// "
                          "or s3:// URL")
    import zarr

    try:
        return zarr.storage.FsspecStore.from_url(url, read_only=True)
    except (ImportError, ValueError, OSError) as exc:
        raise RemoteError(f"{url}: cannot open as a zarr store ({exc})") from exc


def check_writable(url: str) -> None:
    """Raise RemoteError when caches cannot be written to ``url``'s protocol."""
    if url.startswith(PIPE) or scheme(url) in READ_ONLY_SCHEMES:
        raise RemoteError(f"{url}: {scheme(url)} locations are read-only; build the cache into a "
                          "folder (and serve it) or into object storage such as s3://bucket/path")
    import fsspec

    try:
        fsspec.filesystem(scheme(url))
    except (ImportError, ValueError) as exc:
        raise RemoteError(f"{url}: no fsspec filesystem for {scheme(url)}:// ({exc}); install "
                          "its package (s3fs ships with cleancodec, gcsfs for gs://)") from exc


def upload(local: Path, url: str) -> None:
    """Copy local file ``local`` to ``url`` (object stores write an object whole: a reader sees
    the old object or the new one)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    try:
        fs.put_file(str(local), path)
    except (OSError, ValueError) as exc:
        raise RemoteError(f"{url}: cannot upload {local} ({type(exc).__name__}: {exc})") from exc


STAGING_ROOT = Path(".cleancodec-staging")


def staging_dir(url: str, root: Path = STAGING_ROOT) -> Path:
    """The local folder a cache bound for ``url`` is built in (one per URL, so an interrupted
    build resumes): ``<root>/<sha256(url)[:16]>``."""
    import hashlib

    return root / hashlib.sha256(url.encode()).hexdigest()[:16]


def cache_files(local_dir: Path, manifest_name: str) -> list[str]:
    """The files of a built cache, relative, without scratch, markers or locks (any name
    starting with a dot) and without the manifest."""
    out = []
    for path in sorted(local_dir.rglob("*")):
        rel = path.relative_to(local_dir)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts) \
                and rel.as_posix() != manifest_name:
            out.append(rel.as_posix())
    return out


def upload_tree(local_dir: Path, url: str, manifest_name: str,
                progress: bool = False) -> int:
    """Upload the cache built in ``local_dir`` to ``url``: every file, then the manifest.
    Returns the number of files uploaded."""
    from tqdm import tqdm

    files = cache_files(local_dir, manifest_name)
    for rel in tqdm(files, desc=f"upload to {url}", unit="file", disable=not progress):
        upload(local_dir / rel, str(join(url, rel)))
    upload(local_dir / manifest_name, str(join(url, manifest_name)))
    return len(files) + 1


def build_at(target: str, build: Callable[[str], T], finalised: Callable[[T], bool],
             manifest_name: str, progress: bool = False,
             say: Callable[[str], None] = _stderr) -> T:
    """Run ``build(folder)`` for a cache bound for ``target`` and return its result.

    A local ``target`` is built in place. A URL is checked for writing first, the cache is built
    in its :func:`staging_dir` (resumable like any local build) and, when ``finalised(result)``
    says this process wrote the final manifest (rank 0), uploaded with :func:`upload_tree`.
    ``say`` reports the staging folder and the upload.
    """
    if not is_url(target):
        return build(target)
    check_writable(target)
    local = staging_dir(target)
    say(f"building in {local}, then uploading to {target}")
    result = build(str(local))
    if finalised(result):
        n = upload_tree(local, target, manifest_name, progress=progress)
        say(f"uploaded {n} files to {target}")
    return result
