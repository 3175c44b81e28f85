"""One CT of a cohort and the label maps that go with it, and the two ways a cohort is given.

* ``ursam batch`` segments a folder of CTs that need not be labelled, named any way a site names
  them (:func:`find_cohort`). The CTs are the entries of INPUT_DIR whose name matches
  ``--ct-pattern`` (default ``*``) and that are image files (``.nii``, ``.nii.gz``, ``.nrrd``,
  ``.nhdr``, ``.mha``, ``.mhd``) or folders (one DICOM series each). Hidden entries, the output
  folder and anything matching a label pattern are never CTs. A case's **name** is the part of
  the CT's name that the ``*`` matched, less any image extension: ``--ct-pattern '*_ct.nii.gz'``
  makes ``pt_1_ct.nii.gz`` case ``pt_1``; the default ``*`` makes it ``pt_1_ct``.
  ``--prompt-labels-pattern`` (and ``--reference-pattern``) is a path relative to INPUT_DIR in
  which ``*`` stands for the case name: with ``'*_oar.nii.gz'`` case ``pt_1`` is prompted from
  ``INPUT_DIR/pt_1_oar.nii.gz``; ``'labels/*.nii.gz'`` looks in a subfolder.
* ``ursam evaluate`` scores labelled CTs (:func:`find_labelled_cases`): CT files with their label
  maps, or folders in which every CT has its label map beside it by name (:func:`label_path_for`),
  as the public data sets ship them; a CT without one is not a case there.

Both list cases in natural order (``pt_2`` before ``pt_10``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from .errors import URSAMError
from .formats import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Case:
    """``name``: unique in the cohort (its output folder, its report rows); ``ct``: a file or a DICOM folder."""

    name: str
    ct: Path
    prompt_labels: Path | None = None
    """The label map the box prompts are made from, if any."""
    reference: Path | None = None
    """The label map the result is scored against, if any."""


def natural_key(path: Path) -> list:
    """Sort key of a path's name with its digit runs compared as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _split_pattern(pattern: str, option: str) -> tuple[str, str]:
    if pattern.count("*") != 1 or any(c in pattern for c in "?[]"):
        raise URSAMError(f"{option} {pattern!r} must hold exactly one '*' (the case name) and no other "
                         "wildcard, e.g. '*_ct.nii.gz'.")
    prefix, suffix = pattern.split("*")
    return prefix, suffix


def _matched(name: str, pattern: tuple[str, str]) -> str | None:
    """The part of ``name`` that the ``*`` of ``pattern`` (prefix, suffix) matches, or None."""
    prefix, suffix = pattern
    if len(name) > len(prefix) + len(suffix) and name.startswith(prefix) and name.endswith(suffix):
        return name[len(prefix):len(name) - len(suffix)]
    return None


def _strip_image_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return name


def find_cohort(input_dir: str | os.PathLike, ct_pattern: str = "*", labels_pattern: str | None = None,
               reference_pattern: str | None = None, exclude: Iterable[Path] = ()) -> list[Case]:
    """The cases of ``input_dir`` for ``ursam batch``, in natural order (rules: module docstring).

    A case whose label map is missing keeps ``prompt_labels`` pointing at the missing file
    (it fails alone); no label map at all, no CT, or two CTs with one name is an
    :class:`URSAMError`.
    """
    folder = Path(input_dir)
    if not folder.is_dir():
        raise URSAMError(f"{folder} {'is not a folder' if folder.exists() else 'does not exist'}; give the "
                         "folder that holds the CTs (image files or DICOM series folders).")
    ct_glob = _split_pattern(ct_pattern, "--ct-pattern")
    if "/" in ct_pattern:
        raise URSAMError(f"--ct-pattern {ct_pattern!r} names entries of INPUT_DIR itself; it cannot hold '/'.")
    others = {key: _split_pattern(p, option) for key, p, option in
              (("labels", labels_pattern, "--prompt-labels-pattern"),
               ("reference", reference_pattern, "--reference-pattern")) if p}
    excluded = {Path(p).resolve() for p in exclude}
    not_cts = {p.split("/")[0] for p in (labels_pattern, reference_pattern) if p and "/" in p}
    cases: dict[str, Case] = {}
    for entry in sorted(folder.iterdir(), key=natural_key):
        name = entry.name
        if (name.startswith(".") or name in not_cts or entry.resolve() in excluded
                or any(_matched(name, glob) is not None for glob in others.values() if "/" not in glob[0])):
            continue
        star = _matched(name, ct_glob) if ct_pattern != "*" else name
        if star is None or not (entry.is_dir() or name.lower().endswith(IMAGE_SUFFIXES)):
            continue
        case = _strip_image_suffix(star) if entry.is_file() else star
        if case in cases:
            raise URSAMError(f"Two CTs in {folder} make case {case!r} ({cases[case].ct.name} and {name}); "
                             "rename one or narrow --ct-pattern.")
        paths = {key: folder / (glob[0] + case + glob[1]) for key, glob in others.items()}
        cases[case] = Case(case, entry, paths.get("labels"), paths.get("reference"))
    if not cases:
        raise URSAMError(f"No CT in {folder} matches --ct-pattern {ct_pattern!r} (image files "
                         f"{', '.join(IMAGE_SUFFIXES)} or DICOM series folders).")
    if labels_pattern and not any(c.prompt_labels.is_file() for c in cases.values()):
        example = next(iter(cases.values()))
        raise URSAMError(f"None of the {len(cases)} CTs has a label map matching --prompt-labels-pattern "
                         f"{labels_pattern!r} (e.g. case {example.name!r} looks for {example.prompt_labels}); "
                         "set --ct-pattern so that '*' is the part the CT and label names share.")
    return list(cases.values())


