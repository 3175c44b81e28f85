"""DICOM Segmentation and Parametric Map objects, written with highdicom."""
from __future__ import annotations

import numpy as np

from ..uncertainty import MAX_ENTROPY
from ..catalogue import OrganLook
from .coding import algorithm_identification, coded_concept, code_item, contribution, equipment, organ_codes
from .source import NAT, DicomSource


def write_segmentation(source: DicomSource, labels: np.ndarray, organs: list[OrganLook], identity: dict,
                        parameters: dict, tracking: dict[int, str]):
    """A binary DICOM Segmentation: segment ``n`` is ``organs[n - 1]``."""
    import highdicom as hd
    from pydicom.sequence import Sequence

    algorithm = algorithm_identification(parameters)
    descriptions = []
    segment_of = np.zeros(max([int(labels.max(initial=0))] + [o.label for o in organs]) + 1, np.uint16)
    for number, organ in enumerate(organs, start=1):
        segment_of[organ.label] = number
        category, type_, modifier = organ_codes(organ)
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=organ.name[:64],
            segmented_property_category=coded_concept(category),
            segmented_property_type=coded_concept(type_),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=tracking[organ.label], tracking_id=organ.key[:64],
            display_color=hd.color.CIELabColor.from_rgb(*organ.rgb))
        if modifier:  # e.g. Right for the right kidney; highdicom has no argument for it
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = \
                Sequence([code_item(modifier)])
        descriptions.append(description)
    pixels = segment_of[labels]  # label values → segment numbers; labels of no organ → 0
    segmentation = hd.seg.Segmentation(
        source_images=source.datasets, pixel_array=pixels.astype(np.uint8 if len(organs) < 256 else np.uint16),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        instance_number=1, content_label="URSAM", content_description=identity["series_description"][:64],
        omit_empty_frames=bool(pixels.any()), contributing_equipment=[contribution(parameters)], **equipment(),
        **identity)
    return segmentation


def write_parametric_map(source: DicomSource, values: np.ndarray, organs: list[OrganLook], identity: dict,
                          parameters: dict, tracking: dict[int, str]):
    """A float32 Parametric Map of the uncertainty, in nats."""
    import highdicom as hd

    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ENTROPY", lut_explanation="UR-SAM predictive entropy of the prompt ensemble, in nats",
        unit=coded_concept(NAT), value_range=(0.0, MAX_ENTROPY), slope=1.0, intercept=0.0)
    window = hd.content.VOILUTTransformation(window_center=MAX_ENTROPY / 2, window_width=MAX_ENTROPY,
                                             window_explanation="0 to ln 2 nats", voi_lut_function="LINEAR_EXACT")
    parametric = hd.pm.ParametricMap(
        source_images=source.datasets, pixel_array=np.ascontiguousarray(values, dtype=np.float32),
        instance_number=1, contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[window], content_label="URSAM",
        content_description=identity["series_description"][:64], contributing_equipment=[contribution(parameters)],
        **equipment(), **identity)
    parametric.Laterality = ""  # Type 2C, which dciodvfy wants present: unknown (organs of either side)
    return parametric
