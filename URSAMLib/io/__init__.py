"""Reading CT volumes and label maps, axial slicing, and writing results on the input grid.

Modules, each depending only on those before it: :mod:`.geometry` (the axial array ``[z, y, x]``
and its frame), :mod:`.checks` (whether an image can be a CT to segment), :mod:`.reading`
(headers, volumes, label maps, class maps), :mod:`.writing`. The names below are re-exported so that
``from URSAMLib import io`` then ``io.read_ct(...)`` keeps working.
"""
from .checks import (AIR_THRESHOLD_HU, AIR_VALUE_HU, BODY_MEDIAN_HU, MAX_SPACING_MM, MIN_AIR_FRACTION,
                     MIN_SOFT_TISSUE_FRACTION, MIN_SPACING_MM, SOFT_TISSUE_HU, check_grid, check_volume,
                     intensity_warning)
from .geometry import AxialFrame, axial_array, image_from_axial, same_voxel_centres
from .reading import (SLICE_TOLERANCE, SUPPORTED_FORMATS, ImageHeader, check_slice_geometry, label_map_on_grid,
                      read_classes, read_ct, read_header, read_image, read_label_map)
from .writing import write_image

__all__ = ["AIR_THRESHOLD_HU", "AIR_VALUE_HU", "BODY_MEDIAN_HU", "MAX_SPACING_MM", "MIN_AIR_FRACTION",
           "MIN_SOFT_TISSUE_FRACTION", "MIN_SPACING_MM", "SLICE_TOLERANCE", "SOFT_TISSUE_HU", "SUPPORTED_FORMATS",
           "AxialFrame", "ImageHeader", "axial_array", "check_grid", "check_slice_geometry", "check_volume",
           "image_from_axial", "intensity_warning", "label_map_on_grid", "read_classes", "read_ct", "read_header",
           "read_image", "read_label_map", "same_voxel_centres", "write_image"]
