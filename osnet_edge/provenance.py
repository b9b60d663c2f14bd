"""Where a bundle's inputs came from (the checkpoint, the calibration folder), recorded so that the manifest
travels: a bundle copied to a camera must not carry the host's absolute paths (they say nothing there and
expose the host's layout).

A record keeps what identifies the input anywhere, its file or folder ``source`` name (plus the checkpoint's
sha256), and ``relative_path``: the path from the bundle folder to it, for host-side tools that need the input
again. The torch reference (runtimes/torch.py) and the profiler's bundle reuse find the input with
:func:`locate`: the relative path first, then an absolute ``source`` (bundles written before this, format
1 and early 2), then a file of that name beside the bundle or in the shared data's checkpoint folder, each
checked against the sha256 when the record has one. Standard library only (device side may read records).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping


def relative_to_bundle(path: str | os.PathLike, bundle_dir: str | os.PathLike) -> str | None:
    """``path`` relative to the bundle folder (POSIX separators), or None where there is none (another drive)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(bundle_dir).resolve())).as_posix()
    except ValueError:
        return None


def portable_record(path: str | os.PathLike, bundle_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """``{"source": name, **fields, "relative_path": from the bundle}`` for a checkpoint or a folder."""
    return {"source": Path(path).name, **fields, "relative_path": relative_to_bundle(path, bundle_dir)}


def portable_calibration(info: Mapping[str, Any] | None, bundle_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A CalibrationSet's manifest record with its folder as a portable source: ``parent/name`` (e.g.
    ``market1501/bounding_box_train``, any note such as "(market1501 train)" kept) and the relative path,
    instead of the absolute folder. Sources that are not a folder ("files", "samples") stay as they are."""
    if info is None:
        return None
    source = str(info.get("source", ""))
    path, sep, note = source.partition(" (")
    if not Path(path).is_absolute():
        return dict(info)
    folder = Path(path)
    return {**info, "source": f"{folder.parent.name}/{folder.name}{sep}{note}",
            "relative_path": relative_to_bundle(folder, bundle_dir)}


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def candidates(record: Mapping[str, Any], bundle_dir: str | os.PathLike,
               search_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Where the recorded input may be, in the order :func:`locate` tries them."""
    bundle_dir = Path(bundle_dir)
    source = str(record.get("source") or "")
    out = []
    if record.get("relative_path"):
        out.append(bundle_dir / record["relative_path"])
    path_part = Path(source.partition(" (")[0]) if source else None
    if path_part is not None and path_part.is_absolute():  # written before records were portable
        out.append(path_part)
    if path_part is not None and path_part.name:
        out += [bundle_dir / path_part.name, bundle_dir.parent / path_part.name]
        out += [Path(d) / path_part.name for d in search_dirs]
    return out


def locate(record: Mapping[str, Any] | None, bundle_dir: str | os.PathLike,
           search_dirs: Iterable[str | os.PathLike] = (), folder: bool = False) -> Path | None:
    """The recorded checkpoint (or, with ``folder``, directory) on this machine, or None when it is not here.
    A file must match the record's sha256 when it has one."""
    if not record:
        return None
    for path in candidates(record, bundle_dir, search_dirs):
        if folder and path.is_dir():
            return path.resolve()
        if not folder and path.is_file() and (not record.get("sha256") or _sha256(path) == record["sha256"]):
            return path.resolve()
    return None


def checkpoint_dirs() -> list[Path]:
    """The shared data's torchreid checkpoints, where present (../shared/data or $OSNET_EDGE_DATA)."""
    from .data import shared_data_dir

    root = shared_data_dir()
    return [root / "weights" / "torchreid"] if root is not None else []


__all__ = ["relative_to_bundle", "portable_record", "portable_calibration", "candidates", "locate",
           "checkpoint_dirs"]
