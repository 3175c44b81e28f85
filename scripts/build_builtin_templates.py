"""Rebuild what ships in Resources/ for one-click segmentation: the built-in templates, the trained
localizer and their catalogue Resources/builtin.json (every file pinned by SHA-256).

    python scripts/build_builtin_templates.py --data ../shared/data --localizer-weights W.pth

* head-and-neck: OpenKBP training patients chosen by scripts/choose_hn_supports.py (never a
  validation patient), the 7 organs at risk; and, in its blanked/ folder, five blanked training
  CTs for blanked queries (HN_BLANKED_SUPPORTS);
* abdomen: the one labelled abdominal CT available (abdomen-ts, TotalSegmentator's example), its
  FLARE22 organs;
* the localizer: MedLAM weights trained by `ursam train-localizer` on every CT that is not a
  validation patient (hn-openkbp/train, abdomen-ts, chest-ct); Resources/PROVENANCE.md gives the command.

Supports are stored compactly: 3 mm isotropic, cropped to the body, int16, with their label maps
(uint8) for atlas use.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib import io  # noqa: E402
from URSAMLib.atomic import torch_save  # noqa: E402
from URSAMLib.localize.medlam.infer import WEIGHTS_FORMAT, WEIGHTS_VERSION, read_payload  # noqa: E402
from URSAMLib.template import build_template, link_blanked, set_rectification  # noqa: E402
from URSAMLib.weights import sha256_of  # noqa: E402

RESOURCES = Path(__file__).resolve().parent.parent / "Resources"
HN_SUPPORTS = (119, 13, 82, 17, 59)
"""OpenKBP training patients; chosen on held-out training patients (scripts/choose_hn_supports.py)."""
HN_BLANKED_SUPPORTS = (120, 104, 92, 196, 36)
"""OpenKBP training patients whose CT is blanked outside the organs' neighbourhood (visible body under
URSAMLib.localize.BLANKED_BELOW), for blanked CTs: the first five such patients in a seeded shuffle
of the training set that hold the same six organs (every organ but the esophagus, which few blanked
scans label). Kept at full field of view (not cropped): the blanking is what registration matches."""
HN_RECTIFICATION = {"RightParotid": "unc-fnc", "LeftParotid": "unc-fnc", "Larynx": "unc-fnc", "Esophagus": "unc-fnc"}
"""The rectification per organ that ``--method per-organ`` (the default) applies with this template:
``python scripts/measure_prior_weights.py --choose docs/results/prior-weights/train`` on OpenKBP training
patients that are not supports (Testing/test_builtin.py checks the two agree); UR-SAM's elsewhere."""
FLARE22_ORGANS = ("liver", "kidney_right", "kidney_left", "spleen", "pancreas", "aorta", "inferior_vena_cava",
                  "adrenal_gland_right", "adrenal_gland_left", "gallbladder", "esophagus", "stomach", "duodenum")
OPENKBP = ("OpenKBP (github.com/ababier/open-kbp, MIT licence; CT and contours from The Cancer Imaging Archive "
           "head-and-neck collections)")
TOTALSEGMENTATOR = ("TotalSegmentator example CT and its model's labels (github.com/wasserth/TotalSegmentator, "
                    "tests/reference_files, Apache-2.0)")
LOCALIZER_FILE = "localizers/medlam-ct.pth"


