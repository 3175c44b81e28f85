"""Model weights (and other fetched files): integrity checks, safe loading, verified downloads.

A ``.pth`` file is a pickle, and unpickling arbitrary data can run code. URSAM therefore
checks size and SHA-256 before use whenever it knows what the file must be (the catalogue's
official files, or a SHA-256 the user pinned), and always loads with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
The file is read once: the bytes that were hashed are the bytes that are loaded, so the file
cannot change between the check and the use.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import URSAMError


@dataclass(frozen=True)
class KnownFile:
    """What is known about a file URSAM checks or fetches: weights or sample data.

    Any field but the name may be unknown (None)."""

    filename: str
    sha256: str | None = None
    size: int | None = None
    url: str | None = None


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | os.PathLike, expected: KnownFile) -> str:
    """Raise :class:`URSAMError` unless ``path`` has the expected size and SHA-256; returns its SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise URSAMError(f"{path} does not exist; check the path.")
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:  # before hashing: a cut-short file is quick to tell
        _check(path, size, "", expected)
    digest = sha256_of(path)
    _check(path, size, digest, expected)
    return digest


def load_state_dict(path: str | os.PathLike, expected: KnownFile | None = None) -> dict:
    """Verify (when ``expected`` is given) and load a checkpoint's state dict on the CPU.

    Accepts a bare state dict or one wrapped as ``{"model": ...}`` / ``{"state_dict": ...}``.
    """
    return load_verified_state_dict(path, [expected] if expected else [])[0]


def load_verified_state_dict(path: str | os.PathLike, expected: list[KnownFile]) -> tuple[dict, str]:
    """Read a checkpoint once, check it against every entry of ``expected`` (size and SHA-256),
    and load those same bytes with ``weights_only=True``. Returns the state dict and the file's
    SHA-256."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise URSAMError(f"Checkpoint {path} does not exist; check the checkpoint path (--checkpoint).") from None
    except IsADirectoryError:
        raise URSAMError(f"Checkpoint {path} is a folder; choose the weights file in it (--checkpoint).") from None
    digest = hashlib.sha256(data).hexdigest()
    for known in expected:
        _check(path, len(data), digest, known)
    import torch  # only now: a file that fails its check is refused without loading torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors have many types; all mean "not a safe checkpoint"
        raise URSAMError(f"Could not load {path} as model weights ({type(error).__name__}): it is not a "
                         "PyTorch checkpoint, is damaged (e.g. cut short), or contains code objects.") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise URSAMError(f"{path} holds no model weights (no state dict found).")
    return state, digest


def _check(path: Path, size: int, digest: str, expected: KnownFile) -> None:
    if expected.size is not None and size != expected.size:
        raise URSAMError(f"{path} has {size:,} bytes, expected {expected.size:,} for "
                         f"{expected.filename}: it is truncated or another file. Download it again.")
    if expected.sha256 is not None and digest != expected.sha256:
        which = f" for {expected.filename}" if expected.filename != path.name else ""
        raise URSAMError(f"{path} fails its SHA-256 check{which}: the file is corrupt, was altered, or is "
                         "another file. Get it again from its source.")


def parse_sha256(text: str) -> str:
    """A SHA-256 as 64 hexadecimal digits, lower case (as ``sha256sum`` prints it)."""
    value = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise URSAMError(f"{text!r} is not a SHA-256: give the 64 hexadecimal digits that sha256sum prints.")
    return value


def default_cache_dir() -> Path:
    """Where downloaded checkpoints live: ``$URSAM_CACHE`` or ``~/.cache/ursam``."""
    return Path(os.environ.get("URSAM_CACHE", Path.home() / ".cache" / "ursam"))


def download(expected: KnownFile, cache_dir: str | os.PathLike | None = None,
             retries: int = 3, timeout: float = 60.0) -> Path:
    """Return a verified local copy of ``expected``, downloading it if needed.

    An existing verified file is returned without touching the network; one that fails its
    check is set aside as ``<name>.rejected`` (kept for inspection, never used) and fetched
    again. A partial download (``<name>.part``) is resumed with an HTTP range request; failures
    are retried ``retries`` times; the file is renamed into place only after its SHA-256 matched.
    """
    if not expected.url:
        raise URSAMError(f"{expected.filename} has no download address; get it from its project and pass "
                         "its path (--checkpoint for weights).")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / expected.filename
    if target.exists():
        try:
            verify(target, expected)
            return target
        except URSAMError:
            os.replace(target, target.with_name(target.name + ".rejected"))
    partial = target.with_name(target.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            if not (expected.size and partial.exists() and partial.stat().st_size >= expected.size):
                _fetch(expected.url, partial, timeout, expected.size)
            break
        except URSAMError:
            partial.unlink(missing_ok=True)
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as error:
            last_error = error  # e.g. a connection dropped mid-file: the next try resumes the .part file
            time.sleep(min(2**attempt, 10) * 0.1)
    else:
        raise URSAMError(f"Could not download {expected.filename} from {expected.url} ({last_error}); "
                         "check the internet connection and try again (partial downloads resume).")
    try:
        verify(partial, expected)
    except URSAMError:
        partial.unlink(missing_ok=True)  # a bad file must not be resumed into a worse one
        raise
    os.replace(partial, target)
    return target


def _fetch(url: str, partial: Path, timeout: float, limit: int | None = None) -> None:
    """Append the rest of ``url`` to ``partial`` (resuming from its current size); stop with an
    error once the file would exceed ``limit`` bytes (a server sending too much fills no disk)."""
    start = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = start and response.status == 206
        written = start if resumed else 0
        with open(partial, "ab" if resumed else "wb") as handle:
            while block := response.read(1 << 20):
                written += len(block)
                if limit is not None and written > limit:
                    raise URSAMError(f"{url} sends more than the {limit:,} bytes expected; it is not the file "
                                     "URSAM expects. Nothing was installed.")
                handle.write(block)
        # http.client returns a short read, not an error, when the server hangs up early: catch it
        # here so the next try resumes the .part file instead of verifying (and deleting) it.
        if response.length or (limit is not None and written < limit):
            raise ConnectionError(f"the connection closed after {written:,} bytes")
