"""Cost of prompt augmentation: `ursam segment` with --num-aug 1 vs 3 on the same input.

Target (issue 2): --num-aug 3 takes at most 2.5x the time of --num-aug 1 on CPU. Runs the
real CLI in-process on abdomen-ts/ct_small (9 organs, per-slice prompts) and writes JSON.

    python benchmarks/num_aug.py [--data ../shared/data] [-o benchmarks/results/num_aug.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from URSAMLib.cli import main as ursam  # noqa: E402

ORGANS = "spleen,kidney_right,kidney_left,gallbladder,liver,stomach,pancreas,aorta,inferior_vena_cava"


def run(data: Path, num_aug: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        start = time.perf_counter()
        code = ursam(["segment", str(data / "ct_small.nii.gz"), "-o", str(out), "--quiet",
                      "--prompt-labels", str(data / "labels_small.nii.gz"), "--classes", str(data / "classes.json"),
                      "--organs", ORGANS, "--num-aug", str(num_aug)])
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"ursam segment failed with status {code}")
        summary = json.loads((out / "summary.json").read_text())
    return {"num_aug": num_aug, "wall_s": round(seconds, 2), **summary["timings_s"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("-o", "--output", default=str(Path(__file__).with_name("results") / "num_aug.json"))
    args = parser.parse_args()
    data = Path(args.data) / "abdomen-ts"
    import torch

    runs = [run(data, n) for n in (1, 3)]
    report = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
              "runs": runs, "ratio_3_to_1": round(runs[1]["wall_s"] / runs[0]["wall_s"], 2), "target": 2.5}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
