"""`vidseg demo`: what temporal units buy, shown on SynthCity in minutes on a CPU.

The pipeline: generate SynthCity (or reuse it), train a per-frame UNet and its temporal twin (same blocks and
size, plus cRNN units) at equal training compute, evaluate both on held-out sequences (all frames, clean frames,
corrupted frames, per corruption type, per number of frames seen, TC, mVC), segment a held-out clip with both,
and write ``report.md`` and ``report.html`` with plots, a side-by-side video and a strip of stills.

The temporal twin is warm-started: a per-frame model is trained first, its weights are copied into the temporal
model whose cRNN units start so that it reproduces the per-frame logits exactly (residual units, the default: skips
pass x + h with the units' input paths at zero; plain units: C_x = identity, C_h = 0), and the copy is fine-tuned
with the units learning (the recipe: ``plan.FINETUNE_OPTIONS``). "Equal compute" counts training FLOPs: the
per-frame baseline trains for as many FLOPs as the temporal model's whole schedule, pre-training included.

Budgets are step counts derived from ``--minutes`` with fixed rates measured on a 2-core CPU, so the same
command gives the same numbers on the same machine.

Modules: ``plan`` (what to run, as data), ``pipeline`` (running it), ``media`` (the clip's video and stills, the
plots), ``report`` (the report as a list of sections, rendered to Markdown and to HTML), ``evaluation`` (the
results as the report reads them).
"""

from vidseg.demo.evaluation import ModelResults, as_results
from vidseg.demo.pipeline import ensure_data, evaluate_run, run_demo, train_run
from vidseg.demo.plan import BASELINE_MODEL, TEMPORAL_MODEL, DemoPlan, training_flops

__all__ = [
    "BASELINE_MODEL",
    "TEMPORAL_MODEL",
    "DemoPlan",
    "ModelResults",
    "as_results",
    "ensure_data",
    "evaluate_run",
    "run_demo",
    "train_run",
    "training_flops",
]
