"""``ursam evaluate``: UR-SAM and the paper's comparison methods over labelled CTs, scored and reported.

Modules, each depending only on those before it: :mod:`.cases` (reading labelled CTs),
:mod:`.plan` (the configuration and the variants of a patient's run), :mod:`.scoring` (one patient
run and scored), :mod:`.tables` (rows summarised, results.csv), :mod:`.figures`, :mod:`.environment`,
:mod:`.report` (report.md), :mod:`.runner` (many patients, cached; the whole command).
"""
from ..cases import Case, find_labelled_cases, label_path_for
from .cases import LoadedCase, find_classes, load_case, select
from .plan import ALL_METHODS, RECTIFICATIONS, SWEEP_NUM_AUG, SWEEP_RATIOS, EvalConfig, Variant, plan_variants
from .runner import EvalRun, case_record_path, evaluate_command, load_record, prepare_template, run_cases
from .scoring import evaluate_case, manual_jitter, score_variant

__all__ = ["ALL_METHODS", "RECTIFICATIONS", "SWEEP_NUM_AUG", "SWEEP_RATIOS", "Case", "EvalConfig", "EvalRun",
           "LoadedCase", "Variant", "case_record_path", "evaluate_case", "evaluate_command", "find_classes",
           "find_labelled_cases", "label_path_for", "load_case", "load_record", "manual_jitter", "plan_variants",
           "prepare_template", "run_cases", "score_variant", "select"]
