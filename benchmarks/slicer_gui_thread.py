"""Time the Slicer module spends on Slicer's GUI thread (the panel freezes meanwhile) when a run
starts, on a real CT: reading and checking the scene (prepare) and handing the job to the worker
(start), for prompts drawn as segments and for a template built from a labelled CT in the scene.

Runs with slicer-core (MRML without the application) and the test suite's stand-in GUI layer;
the worker is cancelled at once, so no model runs. Usage, from the repository root:

    PYTHONPATH=$PWD python benchmarks/slicer_gui_thread.py [CT] [--repeat 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "Testing"), str(ROOT / "URSAM")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct", nargs="?", default=str(ROOT / ".." / "shared" / "data" / "chest-ct" / "ct.nii.gz"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np
    import pytest
    import SimpleITK as sitk

    import fake_slicer_gui as fake
    from slicer_scene import load_volume, release_logics

    monkeypatch = pytest.MonkeyPatch()
    slicer, _ = fake.install(monkeypatch)
    module = fake.import_module(monkeypatch)
    from URSAMSlicerLib import mrml  # noqa: F401  (after the fake layer: it imports slicer)

    scene = slicer.mrmlScene
    ct = load_volume(scene, Path(args.ct), "CT")
    image = sitk.ReadImage(args.ct)
    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)  # a box "organ" in the middle
    z, y, x = labels.shape
    labels[z // 3: z // 2, y // 3: y // 2, x // 3: x // 2] = 1
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    with tempfile.TemporaryDirectory() as folder:
        sitk.WriteImage(label_image, str(Path(folder) / "labels.nrrd"))
        label_node = load_volume(scene, Path(folder) / "labels.nrrd", "labels", labelmap=True)
    prompts = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Prompts")
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, prompts)
    scene.RemoveNode(label_node)
    prompts.GetSegmentation().GetNthSegment(0).SetName("Liver")
    shape = labels.shape

    logic = module.URSAMLogic()
    logic.python = sys.executable
    logic.workerArguments = ("--backbone-factory", "URSAMSlicerLib.testing:slow_loader")
    requests = {
        "segments": module.URSAMRequest(ct, promptSource="segmentation", promptNode=prompts),
        "scene template": module.URSAMRequest(ct, promptSource="sceneTemplate", supports=[(ct, prompts)]),
    }
    print(f"CT {args.ct}: {shape[2]} x {shape[1]} x {shape[0]} voxels; median of {args.repeat} runs, seconds")
    for name, request in requests.items():
        prepare, start = [], []
        for _ in range(args.repeat):
            began = time.perf_counter()
            prepared = logic.prepare(request)
            prepare.append(time.perf_counter() - began)
            began = time.perf_counter()
            job = logic.start(prepared)
            start.append(time.perf_counter() - began)
            job.cancel()
        print(f"{name:15s} prepare {statistics.median(prepare):6.2f}   start {statistics.median(start):6.2f}   "
              f"GUI thread {statistics.median(prepare) + statistics.median(start):6.2f}")
    monkeypatch.undo()
    release_logics()
    return 0


if __name__ == "__main__":
    sys.exit(main())
