"""URSAM: uncertainty-rectified Segment Anything for automatic organ segmentation in CT.

The backend of the URSAM 3D Slicer extension, usable on its own. One module per concept of
the UR-SAM paper (Zhang et al.): ``io`` (volumes, axial slicing), ``backbones`` (SAM models),
``prompts`` (boxes and their augmentation), ``uncertainty`` (ensemble and entropy),
``rectify`` (uncertainty rectification), ``pipeline`` (all of it over a CT), ``metrics``
and ``cli``. Importing this package does not import torch.
"""
__version__ = "0.1.0"
