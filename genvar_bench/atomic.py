"""Atomic writes: every file the suite writes goes to a temporary file of a unique name
in the target's folder, and is renamed over the target only once complete, so no reader
and no interrupted run ever sees half a file, and concurrent writers never share a
temporary."""
from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Calls write(temporary) for a temporary path beside `path` with the same suffix
    (so writers that add or check suffixes, like numpy's and matplotlib's, keep it), then
    renames it to `path`; on any failure the temporary is removed. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from others
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


# write_atomic's temporaries: ".<target name>.<mkstemp's random letters>.tmp<target suffix>".
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]+\.tmp(\.[^.]+)?")


def remove_stale_temporaries(folder: str | os.PathLike[str],
                             older_than_seconds: float = 3600.0) -> list[Path]:
    """Removes the temporaries of write_atomic in `folder` (not below it) last written more
    than `older_than_seconds` ago: a save killed mid-write (SIGKILL, power loss) leaves its
    temporary behind, and nothing else would ever remove it. The age keeps a concurrent
    writer's temporary, which is being written now. Returns the paths removed."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed, now = [], time.time()
    for entry in entries:
        if not _TEMPORARY.fullmatch(entry.name):
            continue
        try:
            status = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(status.st_mode) and now - status.st_mtime > older_than_seconds:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone already (another process cleaned it) or not ours to remove:
            pass        # cleaning up must never stop the caller
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda temporary: temporary.write_text(text))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
