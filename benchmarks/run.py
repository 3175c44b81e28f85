"""URSAM's speed and memory benchmark: one command, results in benchmarks/results/latest.{json,md}.

    python benchmarks/run.py [--data ../shared/data] [--device cpu|cuda] [--quick]

Measures, on this machine (recorded: CPU model, cores, torch threads, load average, GPU):

1. end to end: `ursam segment` on abdomen-ts/ct.nii.gz, its 12 FLARE22 organs prompted from its
   labels (per-slice boxes), n = 1, 3, 7 — wall time and peak RSS, each run in a child process
   with the default runtime (auto) and no embedding cache;
1b. runtimes side by side: the n = 3 run with each of --runtime torch, openvino, onnxruntime
   (time, DSC, speed-up and DSC difference against PyTorch), and the first-use export of each;
1c. the cached re-run: n = 3 into an empty embedding cache, then n = 1 and ratio 0.02 from it;
1d. the slider re-run: one process keeps the model and the embeddings (as the Slicer module's
   worker does) and segments again with another n, ratio and rectification setting;
2. the encoder's throughput (slices/s) on a subset of chest-ct's 512x512 slices;
3. the decoder's throughput (boxes/s) at 512x512 and at abdomen-ts' 122x101 slices, with and
   without upsampling the logits to the slice;
4. the naive loop a paper script writes (embed the slice again for every organ and every
   augmented box, decode that one box), timed on a sample of (slice, organ, box) items from the
   n = 3 run and extrapolated to all of them, against our shared-embedding run;
5. peak RSS of `ursam segment` on a synthetic 512x512x300 CT (chest-ct's slices repeated), three
   box "organs" of 10 slices each, to check the 4 GB memory bound;
6. localization cost: the built-in head-and-neck template's registration and atlas localizers on
   one OpenKBP CT, in CPU seconds (the atlas may cost at most twice the registration).

--device cuda runs every part on the GPU (results in benchmarks/results/latest-cuda.*) and adds the
GPU's peak allocated memory; CPU results stay in latest.*.
--quick shrinks every part (n = 1 and 3 on 2 organs, fewer samples) to check that the script works.
Each part is saved when it finishes (benchmarks/results/.latest.partial.json); --resume keeps them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLARE12 = ("spleen,kidney_right,kidney_left,gallbladder,liver,stomach,pancreas,adrenal_gland_right,"
           "adrenal_gland_left,aorta,inferior_vena_cava,duodenum")  # FLARE22's 13 less the esophagus (absent)
TARGETS = {"n3_over_n1": 1.5, "n3_over_n1_gpu": 1.5, "naive_over_ours": 3.0, "abdomen_12_organs_s": 45.0,
           "speedup_over_torch": 3.0, "dsc_difference": 0.002, "rerun_fraction": 0.30,
           "peak_rss_300_slices_gb": 2.5, "gpu_memory_gb": 8.0, "head_and_neck_one_click_s": 90.0,
           "atlas_over_registration_cpu": 2.0}
RUNTIMES = ("torch", "openvino", "onnxruntime")

# A child process runs `ursam segment` and reports its own peak RSS: VmHWM, the high-water mark of
# its address space (ru_maxrss would include the parent's RSS at fork time: Linux keeps it across exec),
# and, where it used a GPU, the most GPU memory its tensors held at once.
CHILD = """
import json, sys, time
start = time.perf_counter()
from URSAMLib.cli import main
code = main(json.loads(sys.argv[1]))
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
torch = sys.modules.get("torch")
gpu = torch.cuda.max_memory_allocated() / 2**20 if torch is not None and torch.cuda.is_initialized() else None
print("BENCH " + json.dumps({"code": code, "wall_s": time.perf_counter() - start, "peak_rss_mb": hwm / 1024,
                             "peak_gpu_mb": gpu}))
