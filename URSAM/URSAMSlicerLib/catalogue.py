"""The organ catalogue (``Resources/organs.json``) for the Slicer module.

It lives in :mod:`URSAMLib.catalogue`, because the command line's DICOM export names its
segments from it too; this module keeps the Slicer module's ``catalogue`` name for it.
"""
from URSAMLib.catalogue import (ANATOMIC_CONTEXT, Code, Organ, OrganLook, OrganSet, match_name,  # noqa: F401
                                match_terminology, normalise, organ_sets, organs, terminology_entry)
