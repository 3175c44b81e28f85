"""Peak memory of `ursam segment` per CT voxel: the basis of URSAMLib.memory.BYTES_PER_VOXEL.

Runs the real job (reading, prompts, pipeline, rectification, writing) on real CT with a
stand-in backbone (no network weights: the model's own memory does not grow with the CT),
each case in a fresh process, and reports the peak resident memory above the process's
memory just before the job, divided by the CT's voxel count.

    python benchmarks/memory.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NINE = "spleen,kidney_right,kidney_left,gallbladder,liver,stomach,pancreas,aorta,inferior_vena_cava"


def _child(ct: str, labels: str, classes: str, organs: str) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "URSAM"))
    import SimpleITK as sitk

    from URSAMLib import backbones, job
    from URSAMSlicerLib.testing import BrightInBox

    class StandIn(BrightInBox):
        weights, precision = "stand-in", "float32"

    backbones.load_backbone = lambda *args, **kwargs: StandIn()
    size = sitk.ImageFileReader()
    voxels = None
    if Path(ct).is_file():
        size.SetFileName(ct)
        size.ReadImageInformation()
        voxels = int(__import__("numpy").prod(size.GetSize()))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with tempfile.TemporaryDirectory() as folder:
        summary = job.run_segment_job(job.SegmentJob(ct=ct, output=str(Path(folder) / "out"),
                                                     prompt_labels=labels, classes=classes,
                                                     organs=organs or None))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    voxels = voxels or int(__import__("numpy").prod(summary["input"]["size_ijk"]))
    print(json.dumps({"ct": ct, "voxels": voxels, "organs": ",".join(summary["organs"]), "peak_bytes": after - before,
                      "bytes_per_voxel": round((after - before) / voxels, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    abdomen = Path(args.data) / "abdomen-ts"
    cases = [(abdomen / "ct.nii.gz", abdomen / "labels.nii.gz"),
             (abdomen / "dicom", abdomen / "dicom_labels.nii.gz")]
    for organs in ("aorta", NINE, ""):  # one small organ (the volume's own cost), the demo's nine, all
        for ct, labels in cases:
            subprocess.run([sys.executable, __file__, "--child", str(ct), str(labels), str(abdomen / "classes.json"),
                            organs], check=True)


if __name__ == "__main__":
    main()
