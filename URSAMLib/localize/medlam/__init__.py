"""The learned MedLAM-style localizer: :mod:`.net` (network and losses; needs torch at import),
:mod:`.infer` (localizing organs with trained weights), :mod:`.train` (self-supervised training)."""
