"""Crash-safe writes of files and whole folders.

A process may die at any instruction (SIGKILL, out of memory, power loss). These helpers
make sure a reader afterwards finds either the complete old version or the complete new
version of a file or folder, never a half-written one, and never nothing at all where
something was before.

Files: :func:`write_bytes`, :func:`write_text` and :func:`save_safetensors` write to a
temporary sibling in the same directory (``.<name>.tmp-<random>``), flush it, ``fsync`` it,
``os.replace`` it over ``path`` (atomic on POSIX and Windows within one file system) and
``fsync`` the directory so the rename itself survives a power loss. A crash leaves ``path``
as it was and at worst a stale ``.<name>.tmp-*`` file, which the next write does not need.

Folders: write every file of the new version into a temporary sibling folder (see
:func:`temp_dir` or the :func:`atomic_dir` context manager), then :func:`replace_dir`

1. ``fsync`` s every file and folder inside it,
2. renames the current ``final_dir`` (if any) to ``<final_dir>.old``,
3. renames the temporary folder to ``final_dir`` -- the commit point,
4. ``fsync`` s the parent directory, and
5. deletes ``<final_dir>.old``.

A crash between steps 2 and 3 leaves only ``<final_dir>.old``; :func:`recover_dir`, which
readers call before opening ``final_dir`` (and :func:`replace_dir` calls first), renames it
back. A crash after step 3 leaves the new ``final_dir`` next to a (possibly partly deleted)
``.old``, which :func:`recover_dir` deletes. So at every instant ``final_dir`` or
``<final_dir>.old`` holds a complete version.

Guarantees assume one writer per path at a time, and that readers recover only while no
writer is between steps 2 and 3 (promptkit writes and reads a folder from one process).
On Windows, directories cannot be fsynced; the renames are still atomic, but durability
across a power loss then depends on the file system.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_dir(root / "model") as tmp:
    ...     _ = write_text(tmp / "config.json", "{}")
    >>> sorted(p.name for p in root.iterdir())
    ['model']
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

OLD_SUFFIX = ".old"


# ------------------------------------------------------------------ fsync
def fsync_file(path: str | Path) -> None:
    """Flush ``path``'s data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush ``path``'s directory entries (creations, renames) to disk; a no-op where unsupported (Windows)."""
    if os.name == "nt":  # pragma: no cover - directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """``fsync`` every file and folder under ``root`` (deepest first), then ``root`` itself."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                fsync_file(path)
        fsync_dir(folder)


# ------------------------------------------------------------------ files
def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")


def _temp_sibling(path: Path) -> Path:
    """A new empty file next to ``path``; mode 0o666 minus the umask, like a plain ``open`` (not mkstemp's 0o600)."""
    while True:
        tmp = _temp_name(path)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def _commit_file(tmp: Path, path: Path) -> None:
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns ``path``.

    ``path``'s directory must exist. Readers see the old content or ``data``, never a mix.
    """
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`write_bytes` for text (UTF-8 by default, no newline translation)."""
    return write_bytes(path, text.encode(encoding))


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """``safetensors.torch.save_file`` made atomic and durable (temp sibling, fsync, rename, fsync directory)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata is not None else None)
        _commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------ folders
def old_sibling(final_dir: str | Path) -> Path:
    """Where :func:`replace_dir` parks the previous version of ``final_dir`` during the swap."""
    final = Path(final_dir)
    return final.with_name(final.name + OLD_SUFFIX)


def temp_dir(final_dir: str | Path) -> Path:
    """A new, empty temporary folder next to ``final_dir`` (same file system, so the swap is a rename).

    Named ``.<name>.tmp-<random>``; creates ``final_dir``'s parent if needed.
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temp_name(final)
        try:
            tmp.mkdir(0o777)  # minus the umask, like a plain mkdir (not mkdtemp's 0o700)
            return tmp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def recover_dir(final_dir: str | Path) -> Path:
    """Finish or undo a :func:`replace_dir` that a crash interrupted; returns ``final_dir``.

    If only ``<final_dir>.old`` exists (crash between parking the old version and moving the
    new one in), it is renamed back to ``final_dir``. If both exist (crash after the commit),
    the leftover ``.old`` is deleted. Otherwise nothing changes. Call it before reading
    ``final_dir`` when no writer is active.
    """
    final = Path(final_dir)
    old = old_sibling(final)
    if not old.exists():
        return final
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(old, final)
        fsync_dir(final.parent)
    return final


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> Path:
    """Swap the complete folder ``tmp_dir`` in as ``final_dir``; returns ``final_dir``.

    ``tmp_dir`` must be a sibling of ``final_dir`` (same parent, e.g. from :func:`temp_dir`);
    ``final_dir``'s previous contents, if any, are replaced as a whole. See the module
    docstring for the steps and what a crash at each one leaves.
    """
    tmp, final = Path(tmp_dir), Path(final_dir)
    if tmp.resolve().parent != final.resolve().parent:
        raise ValueError(f"replace_dir needs tmp_dir {tmp} in the same folder as final_dir {final}")
    fsync_tree(tmp)
    recover_dir(final)
    old = old_sibling(final)
    had_old = final.exists()
    if had_old:
        os.replace(final, old)
    os.replace(tmp, final)  # commit point
    fsync_dir(final.parent)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def atomic_dir(final_dir: str | Path) -> Iterator[Path]:
    """Write a folder as a whole: yields an empty temporary folder, swapped in as ``final_dir`` on success.

    If the ``with`` body raises, the temporary folder is deleted and ``final_dir`` is left as it was.

    Example:
        >>> with atomic_dir(path) as tmp:  # doctest: +SKIP
        ...     save_safetensors(weights, tmp / "model.safetensors")
        ...     write_text(tmp / "config.json", json.dumps(config))
    """
    tmp = temp_dir(final_dir)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final_dir)