"""


def machine() -> dict:
    import torch

    from URSAMLib.runtime import cpu_computes_in_bfloat16

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_bf16": cpu_computes_in_bfloat16(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
            if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average_1_5_15_at_start": [round(v, 2) for v in os.getloadavg()]}


def segment_child(argv: list[str], env: dict | None = None) -> dict:
    """Run `ursam segment ARGV` in a fresh process; wall time, peak RSS and the summary."""
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode or line is None or json.loads(line[6:])["code"]:
        raise SystemExit(f"ursam segment {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    result = json.loads(line[6:])
    out = Path(argv[argv.index("-o") + 1])
    result["summary"] = json.loads((out / "summary.json").read_text())
    return result


def end_to_end(data: Path, organs: str, num_aug: int, work: Path, precision: str = "float32",
               device: str = "cpu", runtime: str = "auto", ratio: float = 0.01,
               embedding_cache: Path | None = None) -> dict:
    """`ursam segment` on abdomen-ts in a child; embedding_cache: that folder (else no cache)."""
    out = work / f"abdomen_n{num_aug}_r{ratio}_{precision}_{device}_{runtime}"
    cache = ["--overwrite"] if embedding_cache else ["--no-embedding-cache"]
    run = segment_child(["segment", str(data / "abdomen-ts" / "ct.nii.gz"), "-o", str(out), "--quiet",
                         "--prompt-labels", str(data / "abdomen-ts" / "labels.nii.gz"),
                         "--classes", str(data / "abdomen-ts" / "classes.json"), "--organs", organs,
                         "--num-aug", str(num_aug), "--ratio", str(ratio), "--device", device,
                         "--precision", precision, "--runtime", runtime, *cache],
                        {"URSAM_EMBEDDING_CACHE": str(embedding_cache)} if embedding_cache else None)
    summary = run["summary"]
    dice = [e["dice_vs_prompt_labels"]["rectified"] for e in summary["organs"].values()]
    return {"num_aug": num_aug, "ratio": ratio, "precision": precision,
            "runtime": summary["backbone"].get("runtime", "torch"), "organs": len(summary["organs"]),
            "wall_s": round(run["wall_s"], 1),
            "peak_rss_mb": round(run["peak_rss_mb"]), "peak_gpu_mb": _rounded(run["peak_gpu_mb"]),
            "mean_dsc_rectified": round(float(np.mean(dice)), 4),
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in summary["timings_s"].items()}}


def head_and_neck_one_click(data: Path, work: Path, device: str, patient: str = "pt_201",
                            precision: str = "float32") -> dict:
    """`ursam segment CT --region head-and-neck` on a 128^3 OpenKBP validation CT: the built-in
    template and localizer, nothing else given; the runtime's export made beforehand (a first use)."""
    folder = data / "hn-openkbp" / "validation"
    run = segment_child(["segment", str(folder / f"{patient}_ct.nii.gz"), "-o", str(work / f"hn_{patient}_{precision}"),
                         "--quiet", "--region", "head-and-neck", "--reference", str(folder / f"{patient}_oar.nii.gz"),
                         "--device", device, "--precision", precision, "--no-embedding-cache"])
    summary = run["summary"]
    dice = [e["dice_vs_reference"]["rectified"] for e in summary["organs"].values()]
    return {"patient": patient, "wall_s": round(run["wall_s"], 1), "peak_rss_mb": round(run["peak_rss_mb"]),
            "organs": len(summary["organs"]), "not_found": sorted(summary["not_found"]),
            "mean_dsc_rectified": round(float(np.mean(dice)), 4) if dice else None,
            "localize_s": summary["timings_s"]["load_and_localize_s"], "runtime": summary["backbone"].get("runtime"),
            "precision": precision}


def localization_cost(data: Path, patient: str = "pt_201") -> dict:
    """The built-in head-and-neck template's registration and atlas localizers on one OpenKBP CT.

    Timed in CPU seconds of this process (ITK registers single-threaded here), which a shared
    machine inflates far less than wall time; the atlas adds a B-spline per support and carries
    the label maps onto the CT."""
    from URSAMLib import builtin, io
    from URSAMLib.localize import localize_by_atlas, localize_by_registration
    from URSAMLib.template import Template

    ct = io.read_ct(data / "hn-openkbp" / "validation" / f"{patient}_ct.nii.gz")
    template = Template.load(builtin.region_template("head-and-neck").folder)
    seconds = {}
    for name, localize in (("registration", localize_by_registration), ("atlas", localize_by_atlas)):
        cpu, wall = time.process_time(), time.perf_counter()
        localize(ct, template)
        seconds[name] = {"cpu_s": round(time.process_time() - cpu, 1), "wall_s": round(time.perf_counter() - wall, 1)}
    return {"patient": patient, "supports": len(template.supports), **seconds,
            "atlas_over_registration_cpu": round(seconds["atlas"]["cpu_s"] / seconds["registration"]["cpu_s"], 2)}


def runtimes_side_by_side(data: Path, organs: str, work: Path, device: str) -> dict:
    """The n = 3 run with each runtime (PyTorch float32 first), and each one's first-use export.

    Each export is timed into an empty cache, then made once in the user's cache, so that the timed
    runs measure what every later run pays."""
    exports = {name: runtime_build_s(name, work) for name in RUNTIMES if name != "torch"}
    for name in exports:
        runtime_build_s(name)
    runs = [end_to_end(data, organs, 3, work, device=device, runtime=name) for name in RUNTIMES]
    torch_run = runs[0]
    for name, run in zip(RUNTIMES, runs):
        run["requested"] = name
        run["speedup_over_torch"] = round(torch_run["wall_s"] / run["wall_s"], 2)
        run["dsc_minus_torch"] = round(run["mean_dsc_rectified"] - torch_run["mean_dsc_rectified"], 4)
        run["first_use_export_s"] = exports.get(name)
    return {"runs": runs}


