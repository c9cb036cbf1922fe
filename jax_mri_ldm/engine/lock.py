"""One writer per run directory, and owner marks on temporary folders.

`WorkdirLock` takes an advisory `fcntl.flock` on `<workdir>/.lock` and writes the holder's
process id and host into it. The kernel drops the lock when the holder dies (even on `kill -9`),
so a lock file whose recorded process is gone is stale: the next run takes it over and says so.
The file is never deleted (deleting it would let two processes lock two different files).

`mark_owner` / `clean_stale_temp_dirs` do the same for hidden temporary output folders
(`.<name>.tmpXXXX` next to an output directory): a folder whose owner died is removed by the
next run; one whose owner is alive, or on another host, is left alone.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import shutil
import socket
import sys
import time

from jax_mri_ldm.errors import UserError

LOCK_FILE = ".lock"
OWNER_FILE = ".owner"


def _holder() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _read_holder(path: str) -> dict[str, object]:
    try:
        with open(path) as f:
            data = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pid_alive(pid: object) -> bool:
    """True if a process with this id exists on this host (or may: permission denied)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def _describe(holder: dict[str, object]) -> str:
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"


class WorkdirLock:
    """Context manager holding `<workdir>/.lock`; a second holder gets a UserError.

    Args:
      workdir: the run directory (created if missing).
      quiet: no message when a stale lock is taken over.
    """

    def __init__(self, workdir: str, quiet: bool = False):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self.quiet = quiet
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        try:
            os.makedirs(self.workdir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(
                f"--workdir={self.workdir} is not writable ({e.strerror}); choose a directory "
                "you can write to."
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(self.path)
            raise UserError(
                f"--workdir={self.workdir} is in use by {_describe(holder)} (lock file "
                f"{self.path}); wait for that run to finish or stop it, or use another --workdir."
            ) from None
        previous = _read_holder(self.path)
        if previous and not self.quiet:
            print(
                f"note: took over the stale lock of {_describe(previous)} in {self.path} "
                "(that run ended without releasing it, e.g. killed).",
                file=sys.stderr,
                flush=True,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty file marks a clean release
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def mark_owner(directory: str) -> None:
    """Writes this process's id and host into `<directory>/.owner`."""
    with open(os.path.join(directory, OWNER_FILE), "w") as f:
        json.dump(_holder(), f)


def owner_dead(directory: str) -> bool:
    """True if `directory`'s owner mark names a process of this host that no longer runs.

    A folder without a mark (an older version, or killed before writing it) counts as dead
    once it is older than a minute.
    """
    holder = _read_holder(os.path.join(directory, OWNER_FILE))
    if not holder:
        try:
            return time.time() - os.path.getmtime(directory) > 60
        except OSError:
            return False
    return holder.get("host") == socket.gethostname() and not pid_alive(holder.get("pid"))


def temp_dir_prefix(out: str) -> str:
    """Name prefix of the temporary folders written next to output directory `out`."""
    return f".{os.path.basename(os.path.abspath(out))}.tmp"


def clean_stale_temp_dirs(out: str) -> list[str]:
    """Removes `.<out>.tmp*` folders next to `out` whose owner died; returns what was removed."""
    out = os.path.abspath(out)
    pattern = os.path.join(os.path.dirname(out), glob.escape(temp_dir_prefix(out)) + "*")
    removed = []
    for path in sorted(glob.glob(pattern)):
        if os.path.isdir(path) and not os.path.islink(path) and owner_dead(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            print(f"note: removed {path}, left by a sampling run that was killed.", file=sys.stderr)
    return removed
