"""What every part of the module's panel shares: Slicer's translation functions (with a fallback
for Slicers without them) and the guard that turns a slot's error into a dialog.
"""
from __future__ import annotations

import functools

import slicer

from URSAMLib.errors import URSAMError

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer before 5.4
    def _(text):
        return text

    def translate(context, text):
        return text

__all__ = ["_", "reportErrors", "translate"]


def reportErrors(slot):
    """A widget slot whose errors reach the user: a user mistake as one dialog line, anything else as
    an error dialog with the details (Qt would only print the traceback to the Python console)."""

    @functools.wraps(slot)
    def guarded(self, *args, **kwargs):
        try:
            return slot(self, *args, **kwargs)
        except URSAMError as error:
            self.ui.statusLabel.text = str(error)
            slicer.util.errorDisplay(str(error), windowTitle=_("URSAM"))
        except Exception:
            self.showBug(_("URSAM failed unexpectedly."))

    return guarded
