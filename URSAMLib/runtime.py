"""CPU inference runtimes: a backbone's networks exported to ONNX and run by OpenVINO or ONNX Runtime.

A backbone runs its networks in PyTorch unless an *engine* is attached to it. An engine holds
two exported graphs:

* the image encoder: ``1 x 3 x S x S`` float32 (the preprocessed model input) →
  ``1 x 256 x 64 x 64`` embedding;
* the prompt encoder + mask decoder: an embedding ``1 x 256 x 64 x 64`` and ``N x 4`` boxes
  ``(x_min, y_min, x_max, y_max)`` in the model's input pixels → ``N x 1 x 256 x 256`` mask logits
  (SAM's single-mask output), N free.

They are exported once (``torch.onnx.export``, opset 17) and kept under the URSAM cache folder
(``$URSAM_CACHE/runtimes``) in a folder named by a key of everything that shapes them: the
weights' SHA-256, the runtime and its version, torch's version and the export settings. A
manifest records each file's SHA-256; a folder whose manifest or files do not match is rebuilt.
When first built, the engine's embedding and masks are checked against PyTorch's on a fixed
phantom slice; an engine that disagrees is not used.

Runtimes are a registry (:data:`RUNTIMES`). ``auto`` takes the first of :data:`AUTO_ORDER`
that is installed, builds and runs the backbone's precision, on the CPU; PyTorch elsewhere. OpenVINO
also runs ``bfloat16`` (compiled with the bf16 precision hint: about 1.7x faster on a CPU with native
bfloat16, masks no longer PyTorch's to 1e-5; docs/performance.md). A runtime that is not
installed, fails to export, compile or load, or fails the check leaves the backbone on PyTorch
with one warning line. The runtime packages are imported only here, inside the functions that
need them, so URSAM works with PyTorch alone.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from .errors import URSAMError
from .sam_decoder import prompt_decoder
from .weights import default_cache_dir, sha256_of

if TYPE_CHECKING:

    from .backbones import SamBackbone

OPSET = 17
EXPORT_FORMAT = 2
"""Bump when the exported graphs change, so that caches built before are rebuilt."""
FILES = ("encoder.onnx", "decoder.onnx")
MANIFEST = "manifest.json"
CHECK_EMBEDDING_ATOL = 1e-3
"""Largest embedding difference from PyTorch an engine may show on the phantom (measured: ~4e-6)."""
CHECK_PROBABILITY_ATOL = 1e-3
"""Largest mask-probability difference from PyTorch on the phantom (measured: ~1e-5)."""


class Engine(Protocol):
    """A backbone's networks in an inference runtime (shapes: the module docstring)."""

    name: str
    precision: str
    """What it computes in: ``float32`` (PyTorch's results to ~1e-5) or ``bfloat16``."""

    def encode(self, images: np.ndarray) -> np.ndarray:
        """``B x 3 x S x S`` float32 model inputs → ``B x 256 x 64 x 64`` embeddings."""

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``1 x 256 x 64 x 64`` embedding, ``N x 4`` boxes (model pixels) → ``N x 1 x 256 x 256`` logits."""


@dataclass
class _OnnxRuntimeEngine:
    encoder: object
    decoder: object
    name: str = "onnxruntime"
    precision: str = "float32"

    def encode(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self.encoder.run(None, {"image": image[None]})[0] for image in images])

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.decoder.run(None, {"embedding": embedding, "boxes": boxes})[0]


@dataclass
class _OpenVinoEngine:
    encoder: object
    decoder: object
    name: str = "openvino"
    precision: str = "float32"

    def encode(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self.encoder(image[None])[0] for image in images])

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.decoder([embedding, boxes])[0]


def _load_onnxruntime(folder: Path, threads: int, precision: str = "float32") -> Engine:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Threads that spin while waiting for work steal the CPU from each other on a shared machine
    # (measured on 2 busy cores: the encoder 25% slower with spinning).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Its memory arena keeps the largest buffers of every box count it has seen: decoding 36, 20, 7, 33,
    # 12 and 36 boxes peaked at 2.2 GB with it, 1.2 GB without, at about the same speed (measured).
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3  # its warnings about unused initialisers are not the user's business

    def session(name):
        return onnxruntime.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])

    return _OnnxRuntimeEngine(session("encoder.onnx"), session("decoder.onnx"))


def _load_openvino(folder: Path, threads: int, precision: str = "float32") -> Engine:
    import openvino

    core = openvino.Core()
    # OpenVINO keeps its compiled blobs beside the graphs (one per precision hint): the next process
    # compiles in a fraction.
    core.set_property({"CACHE_DIR": str(folder / "openvino-blobs")})
    # f32 by default: the masks are then PyTorch's. bf16 only when asked (--precision bfloat16); on a
    # CPU without native bfloat16 OpenVINO computes in f32 anyway.
    config = {"INFERENCE_PRECISION_HINT": {"float32": "f32", "bfloat16": "bf16"}[precision],
              "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    return _OpenVinoEngine(core.compile_model(str(folder / "encoder.onnx"), "CPU", config),
                           core.compile_model(str(folder / "decoder.onnx"), "CPU", config), precision=precision)


@dataclass(frozen=True)
class Runtime:
    """One inference runtime: its package (imported lazily) and how to load an exported model."""

    name: str
    package: str
    load: Callable[[Path, int, str], Engine]
    """``(folder holding FILES, CPU threads, precision) -> Engine``."""
    precisions: tuple[str, ...] = ("float32",)
    """The precisions it runs (see :data:`URSAMLib.backbones.PRECISIONS`)."""

    def version(self) -> str:
        """The installed package's version; ImportError when it is not installed (or blocked)."""
        return str(importlib.import_module(self.package).__version__)