LABEL_SUFFIXES = ("oar", "labels", "label", "seg")


def label_path_for(ct: Path) -> Path | None:
    """The reference label map beside a CT, by name: the ``ct`` token of its file name replaced by
    ``oar``, ``labels``, ``label`` or ``seg`` (``pt_1_ct.nii.gz`` → ``pt_1_oar.nii.gz``,
    ``ct_small.nii.gz`` → ``labels_small.nii.gz``); None when there is none."""
    stem, dot, extension = ct.name.partition(".")
    tokens = stem.split("_")
    for i in reversed(range(len(tokens))):
        if tokens[i].lower() == "ct":
            for suffix in LABEL_SUFFIXES:
                candidate = ct.with_name("_".join(tokens[:i] + [suffix] + tokens[i + 1:]) + dot + extension)
                if candidate.is_file():
                    return candidate
            return None
    return None


def case_name(ct: Path) -> str:
    stem = ct.name.partition(".")[0]
    tokens = [t for t in stem.split("_") if t.lower() != "ct"]
    return "_".join(tokens) or ct.parent.name


def find_labelled_cases(inputs: list[str], labels: list[str] | None = None) -> list[Case]:
    """The cases of ``ursam evaluate``: CT files (with ``labels`` in the same order, or found by name) and folders
    (every CT file in them whose label map is found by name), in natural order."""
    if labels and len(labels) != len(inputs):
        raise URSAMError(f"Give one label map per CT ({len(inputs)} CTs, {len(labels)} label maps).")
    cases = []
    for k, given in enumerate(inputs):
        path = Path(given)
        if path.is_dir():
            if labels:
                raise URSAMError(f"{path} is a folder; --labels goes with CT files, not folders.")
            found = [(ct, label_path_for(ct)) for ct in sorted(path.iterdir(), key=natural_key)
                     if ct.is_file() and (label_path_for(ct) is not None)]
            if not found:
                raise URSAMError(f"{path} holds no CT with a label map beside it (pt_1_ct.nii.gz with "
                                 "pt_1_oar.nii.gz, or ct.nii.gz with labels.nii.gz).")
            cases += [Case(case_name(ct), ct, reference=lab) for ct, lab in found]
        elif path.is_file():
            label = Path(labels[k]) if labels else label_path_for(path)
            if label is None or not label.is_file():
                raise URSAMError(f"No label map for {path}: give it with --labels, or name it like the CT "
                                 "with 'ct' replaced by 'labels' or 'oar'.")
            cases.append(Case(case_name(path), path, reference=label))
        else:
            raise URSAMError(f"{path} does not exist; give CT files or folders of labelled CTs.")
    names = [c.name for c in cases]
    if len(set(names)) != len(names):  # e.g. two folders with ct.nii.gz: qualify by folder
        cases = [replace(c, name=f"{c.ct.parent.name}_{c.name}") for c in cases]
    if len({c.name for c in cases}) != len(cases):
        raise URSAMError("Two cases have the same name; give each CT once.")
    return cases