BUILD_CHILD = """
import sys, time
from URSAMLib.backbones import load_backbone
start = time.perf_counter()
backbone = load_backbone("litemedsam", device="cpu", runtime=sys.argv[1])
print("BUILD", backbone.runtime, time.perf_counter() - start)
"""


def runtime_build_s(runtime: str, work: Path | None = None) -> float | None:
    """Seconds to load LiteMedSAM with ``runtime``: into an empty cache under ``work`` (export, compile,
    check), or, without ``work``, from the user's cache (building it there if needed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           **({"URSAM_CACHE": str(work / f"cache-{runtime}")} if work else {})}
    done = subprocess.run([sys.executable, "-c", BUILD_CHILD, runtime], capture_output=True, text=True, env=env)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BUILD ")), "")
    return round(float(line.split()[2]), 1) if line and line.split()[1] == runtime else None


def cached_rerun(data: Path, organs: str, work: Path, device: str) -> dict:
    """n = 3 into an empty embedding cache, then n = 1 and ratio 0.02 from it (separate processes)."""
    folder = work / "embeddings"
    first = end_to_end(data, organs, 3, work, device=device, embedding_cache=folder)
    again = [end_to_end(data, organs, 1, work, device=device, embedding_cache=folder),
             end_to_end(data, organs, 3, work, device=device, ratio=0.02, embedding_cache=folder)]
    for run in again:
        run["fraction_of_first"] = round(run["wall_s"] / first["wall_s"], 3)
    return {"first": first, "again": again}


SLIDER_CHILD = """
import json, sys, time
from dataclasses import replace
import numpy as np
from URSAMLib import io
from URSAMLib.backbones import load_backbone
from URSAMLib.embedding_cache import EmbeddingCache
from URSAMLib.pipeline import Settings, segment
from URSAMLib.prompts import prompts_from_labels
data, organs, device = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
ct = io.read_ct(data + "/ct.nii.gz")
hu, _ = io.axial_array(ct)
labels, _ = io.axial_array(io.read_label_map(data + "/labels.nii.gz", ct), np.uint16)
classes = {name: value for value, name in io.read_classes(data + "/classes.json").items()}
prompts, _ = prompts_from_labels(labels, {classes[o]: o for o in organs}, "slice")
start = time.perf_counter()
backbone = load_backbone("litemedsam", device=device, runtime="auto")
backbone.embedding_cache = EmbeddingCache(disk_bytes=0, memory_bytes=4 << 30)  # the warm worker's memory
loaded = time.perf_counter() - start
times = {"load_s": loaded, "runtime": backbone.runtime}
settings = Settings(num_aug=3)
for name, changed in [("first_n3", settings), ("slider_n1", replace(settings, num_aug=1)),
                      ("slider_ratio_0.02", replace(settings, ratio=0.02)),
                      ("slider_n5", replace(settings, num_aug=5))]:
    tick = time.perf_counter()
    result = segment(hu, prompts, backbone, changed)
    backbone.synchronize()
    times[name + "_s"] = time.perf_counter() - tick
tick = time.perf_counter()
result.rerectify(method="fixed")
times["rectification_only_s"] = time.perf_counter() - tick
print("SLIDER " + json.dumps(times))
"""


def slider_rerun(data: Path, organs: str, device: str) -> dict:
    """A warm process (model and embeddings in memory): the first run, then slider moves."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", SLIDER_CHILD, str(data / "abdomen-ts"), organs, device],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((x for x in done.stdout.splitlines() if x.startswith("SLIDER ")), None)
    if done.returncode or line is None:
        raise SystemExit(f"slider re-run failed:\n{done.stderr[-2000:]}")
    times = json.loads(line[7:])
    result = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in times.items()}
    for move in ("n1", "ratio_0.02", "n5"):
        result[f"slider_{move}_fraction_of_first"] = round(times[f"slider_{move}_s"] / times["first_n3_s"], 3)
    return result


def _rounded(value):
    return None if value is None else round(value)


