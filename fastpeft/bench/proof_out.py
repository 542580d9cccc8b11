"""Keeps the proof's out folder within what a lent GPU machine brings back: at most MAX_FILES
files, none in a folder (the device tool returns at most 8 files, no deeper than two folders).
Whatever does not fit goes into one archive, `extra.tgz`, so nothing is lost."""

import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

MAX_FILES = 8
ARCHIVE = "extra.tgz"


def files_under(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() or p.is_symlink())


def bundle(out: Path, keep: Sequence[str]) -> list[str]:
    """Archive what does not fit into `out / ARCHIVE` (the names in `keep` stay, in that order of
    priority, as do other top-level files while there is room); returns the archived paths."""
    files = files_under(out)
    top = [p for p in files if p.parent == out and p.name != ARCHIVE]
    if len(files) <= MAX_FILES and len(top) == len(files) - (out / ARCHIVE in files):
        return []
    rank = {name: i for i, name in enumerate(keep)}
    top.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    stay = set(top[: MAX_FILES - 1])  # one place for the archive
    moved = [p for p in files if p not in stay]
    partial = out / (ARCHIVE + ".part")
    with tarfile.open(partial, "w:gz") as tar:
        for path in moved:
            tar.add(path, arcname=str(path.relative_to(out)))
    for path in moved:
        path.unlink()
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
        shutil.rmtree(folder, ignore_errors=True)  # emptied above; deepest first
    partial.replace(out / ARCHIVE)
    return [str(p.relative_to(out)) for p in moved]