def ship_weights(source: str, target: Path, note: str) -> None:
    """MedLAM weights (or a training checkpoint) as a weights file with float16 tensors: half the
    size (under 2 MB), and the localized points move by far less than a voxel (checked by
    Testing/test_builtin.py against the float32 network)."""
    payload = read_payload(source)
    model = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
    info = {**payload.get("info", {}), "stored_as": "float16", "training": note}
    if "step" in payload:
        info["steps"] = payload["step"]
    torch_save({"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "config": payload["config"],
                       "info": info, "model": model}, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--localizer-weights", required=True, help="MedLAM weights from 'ursam train-localizer'")
    parser.add_argument("--localizer-note", default="", help="how the weights were trained (for PROVENANCE.md)")
    args = parser.parse_args()
    data = Path(args.data)
    templates = RESOURCES / "templates"
    shutil.rmtree(templates, ignore_errors=True)

    hn = data / "hn-openkbp" / "train"
    build_template([str(hn / f"pt_{n}_ct.nii.gz") for n in HN_SUPPORTS],
                   [str(hn / f"pt_{n}_oar.nii.gz") for n in HN_SUPPORTS], io.read_classes(hn.parent / "classes.json"),
                   templates / "head-and-neck", body_region="head-and-neck", compact=True,
                   sources=[f"OpenKBP training patient pt_{n}" for n in HN_SUPPORTS])
    build_template([str(hn / f"pt_{n}_ct.nii.gz") for n in HN_BLANKED_SUPPORTS],
                   [str(hn / f"pt_{n}_oar.nii.gz") for n in HN_BLANKED_SUPPORTS],
                   io.read_classes(hn.parent / "classes.json"), templates / "head-and-neck" / "blanked",
                   body_region="head-and-neck", sources=[f"OpenKBP training patient pt_{n} (blanked CT)"
                                                         for n in HN_BLANKED_SUPPORTS])
    link_blanked(templates / "head-and-neck", "blanked")
    set_rectification(templates / "head-and-neck", HN_RECTIFICATION)
    abdomen = data / "abdomen-ts"
    classes = io.read_classes(abdomen / "classes.json")
    labels = io.axial_array(io.read_label_map(abdomen / "labels.nii.gz", io.read_ct(abdomen / "ct.nii.gz")))[0]
    present = [o for o in FLARE22_ORGANS if any(n == o and (labels == v).any() for v, n in classes.items())]
    build_template([str(abdomen / "ct.nii.gz")], [str(abdomen / "labels.nii.gz")], classes,
                   templates / "abdomen", organs=present, body_region="abdomen", compact=True,
                   sources=["TotalSegmentator example CT (abdomen-ts/ct.nii.gz, labels.nii.gz)"])

    weights = RESOURCES / LOCALIZER_FILE
    ship_weights(args.localizer_weights, weights, args.localizer_note)

    def organs(region: str) -> list[str]:
        return list(json.loads((templates / region / "template.json").read_text())["organs"])

    catalogue = {
        "_comment": "Built-in templates and the trained localizer; rebuilt by scripts/build_builtin_templates.py. "
                    "Every file is checked against its SHA-256 before use.",
        "templates": {
            "head-and-neck": {"title": "Head and neck organs at risk", "folder": "templates/head-and-neck",
                              "localizer": "auto", "organs": organs("head-and-neck"), "supports": len(HN_SUPPORTS),
                              "provenance": f"{OPENKBP}, training patients "
                                            f"{', '.join(f'pt_{n}' for n in HN_SUPPORTS)}; for blanked CTs "
                                            f"{', '.join(f'pt_{n}' for n in HN_BLANKED_SUPPORTS)}"},
            "abdomen": {"title": "Abdominal organs (FLARE22 set)", "folder": "templates/abdomen",
                        "localizer": "auto", "organs": organs("abdomen"), "supports": 1,
                        "provenance": f"{TOTALSEGMENTATOR}; one support scan, the only labelled abdominal CT "
                                      "available"},
        },
        "localizer_weights": LOCALIZER_FILE,
        "sha256": {str(p.relative_to(RESOURCES)): sha256_of(p) for p in sorted(
            [*templates.rglob("*"), weights]) if p.is_file()},
    }
    (RESOURCES / "builtin.json").write_text(json.dumps(catalogue, indent=1) + "\n")
    sizes = {str(p.relative_to(RESOURCES)): p.stat().st_size for p in RESOURCES.rglob("*") if p.is_file()}
    print(json.dumps(sizes, indent=1))
    print(f"Resources/ holds {sum(sizes.values()) / 1e6:.2f} MB; largest file {max(sizes.values()) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