def encoder_throughput(backbone, chest: np.ndarray, count: int, batch: int) -> dict:
    """Slices/s of SamBackbone.embed on ``count`` evenly spaced slices, ``batch`` per call (the
    pipeline's default: 1 on CPU, 8 on a GPU)."""
    from URSAMLib.backbones import window_ct

    margin = min(10, chest.shape[0] // 4)
    zs = np.linspace(margin, chest.shape[0] - 1 - margin, count).astype(int)
    backbone.embed(window_ct(chest[zs[:batch]], backbone.window))  # warm-up
    backbone.synchronize()
    start = time.perf_counter()
    for first in range(0, count, batch):
        backbone.embed(window_ct(chest[zs[first:first + batch]], backbone.window))
    backbone.synchronize()
    seconds = time.perf_counter() - start
    return {"slices": len(zs), "of": chest.shape[0], "slice_size": list(chest.shape[1:]), "batch": batch,
            "seconds": round(seconds, 2), "slices_per_s": round(len(zs) / seconds, 3)}


def decoder_throughput(backbone, slice_hu: np.ndarray, boxes: int, repeats: int) -> dict:
    """Boxes/s of SamBackbone.decode (network + upsampling to the slice), 36-box batches like
    12 organs x n = 3; and of the network alone, to see what upsampling whole slices costs."""
    from URSAMLib.backbones import window_ct

    embedding = backbone.embed(window_ct(slice_hu[None], backbone.window))
    height, width = slice_hu.shape
    rng = np.random.default_rng(0)
    centre = rng.uniform(0.3, 0.7, (boxes, 2)) * [width, height]
    half = rng.uniform(0.05, 0.15, (boxes, 2)) * [width, height]
    box_array = np.concatenate([centre - half, centre + half], axis=1)
    backbone.decode(embedding, box_array[:4], (height, width))  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        backbone.decode(embedding, box_array, (height, width))
    seconds = time.perf_counter() - start
    result = {"slice_size": [height, width], "boxes_per_call": boxes, "calls": repeats,
              "seconds": round(seconds, 2), "boxes_per_s": round(boxes * repeats / seconds, 2)}
    import torch

    start = time.perf_counter()
    for _ in range(repeats):  # the same network without upsampling the logits to the slice
        with torch.inference_mode():
            model_boxes = backbone.preprocessing.boxes_to_model(box_array, (height, width))
            if backbone.engine is not None:
                backbone.engine.decode(embedding.numpy(), model_boxes.astype(np.float32))
            else:
                backbone._prompt_decoder(embedding, torch.as_tensor(model_boxes, dtype=torch.float32,
                                                                    device=backbone.device))
    backbone.synchronize()
    network = time.perf_counter() - start
    result["network_only_boxes_per_s"] = round(boxes * repeats / network, 2)
    result["upsampling_share"] = round(max(0.0, 1 - network / seconds), 3)
    return result


def naive_reference(backbone, data: Path, organs: str, num_aug: int, samples: int, ours: dict) -> dict:
    """Time the naive loop (one embedding + one box decode per organ, slice and augmented box)
    on ``samples`` items drawn from the real prompts; extrapolate to all of them."""
    from URSAMLib import io
    from URSAMLib.backbones import window_ct
    from URSAMLib.prompts import augment_box, augmentation_rng, prompts_from_labels

    ct = io.read_ct(data / "abdomen-ts" / "ct.nii.gz")
    hu, _ = io.axial_array(ct)
    labels, _ = io.axial_array(io.read_label_map(data / "abdomen-ts" / "labels.nii.gz", ct), np.uint16)
    classes = {name: value for value, name in io.read_classes(data / "abdomen-ts" / "classes.json").items()}
    prompts, _ = prompts_from_labels(labels, {classes[o]: o for o in organs.split(",")}, "slice")
    items = [(p, z) for p in prompts for z in p.boxes]
    total = len(items) * num_aug
    rng = np.random.default_rng(1)
    chosen = [items[i] for i in rng.choice(len(items), size=samples, replace=False)]
    start = time.perf_counter()
    for prompt, z in chosen:
        part = np.reshape(prompt.boxes[z], (-1, 4))[0]  # the organ's largest part on the slice
        box = augment_box(part, num_aug, 0.01, hu.shape[1:], augmentation_rng(0, prompt.label, z))[-1]
        embedding = backbone.embed(window_ct(hu[z:z + 1], backbone.window))  # the naive part: again and again
        backbone.decode(embedding, box[None], hu.shape[1:])
    per_item = (time.perf_counter() - start) / samples
    naive_sam_s = per_item * total
    ours_sam_s = ours["embed_s"] + ours["decode_s"]
    return {"measured_items": samples, "all_items": total, "seconds_per_item": round(per_item, 3),
            "naive_sam_s_extrapolated": round(naive_sam_s, 1), "ours_sam_s": round(ours_sam_s, 1),
            "naive_over_ours_sam": round(naive_sam_s / ours_sam_s, 2),
            "naive_end_to_end_s_extrapolated": round(ours["wall_s"] - ours_sam_s + naive_sam_s, 1),
            "naive_over_ours_end_to_end": round((ours["wall_s"] - ours_sam_s + naive_sam_s) / ours["wall_s"], 2),
            "note": f"naive loop timed on {samples} random (organ, slice, box) items of the n = {num_aug} run "
                    f"and extrapolated to all {total}; ours = embed_s + decode_s of that run"}



def memory_300(chest_image, slices: int, work: Path, depth: int = 10, device: str = "cpu") -> dict:
    """Peak RSS of `ursam segment` on a synthetic 512x512xSLICES CT made of chest-ct's slices."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(chest_image)  # [k, j, i]
    tiled = np.concatenate([array] * (slices // len(array) + 1))[:slices]
    image = sitk.GetImageFromArray(tiled)
    image.SetSpacing(chest_image.GetSpacing())
    image.SetDirection(chest_image.GetDirection())
    image.SetOrigin(chest_image.GetOrigin())
    labels = np.zeros(tiled.shape, np.uint8)
    middle = slices // 2
    half = depth // 2  # three box "organs", depth slices each, overlapping in z
    labels[middle - half:middle + half, 150:330, 100:260] = 1
    labels[middle - half + 2:middle + half + 2, 200:300, 300:420] = 2
    labels[middle - half - 2:middle + half - 2, 320:400, 220:300] = 3
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    sitk.WriteImage(image, str(work / "synthetic_ct.nii.gz"))
    sitk.WriteImage(label_image, str(work / "synthetic_labels.nii.gz"))
    (work / "synthetic_classes.json").write_text(json.dumps({"1": "a", "2": "b", "3": "c"}))
    run = segment_child(["segment", str(work / "synthetic_ct.nii.gz"), "-o", str(work / "synthetic_out"), "--quiet",
                         "--prompt-labels", str(work / "synthetic_labels.nii.gz"),
                         "--classes", str(work / "synthetic_classes.json"), "--device", device],
                        {"URSAM_EMBEDDING_CACHE": str(work / "synthetic_embeddings")})
    return {"shape_zyx": list(tiled.shape), "prompted_slices": run["summary"]["timings_s"]["slices"],
            "wall_s": round(run["wall_s"], 1), "peak_rss_mb": round(run["peak_rss_mb"]),
            "peak_gpu_mb": _rounded(run["peak_gpu_mb"])}


def markdown(report: dict) -> str:
    m = report["machine"]
    device = report.get("device", "cpu")
    gpu = f"{m['gpu']} ({m.get('gpu_memory_gb')} GB)" if m["gpu"] else "none"
    lines = [f"# URSAM benchmark on {device.upper()} ({report['date']} to {report.get('finished', '?')})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, GPU: {gpu}; "
             f"torch {m['torch']}. Load average (1/5/15 min) {m['load_average_1_5_15_at_start']} at the start, "
             f"{report['load_average_1_5_15_at_end']} at the end — on a shared CPU, times are upper bounds.", "",
             "## End to end: `ursam segment` abdomen-ts/ct.nii.gz, 12 FLARE22 organs, per-slice label prompts", "",
             "| n | runtime | precision | wall s | embed s | decode s | slices | boxes | peak RSS MB | peak GPU MB "
             "| mean DSC (rectified) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["end_to_end"]:
        lines.append(f"| {r['num_aug']} | {r.get('runtime', 'torch')} | {r.get('precision', 'float32')} | "
                     f"{r['wall_s']} | {r['embed_s']} | "
                     f"{r['decode_s']} | {r['slices']} | {r['boxes']} | {r['peak_rss_mb']} | "
                     f"{r.get('peak_gpu_mb') or '-'} | {r['mean_dsc_rectified']} |")
    one_click = [report[key] for key in ("head_and_neck", "head_and_neck_bf16") if key in report]
    if one_click:
        lines += ["", "## One click: `ursam segment CT --region head-and-neck` (OpenKBP validation "
                  f"{one_click[0]['patient']}, 128^3)", "",
                  "| wall s | localization s | organs | not found | mean DSC (rectified) | runtime | precision "
                  "| peak RSS MB |", "|---|---|---|---|---|---|---|---|",
                  *(f"| {h['wall_s']} | {h['localize_s']} | {h['organs']} | {', '.join(h['not_found']) or '-'} | "
                    f"{h['mean_dsc_rectified']} | {h['runtime']} | {h.get('precision', 'float32')} | "
                    f"{h['peak_rss_mb']} |" for h in one_click)]
    if "localization" in report:
        c = report["localization"]
        lines += ["", f"## Localization cost (OpenKBP validation {c['patient']}, built-in head-and-neck template, "
                  f"{c['supports']} supports)", "", "| localizer | CPU s | wall s |", "|---|---|---|",
                  *(f"| {k} | {c[k]['cpu_s']} | {c[k]['wall_s']} |" for k in ("registration", "atlas"))]
    if "runtimes" in report:
        lines += ["", "## Runtimes side by side (n = 3, float32, no embedding cache)", "",
                  "| runtime | wall s | embed s | decode s | x PyTorch | mean DSC | DSC - PyTorch "
                  "| first-use export s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in report["runtimes"]["runs"]:
            ran = r["runtime"] if r["runtime"] == r["requested"] else f"{r['requested']} (fell back to {r['runtime']})"
            lines.append(f"| {ran} | {r['wall_s']} | {r['embed_s']} | {r['decode_s']} | {r['speedup_over_torch']} | "
                         f"{r['mean_dsc_rectified']} | {r['dsc_minus_torch']:+} | {r['first_use_export_s'] or '-'} |")
    if "cached_rerun" in report:
        c = report["cached_rerun"]
        lines += ["", "## Re-runs on the same CT", "",
                  f"Separate `ursam segment` processes, one embedding cache: n = 3 first {c['first']['wall_s']} s "
                  f"({c['first']['slices']} slices embedded); then "
                  + "; ".join(f"n = {r['num_aug']}, ratio {r['ratio']}: {r['wall_s']} s "
                              f"({r['fraction_of_first']:.0%} of the first, {r['cached_slices']} slices from the cache)"
                              for r in c["again"]) + "."]
    if "slider" in report:
        w = report["slider"]
        lines += ["", f"Warm process ({w['runtime']}; model loaded once in {w['load_s']} s, embeddings kept in memory, "
                  f"as the Slicer module's worker): first n = 3 run {w['first_n3_s']} s; slider to n = 1 "
                  f"{w['slider_n1_s']} s ({w['slider_n1_fraction_of_first']:.0%}), ratio 0.02 "
                  f"{w['slider_ratio_0.02_s']} s ({w['slider_ratio_0.02_fraction_of_first']:.0%}), n = 5 "
                  f"{w['slider_n5_s']} s ({w['slider_n5_fraction_of_first']:.0%}); another rectification "
                  f"setting {w['rectification_only_s']} s."]
    enc, naive = report["encoder"], report["naive"]
    lines += ["", f"Encoder: {enc['slices_per_s']} slices/s ({enc['slices']} embeddings of slices drawn evenly from "
              f"chest-ct's {enc['of']} {enc['slice_size'][0]}x{enc['slice_size'][1]} slices, "
              f"{enc.get('batch', 1)} per call).", ""]
    for d in report["decoder"]:
        lines.append(f"Decoder at {d['slice_size'][0]}x{d['slice_size'][1]}: {d['boxes_per_s']} boxes/s "
                     f"({d['boxes_per_call']} boxes per call, probability maps of whole slices); the network "
                     f"alone {d['network_only_boxes_per_s']} boxes/s: upsampling is {d['upsampling_share']:.0%} "
                     "of the decoder's time.")
    lines += ["", f"Naive loop: {naive['seconds_per_item']} s per (organ, slice, box); {naive['note']}. "
              f"SAM time naive {naive['naive_sam_s_extrapolated']} s vs ours {naive['ours_sam_s']} s "
              f"(x{naive['naive_over_ours_sam']}); end to end x{naive['naive_over_ours_end_to_end']}.", ""]
    mem = report["memory"]
    gpu_memory = f", peak GPU memory {mem['peak_gpu_mb']} MB" if mem.get("peak_gpu_mb") else ""
    lines += [f"Memory: synthetic {mem['shape_zyx'][2]}x{mem['shape_zyx'][1]}x{mem['shape_zyx'][0]} CT "
              f"(chest-ct slices repeated), 3 box organs over {mem['prompted_slices']} slices: "
              f"peak RSS {mem['peak_rss_mb']} MB{gpu_memory}, {mem['wall_s']} s.", "", "## Targets", "",
              "| target | goal | measured | met |", "|---|---|---|---|"]
    for row in report["target_check"]:
        lines.append(f"| {row['target']} | {row['goal']} | {row['measured']} | {'yes' if row['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def target_check(report: dict) -> list[dict]:
    """Each target of issue 6 that this run measures: goal, measured value, met or not."""
    device, n1, n3 = report.get("device", "cpu"), report["end_to_end_n1"], report["end_to_end_n3"]

    def row(target, goal, measured, met):
        return {"target": target, "goal": goal, "measured": measured, "met": bool(met)}

    ratio_goal = TARGETS["n3_over_n1_gpu" if device == "cuda" else "n3_over_n1"]
    ratio = n3["wall_s"] / n1["wall_s"]
    rows = [row(f"n = 3 wall time / n = 1 ({device.upper()})", f"<= {ratio_goal}", round(ratio, 2),
                ratio <= ratio_goal),
            row("naive / ours, SAM time, 12 organs n = 3", f">= {TARGETS['naive_over_ours']}",
                report["naive"]["naive_over_ours_sam"],
                report["naive"]["naive_over_ours_sam"] >= TARGETS["naive_over_ours"])]
    if device == "cpu":
        rows.append(row("abdomen 12 organs end to end, n = 3, s", f"<= {TARGETS['abdomen_12_organs_s']}",
                        n3["wall_s"], n3["wall_s"] <= TARGETS["abdomen_12_organs_s"]))
        if "end_to_end_n3_bf16" in report:
            bf16 = report["end_to_end_n3_bf16"]
            rows.append(row(f"the same with --precision bfloat16 ({bf16['runtime']}), s",
                            f"<= {TARGETS['abdomen_12_organs_s']}", bf16["wall_s"],
                            bf16["wall_s"] <= TARGETS["abdomen_12_organs_s"]))
            if "runtimes" in report:  # against PyTorch float32 of the same run
                torch_run = report["runtimes"]["runs"][0]
                speedup = round(torch_run["wall_s"] / bf16["wall_s"], 2)
                rows.append(row("bfloat16 / PyTorch float32, n = 3", f">= {TARGETS['speedup_over_torch']}", speedup,
                                speedup >= TARGETS["speedup_over_torch"]))
                difference = round(bf16["mean_dsc_rectified"] - torch_run["mean_dsc_rectified"], 4)
                rows.append(row("bfloat16 mean DSC difference from PyTorch float32", f"<= {TARGETS['dsc_difference']}",
                                difference, abs(difference) <= TARGETS["dsc_difference"]))
    if "runtimes" in report and device == "cpu":
        runs = report["runtimes"]["runs"]
        best = max(runs[1:], key=lambda r: r["speedup_over_torch"])
        rows.append(row(f"fastest runtime ({best['runtime']}) / PyTorch float32, n = 3",
                        f">= {TARGETS['speedup_over_torch']}",
                        best["speedup_over_torch"], best["speedup_over_torch"] >= TARGETS["speedup_over_torch"]))
        worst = max(abs(r["dsc_minus_torch"]) for r in runs[1:])
        rows.append(row("mean DSC difference from PyTorch, any runtime", f"<= {TARGETS['dsc_difference']}", worst,
                        worst <= TARGETS["dsc_difference"]))
    if "cached_rerun" in report:
        worst = max(r["fraction_of_first"] for r in report["cached_rerun"]["again"])
        rows.append(row("re-run with another n or ratio (embedding cache) / first run",
                        f"<= {TARGETS['rerun_fraction']}",
                        worst, worst <= TARGETS["rerun_fraction"]))
    if "slider" in report:
        worst = max(report["slider"][f"slider_{m}_fraction_of_first"] for m in ("n1", "ratio_0.02"))
        rows.append(row("warm slider move (n or ratio) / first run", f"<= {TARGETS['rerun_fraction']}", worst,
                        worst <= TARGETS["rerun_fraction"]))
    if "localization" in report:
        ratio = report["localization"]["atlas_over_registration_cpu"]
        rows.append(row("atlas localization / registration localization, CPU s per scan",
                        f"<= {TARGETS['atlas_over_registration_cpu']}", ratio,
                        ratio <= TARGETS["atlas_over_registration_cpu"]))
    for key, what in (("head_and_neck", ""), ("head_and_neck_bf16", ", --precision bfloat16")):
        if key in report:
            seconds = report[key]["wall_s"]
            rows.append(row(f"one 128^3 head-and-neck CT, --region head-and-neck{what}, localization included, s",
                            f"<= {TARGETS['head_and_neck_one_click_s']}", seconds,
                            seconds <= TARGETS["head_and_neck_one_click_s"]))
    peak_rss = report["memory"]["peak_rss_mb"] / 1024
    rows.append(row("peak RSS, 512x512x300 CT, GB", f"<= {TARGETS['peak_rss_300_slices_gb']}", round(peak_rss, 2),
                    peak_rss <= TARGETS["peak_rss_300_slices_gb"]))
    if device == "cuda":
        runs = [report["memory"], *report["end_to_end"]]
        peak_gpu = max(r["peak_gpu_mb"] or 0 for r in runs) / 1024
        rows.append(row("peak GPU memory, any run above, GB", f"<= {TARGETS['gpu_memory_gb']}", round(peak_gpu, 2),
                        peak_gpu <= TARGETS["gpu_memory_gb"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="a fast check that the script works")
    parser.add_argument("--resume", action="store_true", help="keep the parts an interrupted run finished")
    parser.add_argument("--only", metavar="PART,...", help="run only these parts (e.g. runtimes,cached_rerun,slider; "
                        "with --quick: a fast check of them); the report keeps what --resume kept")
    args = parser.parse_args()
    data = Path(args.data)
    from URSAMLib import io
    from URSAMLib.backbones import load_backbone

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    gpu = args.device == "cuda"
    name = ("quick" if args.quick else "latest") + ("-cuda" if gpu else "")
    partial = out / f".{name}.partial.json"  # each part is saved as it finishes; --resume skips those done
    report = json.loads(partial.read_text()) if args.resume and partial.exists() else {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "targets": TARGETS, "quick": args.quick,
        "device": args.device}
    organs = "gallbladder,adrenal_gland_right" if args.quick else FLARE12
    loaded: dict = {}

    def backbone():
        if "backbone" not in loaded:
            loaded["backbone"] = load_backbone("litemedsam", device=args.device, runtime="auto")
        return loaded["backbone"]

    def chest():
        if "chest" not in loaded:
            loaded["chest_image"] = io.read_ct(data / "chest-ct" / "ct.nii.gz")
            loaded["chest"] = io.axial_array(loaded["chest_image"])[0]
        return loaded["chest"]

    def part(key, compute):
        if args.only and key not in args.only.split(","):
            return
        if key not in report:
            report[key] = compute()
            partial.write_text(json.dumps(report, indent=1) + "\n")
        print(key, json.dumps(report[key], indent=1), flush=True)

    # A GPU is timed on more work, so that its runs last well beyond launch and transfer overheads.
    encoder_slices, encoder_batch = (2, 1) if args.quick else (64, 8) if gpu else (12, 1)
    decoder_calls = 1 if args.quick else 20 if gpu else 3
    naive_samples = 2 if args.quick else 120 if gpu else 12
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        part("encoder", lambda: encoder_throughput(backbone(), chest(), encoder_slices, encoder_batch))
        part("decoder", lambda: [
            decoder_throughput(backbone(), chest()[len(chest()) // 2], 36, decoder_calls),
            decoder_throughput(backbone(), io.axial_array(io.read_ct(data / "abdomen-ts" / "ct.nii.gz"))[0][90], 36,
                               decoder_calls)])
        for n in (1, 3):
            part(f"end_to_end_n{n}", lambda: end_to_end(data, organs, n, work, device=args.device))
        if not gpu:
            part("runtimes", lambda: runtimes_side_by_side(data, organs, work, args.device))
        part("head_and_neck", lambda: head_and_neck_one_click(data, work, args.device))
        part("localization", lambda: localization_cost(data))
        part("cached_rerun", lambda: cached_rerun(data, organs, work, args.device))
        part("slider", lambda: slider_rerun(data, organs, args.device))
        part("naive", lambda: naive_reference(backbone(), data, organs, 3, naive_samples, report["end_to_end_n3"]))
        if not args.quick:
            part("end_to_end_n7", lambda: end_to_end(data, organs, 7, work, device=args.device))
        if gpu or report["machine"]["cpu_bf16"]:  # bfloat16 pays off only where the CPU computes in bf16
            part("end_to_end_n3_bf16", lambda: end_to_end(data, organs, 3, work, "bfloat16", args.device))
            part("head_and_neck_bf16", lambda: head_and_neck_one_click(data, work, args.device, precision="bfloat16"))
        # last: the largest run, the one most likely to meet a machine's memory limit
        part("memory", lambda: (chest(), memory_300(loaded["chest_image"], 60 if args.quick else 300, work,
                                                    4 if args.quick else 10, args.device))[1])
        report["end_to_end"] = [report[key] for key in ("end_to_end_n1", "end_to_end_n3", "end_to_end_n7",
                                                        "end_to_end_n3_bf16") if key in report]
    report["load_average_1_5_15_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if args.only:  # a partial report: the parts as JSON, no targets
        (out / f"{name}-parts.json").write_text(json.dumps(report, indent=1) + "\n")
        return
    report.setdefault("finished", time.strftime("%Y-%m-%d %H:%M"))
    report["target_check"] = target_check(report)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
