"""Writing a file all or nothing: a reader, or a crash half-way, never sees half of it.

Every writer here writes to a new hidden file beside the target and then renames it onto the target
in one step (``os.replace``: atomic within a folder); if writing fails, the hidden file is removed and
the target is left as it was. The new file gets the permissions a plain ``open`` would give it (the
process's umask applies).
"""
from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _new_file_beside(path: Path, suffix: str) -> Path:
    while True:  # a clash of 48 random bits is all but impossible; retry if it happens
        candidate = path.with_name(f".ursam-{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return candidate
        except FileExistsError:
            continue


@contextmanager
def replacing(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; renamed onto ``path`` when the block
    ends, removed if it raises. ``suffix``: the temporary file's (for writers that choose the format
    by it); default ``path``'s own (``.nii.gz`` for ``x.nii.gz``)."""
    path = Path(path)
    temporary = _new_file_beside(path, "".join(path.suffixes) if suffix is None else suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data, **options) -> None:
    """Write ``json.dumps(data, **options)`` and a newline to ``path`` atomically."""
    write_text(path, json.dumps(data, **options) + "\n")


def torch_save(payload: dict, path: str | os.PathLike) -> None:
    """``torch.save(payload)`` to ``path`` atomically, creating its folder."""
    import torch

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, ".pth") as temporary:
        torch.save(payload, temporary)
