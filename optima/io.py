"""Atomic file and directory writes: a killed job never leaves output that looks complete.

Every writer here:
- writes a temporary sibling (``.NAME.HOST-PID.XXXX.tmp``) and renames it into place, so a reader sees the
  old file or the whole new one; a temporary file left by a killed writer (its process is gone) is removed,
  with a warning, by the next write of the same path;
- gives the result the mode a plain ``open()`` would (``0666`` less the umask), not ``mkstemp``'s ``0600``:
  other users of a shared machine read the results as they read any other file;
- turns a failed write into one :class:`~optima.errors.OutputError` naming the file and the reason (the disk
  is full, the folder is not writable), with nothing half-written left behind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from optima.errors import OutputError

# a temporary file or directory of another host is only removed once it is this old (a shared file system:
# its writer's process cannot be checked from here)
FOREIGN_TMP_AGE_S = 3600


class StaleFileWarning(UserWarning):
    """A temporary file left by a killed write was removed (optima.cli prints it as one line)."""


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else set and restored."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory: 0777 less the umask."""
    return 0o777 & ~current_umask()


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """One line naming the file and why it cannot be written, and what to do."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = ("no space left on the device (the disk is full, ENOSPC; or the quota is used up): free some space "
               "or write to another disk, then run the command again")
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = (f"the folder is not writable ({os.strerror(code)}): make it writable or choose another output "
               "folder, then run the command again")
    elif code in (errno.ENOTDIR, errno.EEXIST):
        why = f"a file stands where its folder should be ({os.strerror(code)}): check the output path"
    else:
        why = f"{exc.strerror or exc}"
    return OutputError(f"{path}: cannot write: {why}")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"


def _tmp_pattern(name: str) -> re.Pattern:
    """The temporary siblings of a file called ``name``: this module's (host and pid in the name) and older ones."""
    return re.compile(rf"^\.{re.escape(name)}\.(?:(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp$")


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{_host()}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(entry: Path, match: re.Match) -> bool:
    if match.group("pid") is not None and match.group("host") == _host():
        return not _pid_alive(int(match.group("pid")))
    try:
        return time.time() - entry.lstat().st_mtime > (0 if match.group("pid") is None else FOREIGN_TMP_AGE_S)
    except FileNotFoundError:
        return False


def clean_stale_tmp(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` that killed writes left behind (their process is gone),
    warning once per file; returns what was removed."""
    path = Path(path)
    removed = []
    try:
        entries = list(path.parent.iterdir()) if path.parent.is_dir() else []
    except OSError:
        return removed
    pattern = _tmp_pattern(path.name)
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or not _is_stale(entry, match):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            continue  # not ours to remove (permissions): leave it
        removed.append(entry)
        warnings.warn(f"{entry}: removed a temporary file left by an interrupted write of {path.name}",
                      StaleFileWarning, stacklevel=3)
    return removed


def _raw_write(handle: BinaryIO, data: bytes) -> int | None:
    """Every byte optima writes passes here (tests patch it to simulate a full disk)."""
    return handle.write(data)


class _Guarded(io.RawIOBase):
    """A binary file that remembers the first OSError of a write: torch.save turns it into a RuntimeError
    that no longer says what happened (``unexpected pos``), so the writer re-raises the original."""

    def __init__(self, handle: BinaryIO):
        super().__init__()
        self._handle = handle
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            _raw_write(self._handle, bytes(data) if not isinstance(data, bytes) else data)
        except OSError as exc:
            self.error = self.error or exc
            raise
        return len(data)

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise


def _mkdir(folder: Path, path: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(path, exc) from None


def write_with(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` (not atomically: for files inside an :func:`atomic_directory`) by ``write(handle)``;
    an OSError (also one that torch.save hides) becomes an OutputError naming ``path``; a failed write
    leaves no file."""
    path = Path(path)
    try:
        with open(path, "wb") as raw:
            guarded = _Guarded(raw)
            try:
                write(guarded)
                guarded.flush()
            except OSError:
                raise
            except Exception:
                if guarded.error is not None:
                    raise guarded.error from None
                raise
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise output_error(path, exc) from None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``path`` in place (inside an :func:`atomic_directory`); errors as :func:`write_with`."""
    write_with(path, lambda handle: handle.write(data))


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` atomically by ``write(handle)`` (e.g. ``torch.save(obj, handle)``): a temporary sibling,
    fsync'd, given the umask's mode and renamed into place."""
    path = Path(path)
    _mkdir(path.parent, path)
    clean_stale_tmp(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as raw:
            guarded = _Guarded(raw)
            try:
                write(guarded)
                guarded.flush()
            except OSError:
                raise
            except Exception:
                if guarded.error is not None:
                    raise guarded.error from None
                raise
            os.fsync(raw.fileno())
            os.fchmod(raw.fileno(), file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise output_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write_with(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Deterministic JSON (sorted keys would reorder official formats, so key order is kept)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def check_writable(path: str | os.PathLike) -> None:
    """Raise OutputError now if ``path`` could not be written later (its folder is missing and cannot be made,
    or is not writable): a verb checks its outputs before it computes anything."""
    path = Path(path)
    _mkdir(path.parent, path)
    try:
        fd, probe = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:  # a few KiB: a disk that is already full fails here
            _raw_write(handle, bytes(4096))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` in one rename.

    On any error the temporary directory is removed and ``path`` is left as it was; an OSError (a full disk,
    a read-only folder) becomes an OutputError naming ``path``.
    """
    path = Path(path)
    _mkdir(path.parent, path)
    clean_stale_tmp(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
        os.chmod(tmp, dir_mode())  # mkdtemp makes 0700; the result should look like any other directory
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f"{_tmp_prefix(path)}old.tmp")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OutputError as exc:  # named as the file will be called, not as its temporary folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(str(exc).replace(str(tmp), str(path))) from None
    except FileExistsError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_error(path, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
