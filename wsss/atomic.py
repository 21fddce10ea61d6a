"""Atomic file writes: a temporary file beside the target, fsync, rename; a full disk names the folder."""

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def full_disk_error(err: OSError, folder: Path, name: str) -> OSError:
    """An OSError that names the full ``folder`` (and the file being written) in place of a bare ENOSPC."""
    return OSError(
        err.errno,
        f"no space left in {folder} (while writing {name}): free space there or choose another folder",
    )


def disk_full_cause(err: BaseException | None) -> OSError | None:
    """The full-disk OSError in ``err``'s chain (writers such as ``torch.save`` wrap it), else None."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in FULL_DISK:
            return err
        err = err.__cause__ or err.__context__
    return None


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], durable: bool = True) -> None:
    """Write ``path`` through ``write(file)`` so that readers see the old file or the whole new one.

    The bytes go to a hidden temporary file in the target's own folder (a rename within one file system is
    atomic; a temporary file elsewhere would be copied into the final name), are flushed (and fsynced with
    ``durable``), then renamed over ``path``. The file gets the mode ``open`` gives (0o666 less the umask).
    On any error the temporary file is removed; a full disk raises an OSError naming the folder.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
            write(file)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_folder(path.parent)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        full = disk_full_cause(err)
        if full is not None:
            raise full_disk_error(full, path.parent, path.name) from None
        raise
