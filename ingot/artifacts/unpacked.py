"""Where compiled programs are unpacked while they load, and the cleanup of what a killed process left there.

AOTInductor's package loader unpacks every .pt2 into a fresh directory under $TMPDIR and removes it only when
the loaded program is destroyed, which a server ending on a signal never does (~2 GB per language-model server
left behind). Once loaded, a program no longer needs its files (the library stays mapped after it is unlinked,
and its constants are in memory), so each package is unpacked into a directory named for this process and
removed right after it loads; a process killed mid-load leaves one, which ``ingot gc`` removes once that process
is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "ingot-unpacked-"  # then the pid of the process unpacking, a dash, and a random suffix
_ONE_AT_A_TIME = threading.Lock()  # TMPDIR is the process's: two loads on two threads must not interleave


@contextmanager
def unpack_directory() -> Iterator[Path]:
    """A fresh directory for one package to unpack into while it loads (TMPDIR points there), removed after."""
    with _ONE_AT_A_TIME:
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        saved = os.environ.get("TMPDIR")
        # The loader unpacks under $TMPDIR. Changed for the whole process for the moment a package loads (at
        # startup); Python's own temp files keep the directory tempfile chose before (mkdtemp above fixed it).
        os.environ["TMPDIR"] = str(directory)
        try:
            yield directory
        finally:
            if saved is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = saved
            shutil.rmtree(directory, ignore_errors=True)


def remove_orphaned_unpacked(root: Path | None = None) -> list[Path]:
    """Remove the unpack directories of processes that are gone; returns what was removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for directory in sorted(root.glob(f"{PREFIX}*")):
        pid = directory.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)) and directory.is_dir() and not directory.is_symlink():
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