RUNTIMES: dict[str, Runtime] = {
    "openvino": Runtime("openvino", "openvino", _load_openvino, ("float32", "bfloat16")),
    "onnxruntime": Runtime("onnxruntime", "onnxruntime", _load_onnxruntime),
}
AUTO_ORDER = ("openvino", "onnxruntime")
"""``auto``'s preference on a CPU, fastest first (measured: docs/performance.md)."""
CHOICES = ("auto", "torch", *RUNTIMES)


def check_runtime_choice(runtime: str, device: str = "cpu", precision: str = "float32") -> None:
    """Raise :class:`URSAMError` for a runtime name or combination that can never work."""
    if runtime not in CHOICES:
        raise URSAMError(f"Unknown runtime {runtime!r}; choose one of: {', '.join(CHOICES)} (--runtime).")
    if runtime in RUNTIMES and device not in ("cpu", "auto"):
        raise URSAMError(f"The {runtime} runtime runs on the CPU only; choose --device cpu, or --runtime torch "
                         f"(or auto) for {device}.")
    if runtime in RUNTIMES and precision not in RUNTIMES[runtime].precisions:
        raise URSAMError(f"The {runtime} runtime runs in {' or '.join(RUNTIMES[runtime].precisions)} only; "
                         f"choose --precision float32, or --runtime auto (or torch) for {precision}.")


def cpu_computes_in_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), where ``--precision
    bfloat16`` pays off; False where the CPU's flags cannot be read (``/proc/cpuinfo``: Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _warn_stderr(message: str) -> None:
    print(f"ursam: warning: {message}", file=sys.stderr, flush=True)


def attach_runtime(backbone: "SamBackbone", runtime: str = "auto", cache_dir: str | os.PathLike | None = None,
                   warn: Callable[[str], None] = _warn_stderr, threads: int | None = None) -> str:
    """Give ``backbone`` an engine of ``runtime`` (building and caching it if needed) that computes in
    ``backbone.precision``; returns the runtime it runs with (``torch`` when none could be attached).

    runtime: ``auto``, ``torch`` or a key of :data:`RUNTIMES`. ``auto`` = the first of
        :data:`AUTO_ORDER` that runs the precision and works, on a CPU; PyTorch on any other device.
    cache_dir: where the ``runtimes`` folder lives (default: the URSAM cache folder).
    warn: called once, with one line, when a runtime that was asked for (or ``auto``'s choice,
        when installed) cannot be used.
    threads: CPU threads of the engine (default: PyTorch's).
    """
    check_runtime_choice(runtime, backbone.device, backbone.precision)
    backbone.engine = None
    if runtime == "torch" or backbone.device != "cpu":
        return "torch"
    import torch

    threads = threads or torch.get_num_threads()
    candidates = ([name for name in AUTO_ORDER if backbone.precision in RUNTIMES[name].precisions]
                  if runtime == "auto" else (runtime,))
    failures = []
    for name in candidates:
        try:
            version = RUNTIMES[name].version()
        except ImportError:
            failures.append(f"{name} is not installed")
            continue
        except Exception as error:  # a broken installation, e.g. a shared library missing
            failures.append(f"{name} failed to import ({type(error).__name__}: {_first_line(error)})")
            continue
        try:
            backbone.engine = _cached_engine(backbone, RUNTIMES[name], version, cache_dir, threads)
            return name
        except Exception as error:  # export, compile, load or check failed: PyTorch is always right
            failures.append(f"{name} failed ({type(error).__name__}: {_first_line(error)})")
    if runtime != "auto" or any("failed" in f for f in failures):
        warn(f"running the networks with PyTorch: {'; '.join(failures)}.")
    return "torch"


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else "no message"


def cache_key(backbone: "SamBackbone", runtime: str, version: str) -> dict:
    """Everything that shapes an exported model; its hash names the cache folder."""
    import torch

    return {"format": EXPORT_FORMAT, "opset": OPSET, "backbone": backbone.name,
            "weights_sha256": backbone.weights_sha256, "input_size": backbone.preprocessing.input_size,
            "runtime": runtime, "runtime_version": version, "torch": torch.__version__.split("+")[0]}


