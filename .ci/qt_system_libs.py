"""Check (and, as root with apt-get, install) the system libraries PySide6's Qt needs on Linux.

The Slicer-module tests load URSAM.ui with PySide6 (offscreen). PySide6's wheels bundle Qt but
link a few system libraries — OpenGL/EGL, xkbcommon, fontconfig, freetype, GLib, D-Bus, X11 —
that a bare container lacks. slicer-core (MRML) needs none of them.

    python .ci/qt_system_libs.py            # check; install with apt-get when running as root
    python .ci/qt_system_libs.py --dry-run  # only say what would be installed

Without root the missing packages are printed and the Qt tests skip (in CI, URSAM_REQUIRE_DATA=1
turns that skip into a failure). Exit status 1 only when an installation was attempted and failed.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

# library → Debian/Ubuntu packages that provide it, first one that exists wins
# (Ubuntu 24.04 renamed some for the 64-bit time_t transition).
PACKAGES = {
    "libGL.so.1": ["libgl1"],
    "libEGL.so.1": ["libegl1"],
    "libOpenGL.so.0": ["libopengl0"],
    "libGLX.so.0": ["libglx0"],
    "libxkbcommon.so.0": ["libxkbcommon0"],
    "libxkbcommon-x11.so.0": ["libxkbcommon-x11-0"],
    "libfontconfig.so.1": ["libfontconfig1"],
    "libfreetype.so.6": ["libfreetype6"],
    "libglib-2.0.so.0": ["libglib2.0-0t64", "libglib2.0-0"],
    "libgthread-2.0.so.0": ["libglib2.0-0t64", "libglib2.0-0"],
    "libdbus-1.so.3": ["libdbus-1-3"],
    "libX11.so.6": ["libx11-6"],
    "libX11-xcb.so.1": ["libx11-xcb1"],
    "libxcb.so.1": ["libxcb1"],
    "libgssapi_krb5.so.2": ["libgssapi-krb5-2"],
}


def qt_binaries() -> list[Path]:
    """The PySide6 libraries the tests load: QtCore/Gui/Widgets/UiTools, their bindings and the
    offscreen platform plugin."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or spec.origin is None:
        return []
    root = Path(spec.origin).parent
    modules = ["Core", "Gui", "Widgets", "UiTools"]
    found = [root / "Qt" / "lib" / f"libQt6{name}.so.6" for name in modules + ["DBus", "OpenGL"]]
    found += [root / f"Qt{name}.abi3.so" for name in modules]
    found.append(root / "Qt" / "plugins" / "platforms" / "libqoffscreen.so")
    return [path for path in found if path.exists()]


def missing_libraries() -> list[str]:
    missing = set()
    for binary in qt_binaries():
        output = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for line in output.splitlines():
            if "=> not found" in line:
                name = line.split("=>")[0].strip()
                if not name.startswith(("libQt6", "libpyside", "libshiboken")):  # found beside them at run time
                    missing.add(name)
    return sorted(missing)


def available(package: str) -> bool:
    policy = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True).stdout
    return "Candidate:" in policy and "Candidate: (none)" not in policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux") or shutil.which("ldd") is None:
        return 0  # macOS and Windows wheels carry what they need
    missing = missing_libraries()
    if not missing:
        return 0
    unknown = [name for name in missing if name not in PACKAGES]
    candidates = {name: PACKAGES[name] for name in missing if name in PACKAGES}
    print(f"Qt (PySide6) lacks system libraries: {', '.join(missing)}")
    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if not can_install or args.dry_run:
        names = sorted({options[-1] for options in candidates.values()})
        print("Install them with: sudo apt-get install " + " ".join(names) +
              (f" (and whatever provides {', '.join(unknown)})" if unknown else "") +
              ". Without them the Qt (.ui) tests are skipped.")
        return 0
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    packages = sorted({next((p for p in options if available(p)), options[-1]) for options in candidates.values()})
    print("Installing " + " ".join(packages))
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    still = [name for name in missing_libraries() if name in PACKAGES]
    if still:
        print(f"Still missing after installation: {', '.join(still)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
