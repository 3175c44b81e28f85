"""Print, per organ, the DSC of two `ursam segment` runs of the same CT side by side.

    python scripts/demo_table.py out/demo out/demo-label-boxes

Each folder's summary.json must hold DSC against labels (--reference, or --prompt-labels); the first
run names the columns' meaning through its prompt source.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def dice(summary: dict, organ: str) -> float | None:
    entry = summary["organs"].get(organ, {})
    scores = next((v for k, v in entry.items() if k.startswith("dice_vs_")), None)
    return scores["rectified"] if scores else None


def source(summary: dict) -> str:
    given = summary["input"]
    if given.get("region"):
        return f"automatic ({given['region']}, {given['localizer']})"
    return f"label boxes ({given.get('prompt_mode', 'template')})"


def main() -> None:
    runs = [json.loads((Path(folder) / "summary.json").read_text()) for folder in sys.argv[1:3]]
    organs = list(dict.fromkeys([*runs[0]["organs"], *runs[0]["not_found"], *runs[1]["organs"]]))
    names = [source(s) for s in runs]
    print(f"UR-SAM DSC against the labels of {Path(runs[0]['input']['ct']).name}")
    print(f"{'organ':16s} {names[0]:>34s} {names[1]:>28s}")
    columns: list[list[float]] = [[], []]
    for organ in organs:
        values = [dice(s, organ) for s in runs]
        for column, value in zip(columns, values):
            if value is not None:
                column.append(value)
        cells = [f"{v:.3f}" if v is not None else "not found" for v in values]
        print(f"{organ:16s} {cells[0]:>34s} {cells[1]:>28s}")
    means = [f"{sum(c) / len(c):.3f}" if c else "-" for c in columns]
    print(f"{'mean':16s} {means[0]:>34s} {means[1]:>28s}")
    seconds = [s["timings_s"]["all_s"] for s in runs]
    print(f"{'seconds':16s} {seconds[0]:>34.0f} {seconds[1]:>28.0f}")


if __name__ == "__main__":
    main()
