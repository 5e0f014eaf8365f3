"""Fetch Debian packages as .deb files (``apt-get download``, no installation) and unpack them.

Downloaded files are cached (``<cache>/<package>_<version>_<arch>.deb``) so a rerun downloads
nothing; a .deb copied into the cache by hand is used as is, so machines without apt work too.
Each download goes to a private temporary folder first and is moved into the cache only when
apt-get has finished (and checked its hash), so an interrupted run never leaves a partial .deb.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cleancodec.core.atomic import publish

APT_TIMEOUT_S = 900  # one package download
DPKG_TIMEOUT_S = 300  # one unpack
STALE_LIST_MARKERS = ("Unable to locate package", "has no installation candidate",
                      "404  Not Found", "404 Not Found", "Couldn't find any package")
STDERR_TAIL_CHARS = 800


class PackageError(RuntimeError):
    """A package could not be fetched or unpacked; the message names it and says what to do."""

    def __init__(self, package: str, reason: str, remedy: str = ""):
        text = f"{package}: {reason}"
        if remedy:
            text += f"\n  -> {remedy}"
        super().__init__(text)
        self.package = package
        self.reason = reason
        self.remedy = remedy


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def cached_deb(package: str, cache_dir: Path) -> Path | None:
    """The cached .deb of ``package`` (the last by name if several versions are there)."""
    found = sorted(p for p in Path(cache_dir).glob(f"{package}_*.deb") if p.is_file())
    return found[-1] if found else None


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= STDERR_TAIL_CHARS else "..." + text[-STDERR_TAIL_CHARS:]


@dataclass
class AptFetcher:
    """Downloads packages into ``cache_dir``; runs ``apt-get update`` at most once per run.

    ``apt_update`` is ``"auto"`` (update once, when a package is not found and we are root) or
    ``"never"`` (only say what to run).
    """

    cache_dir: Path
    apt_update: str = "auto"
    _updated: bool = field(default=False, init=False)

    def fetch(self, package: str) -> Path:
        """Path of the cached .deb of ``package``, downloading it first when needed."""
        self.cache_dir = Path(self.cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        found = cached_deb(package, self.cache_dir)
        if found is not None:
            return found
        self._require_apt(package)
        print(f"fetching {package} (apt-get download) into {self.cache_dir}", flush=True)
        ok, err = self._download(package)
        if not ok and self._looks_stale(err) and self._may_update():
            self._update(package)
            ok, err = self._download(package)
        if not ok:
            raise self._download_error(package, err)
        found = cached_deb(package, self.cache_dir)
        if found is None:
            raise PackageError(package, "apt-get download reported success but left no .deb",
                               f"download it by hand into {self.cache_dir}")
        return found

    def _require_apt(self, package: str) -> None:
        if shutil.which("apt-get") is None:
            raise PackageError(
                package, "apt-get is not available on this machine",
                f"run on Debian/Ubuntu, or copy {package}_*.deb (from packages.debian.org) "
                f"into {self.cache_dir}")

    def _download(self, package: str) -> tuple[bool, str]:
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.cache_dir))
        try:
            proc = subprocess.run(["apt-get", "download", "-q", package], cwd=tmp,
                                  capture_output=True, text=True, timeout=APT_TIMEOUT_S)
            debs = list(tmp.glob("*.deb"))
            if proc.returncode != 0 or not debs:
                return False, proc.stderr + proc.stdout
            for deb in debs:
                publish(deb, self.cache_dir / deb.name)
            return True, ""
        except subprocess.TimeoutExpired:
            return False, f"apt-get download timed out after {APT_TIMEOUT_S} s"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _looks_stale(stderr: str) -> bool:
        return any(marker in stderr for marker in STALE_LIST_MARKERS)

    def _may_update(self) -> bool:
        return self.apt_update == "auto" and not self._updated and is_root()

    def _update(self, package: str) -> None:
        self._updated = True
        print("apt package lists look stale or missing: running `apt-get update` once", flush=True)
        try:
            proc = subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True,
                                  timeout=APT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise PackageError(package, "apt-get update timed out",
                               "check network access to the Debian mirrors") from exc
        if proc.returncode != 0:
            raise PackageError(package, f"apt-get update failed: {_tail(proc.stderr)}",
                               "check network access to the mirrors in /etc/apt/sources.list*")

    def _download_error(self, package: str, err: str) -> PackageError:
        if self._looks_stale(err):
            if is_root() and self.apt_update == "auto":
                remedy = ("the package is not in this machine's apt sources even after "
                          "`apt-get update`: enable Debian 'main' (bookworm or later) in "
                          f"/etc/apt/sources.list, or copy {package}_*.deb into {self.cache_dir}")
            else:
                remedy = (f"run `sudo apt-get update` and retry, or copy {package}_*.deb into "
                          f"{self.cache_dir}")
            return PackageError(package, "apt cannot find the package", remedy)
        return PackageError(package, f"apt-get download failed: {_tail(err)}",
                            "check network access to the Debian mirrors, or copy "
                            f"{package}_*.deb into {self.cache_dir}")


def deb_version(deb: Path, package: str) -> str:
    """The package version recorded in the .deb's control file."""
    proc = _dpkg_deb(["-f", str(deb), "Version"], package, deb)
    return proc.stdout.strip()


def unpack_deb(deb: Path, dest: Path, package: str) -> Path:
    """Unpack ``deb`` into ``dest`` (``dpkg -x``); a corrupt .deb is removed from the cache."""
    dest.mkdir(parents=True, exist_ok=True)
    _dpkg_deb(["-x", str(deb), str(dest)], package, deb)
    return dest


def _dpkg_deb(args: list[str], package: str, deb: Path) -> subprocess.CompletedProcess:
    if shutil.which("dpkg-deb") is None:
        raise PackageError(package, "dpkg-deb is not available on this machine",
                           "install dpkg (`apt-get install dpkg`; every Debian system has it)")
    try:
        proc = subprocess.run(["dpkg-deb", *args], capture_output=True, text=True,
                              timeout=DPKG_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise PackageError(package, f"dpkg-deb {args[0]} timed out on {deb}") from exc
    if proc.returncode != 0:
        deb.unlink(missing_ok=True)
        raise PackageError(package, f"{deb.name} is not a readable .deb "
                                    f"({_tail(proc.stderr)}); removed it from the cache",
                           "rerun to download it again")
    return proc
