"""A bundle as one file for transport (`NAME.leukedge`): a deterministic tar, and its safe unpacking.

`pack` writes manifest.json, manifest.sig and every file the manifest lists, in that
order, with zeroed owners and times, so the same bundle always gives the same bytes
(and the same sha256 to name a transfer by). `safe_unpack` trusts nothing in an
archive: it accepts only plain files with plain relative names, within a byte budget.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path, PurePosixPath

from edge.errors import BadInput, BundleError
from edge.manifest import MANIFEST, load_manifest
from edge.trust import SIGNATURE

SUFFIX = ".leukedge"
MAX_MEMBERS = 64
MAX_NAME = 200  # bytes of a member name (UTF-8); file systems stop at 255 per name


class UnsafeArchive(BundleError):
    """An archive member that could write outside its folder or is not a plain file."""


def member_names(bundle: Path) -> list[str]:
    """What goes into a pack: manifest, signature (if any), then the manifest's files in order."""
    manifest = load_manifest(bundle)  # every file present and matching its sha256
    names = [MANIFEST] + ([SIGNATURE] if (bundle / SIGNATURE).is_file() else [])
    for entry in manifest.files:
        name = check_name(entry.path)
        if name not in names:
            names.append(name)
    return names


def pack(bundle: str | Path, out: str | Path) -> Path:
    """Write the deterministic archive of BUNDLE to OUT (atomically: temp file, then rename)."""
    bundle, out = Path(bundle), Path(out)
    names = member_names(bundle)
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in names:
            path = bundle / name
            if path.is_symlink() or not path.is_file():
                raise BundleError(f"{path}: not a regular file; a pack holds plain files only")
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    tmp.replace(out)
    return out


def check_name(name: str) -> str:
    """A member name that stays inside its folder: relative, no `..`, no empty or odd parts."""
    p = PurePosixPath(name)
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME:
        raise UnsafeArchive(f"member {name[:40]!r}...: name of {size} bytes is too long (at most {MAX_NAME})")
    if not name or "\\" in name or "\0" in name or p.is_absolute() or name.startswith("/"):
        raise UnsafeArchive(f"member {name[:80]!r}: absolute or malformed path")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise UnsafeArchive(f"member {name[:80]!r}: path traversal ('..' or empty part)")
    return str(p)


def safe_unpack(archive: str | Path, dest: str | Path, max_bytes: int) -> list[str]:
    """Unpack ARCHIVE into the new folder DEST, refusing anything but plain files.

    Rejects (UnsafeArchive, DEST removed): absolute paths, `..`, links, devices, FIFOs,
    folders, duplicate names, more than MAX_MEMBERS members, and members whose sizes
    add up to more than `max_bytes`. Members are written by reading them, never with
    tarfile's extract, so nothing in the archive decides where bytes land.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True)
    try:
        return _unpack(archive, dest, max_bytes)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _unpack(archive: Path, dest: Path, max_bytes: int) -> list[str]:
    try:
        tar = tarfile.open(archive, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{archive.name}: not a leukedge pack (tar: {exc})") from None
    names: list[str] = []
    total = 0
    with tar:
        for info in tar:
            name = check_name(info.name)
            if not info.isreg():
                kind = "symlink" if info.issym() else "hard link" if info.islnk() else \
                    "device file" if info.ischr() or info.isblk() else "folder" if info.isdir() else "special file"
                raise UnsafeArchive(f"member {name!r}: {kind}; a pack holds plain files only")
            if "/" in name:
                raise UnsafeArchive(f"member {name!r}: in a subfolder; a pack is flat")
            if name in names:
                raise UnsafeArchive(f"member {name!r}: appears twice")
            if len(names) >= MAX_MEMBERS:
                raise UnsafeArchive(f"more than {MAX_MEMBERS} members")
            total += info.size
            if total > max_bytes:
                raise UnsafeArchive(f"member {name!r}: members add up to over {max_bytes} bytes (update.max_bytes)")
            src = tar.extractfile(info)
            with open(dest / name, "xb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            names.append(name)
    if MANIFEST not in names:
        raise BundleError(f"{archive.name}: no {MANIFEST} inside; not a leukedge pack")
    return names