def cache_folder(backbone: "SamBackbone", runtime: str, version: str,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) this backbone's export for ``runtime`` ``version``."""
    key = cache_key(backbone, runtime, version)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / "runtimes" / f"{backbone.name}-{runtime}-{digest[:20]}"


def _cached_engine(backbone: "SamBackbone", runtime: Runtime, version: str, cache_dir, threads: int) -> Engine:
    folder = cache_folder(backbone, runtime.name, version, cache_dir)
    key = cache_key(backbone, runtime.name, version)
    if not _intact(folder, key):
        _build(backbone, runtime, key, folder, threads)
    return runtime.load(folder, threads, backbone.precision)


def _intact(folder: Path, key: dict) -> bool:
    """Whether ``folder`` holds this key's export, every file matching the manifest's SHA-256."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return manifest["key"] == key and manifest.get("check", {}).get("passed") is True and all(
            sha256_of(folder / name) == manifest["files"][name] for name in FILES)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _build(backbone: "SamBackbone", runtime: Runtime, key: dict, folder: Path, threads: int) -> None:
    """Export into a fresh folder beside ``folder``, check it against PyTorch, then swap it in."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        export_onnx(backbone, staging)
        check = compare_with_torch(backbone, runtime.load(staging, threads, "float32"))  # the export itself
        if not check["passed"]:
            raise RuntimeError(f"its results differ from PyTorch's ({check})")
        shutil.rmtree(staging / "openvino-blobs", ignore_errors=True)  # compiled for the staging path
        manifest = {"key": key, "files": {name: sha256_of(staging / name) for name in FILES}, "check": check}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(folder, ignore_errors=True)  # a stale or corrupt copy
        try:
            os.replace(staging, folder)
        except OSError:  # another process swapped in its own build first: use that one
            if not _intact(folder, key):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_onnx(backbone: "SamBackbone", folder: Path) -> None:
    """Write ``encoder.onnx`` (batch 1) and ``decoder.onnx`` (any number of boxes) into ``folder``."""
    import torch

    model = backbone.model
    size = backbone.preprocessing.input_size
    image = torch.zeros(1, 3, size, size)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints in TinyViT/SAM
        embedding = model.image_encoder(image)
    boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [50.0, 40.0, 200.0, 220.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The legacy (TorchScript) exporter: no onnxscript needed, and it exports TinyViT as is.
        torch.onnx.export(model.image_encoder, (image,), str(folder / "encoder.onnx"), dynamo=False,
                          opset_version=OPSET, input_names=["image"], output_names=["embedding"])
        torch.onnx.export(prompt_decoder(model), (embedding, boxes), str(folder / "decoder.onnx"),
                          dynamo=False, opset_version=OPSET, input_names=["embedding", "boxes"],
                          output_names=["low_res"], dynamic_axes={"boxes": {0: "boxes"}, "low_res": {0: "boxes"}})


def phantom(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed test input: a ``1 x 3 x size x size`` image of soft-tissue-like ellipses in [0, 1], and
    ``3 x 4`` boxes around them (model pixels)."""
    rows, cols = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 0.1, np.float32)
    ellipses = [(0.5, 0.5, 0.35, 0.25, 0.5), (0.45, 0.35, 0.1, 0.08, 0.8), (0.6, 0.65, 0.07, 0.12, 0.3)]
    for cy, cx, ry, rx, value in ellipses:
        image[((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1] = value
    boxes = np.array([[(cx - rx) * size, (cy - ry) * size, (cx + rx) * size, (cy + ry) * size]
                      for cy, cx, ry, rx, _ in ellipses], np.float32)
    return np.repeat(image[None, None], 3, axis=1), boxes


def compare_with_torch(backbone: "SamBackbone", engine: Engine) -> dict:
    """Run ``engine`` and the backbone's PyTorch networks on :func:`phantom`; the largest differences
    of the embedding and of the mask probabilities, and whether both are within tolerance."""
    import torch

    image, boxes = phantom(backbone.preprocessing.input_size)
    model = backbone.model
    with torch.inference_mode():
        reference = model.image_encoder(torch.from_numpy(image).to(backbone.device)).float().cpu()
        low_res = prompt_decoder(model)(reference.to(backbone.device), torch.from_numpy(boxes).to(backbone.device))
        probability = torch.sigmoid(low_res.float().cpu()).numpy()
    embedding = engine.encode(image)
    engine_probability = 1 / (1 + np.exp(-engine.decode(reference.numpy(), boxes).astype(np.float64)))
    check = {"embedding_max_abs": float(np.abs(embedding - reference.numpy()).max()),
             "probability_max_abs": float(np.abs(engine_probability - probability).max())}
    check["passed"] = bool(check["embedding_max_abs"] <= CHECK_EMBEDDING_ATOL
                           and check["probability_max_abs"] <= CHECK_PROBABILITY_ATOL)
    return check
