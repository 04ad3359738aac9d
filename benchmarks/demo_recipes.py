"""Screen variants of the demo's temporal recipe on one seed, against the demo's own runs.

The demo's temporal model loses a few mIoU points to the per-frame baseline on clean frames (docs/benchmarks.md,
section 6). This script takes a finished ``vidseg demo --out DIR`` and trains the temporal model again under
other recipes, reusing the demo's data and, when the step count is the same, its pre-training run. A variant sets
DemoPlan fields: the fine-tuning rate, the share of the budget spent pre-training the per-frame twin, a lower rate
for the copied weights, and issue 15's recipe options as config sections of the temporal run (residual units,
state dropout, CutMix, the temporal-consistency loss, frame skipping, the warped state). Every variant keeps the
demo's equal-compute schedule. It writes a table with mIoU over all, clean and corrupted held-out frames, TC, mVC_8
and the IoU of the thin or moving classes, next to the demo's per-frame baseline and its pre-trained twin.

    vidseg demo --out runs/demo --seed 0
    python benchmarks/demo_recipes.py --demo runs/demo
    python benchmarks/demo_recipes.py --demo runs/demo --reuse    # the table again, without training

One seed per call: a screen for ideas; confirm on other seeds (each seed is also another dataset) before
changing the demo. Results: a Markdown table on stdout and in ``benchmarks/results/demo_recipes_seed<S>.md``
(``..._seed<S>_minutes<M>.md`` for a demo run with another ``--minutes`` than 10).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import yaml
from common import write_result

from vidseg.config import config_from_dict
from vidseg.demo import DemoPlan, ModelResults, evaluate_run, train_run
from vidseg.results import EvaluationResults, read_results

# Each variant names every field it depends on, so that its meaning does not follow the demo's defaults; a field
# added to DemoPlan later has its value of the time in SCREENED_BEFORE (the variants that predate it assume it).
SCREENED_BEFORE = {"pretrain_final_lr_scale": 0.0}
VARIANTS = {
    "fine-tuning rate 1e-3": {"finetune_lr": 1e-3, "finetune_options": {}},
    "fine-tuning rate 3e-3": {"finetune_lr": 3e-3, "finetune_options": {}},
    "pre-training share 0.75": {"pretrain_share": 0.75, "finetune_lr": 1e-3, "finetune_options": {}},
    "pre-training share 0.75 + fine-tuning rate 3e-3": {
        "pretrain_share": 0.75,
        "finetune_lr": 3e-3,
        "finetune_options": {},
    },
    "pre-training share 0.75 + copied weights at 0.1x rate": {
        "pretrain_share": 0.75,
        "finetune_lr": 1e-3,
        "copied_lr_scale": 0.1,
        "finetune_options": {},
    },
    # Issue 15's recipe options, each on the plain cRNN recipe (fine-tuning rate 3e-3, pre-training share 0.5);
    # a variant's finetune_options replace the demo's default ones.
    "residual units": {"finetune_lr": 3e-3, "finetune_options": {"model": {"temporal_residual": True}}},
    "state dropout 0.3": {"finetune_lr": 3e-3, "finetune_options": {"model": {"state_dropout": 0.3}}},
    "residual units + state dropout 0.3": {
        "finetune_lr": 3e-3,
        "finetune_options": {"model": {"temporal_residual": True, "state_dropout": 0.3}},
    },
    "CutMix 0.5": {"finetune_lr": 3e-3, "finetune_options": {"data": {"mixup": {"kind": "cutmix", "prob": 0.5}}}},
    "temporal-consistency loss 1": {"finetune_lr": 3e-3, "finetune_options": {"loss": {"temporal_consistency": 1.0}}},
    "temporal-consistency loss 10": {"finetune_lr": 3e-3, "finetune_options": {"loss": {"temporal_consistency": 10.0}}},
    "frame skip 1-3": {"finetune_lr": 3e-3, "finetune_options": {"data": {"frame_stride": [1, 3]}}},
    # Screened when the schedule gave a dearer unit the demo's step count and a bigger baseline; it now gets fewer
    # steps by default (237 at --minutes 4), so the count it ran with is kept.
    "warped state": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 240, 10.0: 600},
        "finetune_options": {"model": {"warp_state": True}},
    },
    "residual units + CutMix 0.5": {
        "finetune_lr": 3e-3,
        "finetune_options": {"model": {"temporal_residual": True}, "data": {"mixup": {"kind": "cutmix", "prob": 0.5}}},
    },
    "residual units + CutMix 0.5 + frame skip 1-3": {
        "finetune_lr": 3e-3,
        "finetune_options": {
            "model": {"temporal_residual": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}, "frame_stride": [1, 3]},
        },
    },
    "residual units + pre-training share 0.75": {
        "pretrain_share": 0.75,
        "finetune_lr": 3e-3,
        "finetune_options": {"model": {"temporal_residual": True}},
    },
    "residual units + CutMix 0.5 + pre-training share 0.75": {
        "pretrain_share": 0.75,
        "finetune_lr": 3e-3,
        "finetune_options": {"model": {"temporal_residual": True}, "data": {"mixup": {"kind": "cutmix", "prob": 0.5}}},
    },
    # Units at the deeper levels only: residual units frozen at their zero start pass the per-frame feature (the
    # frozen units still run, so the temporal run saves no FLOPs and gets no extra steps).
    "residual units + CutMix 0.5, no unit at level 0": {
        "finetune_lr": 3e-3,
        "finetune_options": {
            "model": {"temporal_residual": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "optim": {"freeze": ["temporal.0."]},
        },
    },
    "residual units + CutMix 0.5, a unit at the deepest level only": {
        "finetune_lr": 3e-3,
        "finetune_options": {
            "model": {"temporal_residual": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "optim": {"freeze": ["temporal.0.", "temporal.1."]},
        },
    },
    # The same with the fine-tuning steps that a model with one unit would get at the demo's FLOPs: each level's
    # unit costs the same FLOPs at 64x128 (c^2 x pixels is constant), so one unit makes the temporal step 1.153x
    # a per-frame step instead of 1.459x, and 240 x 1.459 / 1.153 = 304 steps (`--minutes 4` only).
    "residual units + CutMix 0.5, a unit at the deepest level only, 304 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 304},
        "finetune_options": {
            "model": {"temporal_residual": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "optim": {"freeze": ["temporal.0.", "temporal.1."]},
        },
    },
    # The real option: one unit, on level 2 (model.temporal_levels); the same step count as the row above, which is
    # now equal FLOPs without emulation.
    "residual units + CutMix 0.5, temporal_levels [2], 304 steps": {  # 759 at --minutes 10 (600 x 1.459 / 1.153)
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 304, 10.0: 759},
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_levels": [2]},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    "residual units + CutMix 0.5, temporal_levels [1, 2], 268 steps": {  # 240 x 1.459 / 1.306; 670 at --minutes 10
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 268, 10.0: 670},
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_levels": [1, 2]},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    # Gated units: residual cGRU twins (the candidate's input path starts at zero, so the state stays 0 and training
    # starts from the per-frame model's exact logits). A cGRU unit costs more than a cRNN one: the temporal step is
    # 2.503x a per-frame step with units on every level, 1.501x with one on level 2 (`training_flops` at 64x128),
    # so equal FLOPs give 240 x 1.459 / 2.503 = 140 and 240 x 1.459 / 1.501 = 233 steps at --minutes 4.
    "residual cGRU units + CutMix 0.5, 140 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 140, 10.0: 350},
        "finetune_options": {
            "model": {"name": "vanilla-cgru-small-shallow", "temporal_residual": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    "residual cGRU units + CutMix 0.5, temporal_levels [2], 233 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 233, 10.0: 583},
        "finetune_options": {
            "model": {"name": "vanilla-cgru-small-shallow", "temporal_residual": True, "temporal_levels": [2]},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    # The per-frame network frozen after pre-training: only the units learn, so they cannot trade the per-frame
    # features for memory. Same steps as the demo (its frozen backward is cheaper: at most equal FLOPs).
    "residual units + CutMix 0.5, per-frame weights frozen": {
        "finetune_lr": 3e-3,
        "finetune_options": {
            "model": {"temporal_residual": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "optim": {"freeze": ["encoder.", "decoder.", "head."]},
        },
    },
    # Nearly free units: 1x1 kernels (model.temporal_kernel) make a temporal step 1.051x a per-frame step instead of
    # 1.459x, so equal FLOPs give 240 x 1.459 / 1.051 = 333 fine-tuning steps (833 at --minutes 10).
    "residual units + CutMix 0.5, 1x1 units, 333 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 333, 10.0: 833},
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    # Gated residual skips (model.temporal_gate): x + g * h, g from a 1x1 convolution of [x, h], so a clean frame can
    # shut memory out of its skip. The gates make a temporal step 1.515x a per-frame step (1.107x with 1x1 units),
    # so equal FLOPs give 240 x 1.459 / 1.515 = 231 steps (316 with 1x1 units).
    "residual units + CutMix 0.5, skip gates, 231 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 231, 10.0: 578},
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_gate": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    "residual units + CutMix 0.5, 1x1 units, skip gates, 316 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 316, 10.0: 791},
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1, "temporal_gate": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    # Corrupted frames' cross-entropy down-weighted (loss.corrupted_weight): memory can win back far more loss on a
    # corrupted frame than on a clean one, so the units' training leans to corrupted frames at clean ones' cost.
    "residual units + CutMix 0.5, corrupted frames' loss x0.3": {
        "finetune_lr": 3e-3,
        "finetune_options": {
            "model": {"temporal_residual": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.3},
        },
    },
    "residual units + CutMix 0.5, skip gates, corrupted frames' loss x0.3, 231 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 231, 10.0: 578},
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_gate": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.3},
        },
    },
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.3, 333 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 333, 10.0: 833},
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.3},
        },
    },
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.5, 333 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 333, 10.0: 833},
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.5},
        },
    },
    # Less per-frame pre-training: 1x1 units add 5% to a per-frame step, so the fine-tuning run is nearly a
    # per-frame run with memory; the schedule gives the 3x3 cRNN budget of the share to 1x1 steps.
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.5, pre-training share 0.3": {
        "pretrain_share": 0.3,
        "finetune_lr": 3e-3,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.5},
        },
    },
    # Longer training windows: the held-out sequences run the state for 24 frames, training for 5. A window of 8
    # frames costs 8/5 of a 5-frame step, so equal FLOPs give 333 x 5 / 8 = 208 steps (521 at --minutes 10).
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.5, 8-frame windows, 208 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 208, 10.0: 521},
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}, "num_frames": 8},
            "loss": {"corrupted_weight": 0.5},
        },
    },
    # One schedule instead of two: the pre-training run holds its rate after the warm-up (no decay), the fine-tuning
    # run decays it; with the two cosine cycles, the per-frame continuation itself ends below the baseline.
    "per-frame continuation + CutMix 0.5, 875 steps, pre-training holds its rate": {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_steps": {4.0: 350, 10.0: 875},
        "finetune_options": {
            "model": {"name": "vanilla-none-small-shallow"},
            "train": {"init_temporal": "default"},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.5, pre-training holds its rate": {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.5},
        },
    },
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.3, pre-training holds its rate": {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.3},
        },
    },
    # The demo's recipe with frame skipping in fine-tuning: clips whose frames lie 1 to 3 apart show the units larger
    # motion, so that memory of a moving object (person) is stale more often in training than in the 1-apart clips.
    (
        "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.3, frame skip 1-3, "
        "pre-training holds its rate"
    ): {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}, "frame_stride": [1, 3]},
            "loss": {"corrupted_weight": 0.3},
        },
    },
    # The demo's recipe with the state motion-compensated before each unit (the model's own motion field, see
    # ``StateWarp``): memory of a moving object follows it instead of staying where it was (person, traffic sign).
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.3, warped state, pre-training holds its rate": {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1, "warp_state": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.3},
        },
    },
    # Both: the warp learns from the larger motion of clips whose frames lie 1 to 3 apart.
    (
        "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.3, warped state, frame skip 1-3, "
        "pre-training holds its rate"
    ): {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1, "warp_state": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}, "frame_stride": [1, 3]},
            "loss": {"corrupted_weight": 0.3},
        },
    },
    # The demo's recipe with corrupted frames' pixels not weighted by class: under class-weighted cross-entropy the
    # best guess on a frame the model cannot read leans to the heavily weighted rare classes (person, traffic sign),
    # and those false positives count against every frame in the pooled IoU.
    (
        "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.3, not class-weighted, warped state, "
        "frame skip 1-3, pre-training holds its rate"
    ): {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1, "warp_state": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}, "frame_stride": [1, 3]},
            "loss": {"corrupted_weight": 0.3, "corrupted_class_weights": False},
        },
    },
    # The same without class weights on corrupted frames, with them weighing 0.5: what the corrupted frames lose
    # when rare-class guesses stop paying, given back by a larger share of the loss.
    (
        "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.5, not class-weighted, warped state, "
        "frame skip 1-3, pre-training holds its rate"
    ): {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1, "warp_state": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}, "frame_stride": [1, 3]},
            "loss": {"corrupted_weight": 0.5, "corrupted_class_weights": False},
        },
    },
    # ... or without frame skipping, which cost the warped state corrupted frames (the warp alone: the best
    # corrupted and all-frames margins, but short on traffic sign and person).
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.3, not class-weighted, warped state, "
    "pre-training holds its rate": {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1, "warp_state": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.3, "corrupted_class_weights": False},
        },
    },
    # The same with milder skipping (frames 1 or 2 apart).
    (
        "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.3, warped state, frame skip 1-2, "
        "pre-training holds its rate"
    ): {
        "finetune_lr": 3e-3,
        "pretrain_final_lr_scale": 1.0,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1, "warp_state": True},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}, "frame_stride": [1, 2]},
            "loss": {"corrupted_weight": 0.3},
        },
    },
    # A control: units that learn from clean frames alone (corrupted frames carry no loss, only the state goes through
    # them). What units cost clean frames when the corrupted frames do not compete for the shared weights.
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0": {
        "finetune_lr": 3e-3,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.0},
        },
    },
    # Corrupted frames train what reads the encoder's features (units, decoder, head) but not the encoder: the units
    # keep the corrupted frames' signal, the per-frame path's features learn from clean frames (as in the baseline,
    # where corrupted frames train the encoder too).
    "residual units + CutMix 0.5, 1x1 units, corrupted frames' loss x0.5, no encoder gradient from corrupted frames": {
        "finetune_lr": 3e-3,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_weight": 0.5, "corrupted_encoder_gradient": 0.0},
        },
    },
    "residual units + CutMix 0.5, 1x1 units, no encoder gradient from corrupted frames": {
        "finetune_lr": 3e-3,
        "finetune_options": {
            "model": {"temporal_residual": True, "temporal_kernel": 1},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
            "loss": {"corrupted_encoder_gradient": 0.0},
        },
    },
    # Controls: the per-frame twin trained on after pre-training, with the fine-tuning run's restarted schedule and
    # rate, for the steps that the demo's fine-tuning FLOPs buy a per-frame model (680 - 330 = 350; 875 at
    # --minutes 10). What the per-frame path would learn from the restart alone, without units.
    "per-frame continuation + CutMix 0.5, 350 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 350, 10.0: 875},
        "finetune_options": {
            "model": {"name": "vanilla-none-small-shallow"},
            "train": {"init_temporal": "default"},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    # The same for as many steps as the gated units get (231): what the per-frame path would learn in those steps
    # without units (at two thirds of their FLOPs).
    "per-frame continuation + CutMix 0.5, 231 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 231, 10.0: 578},
        "finetune_options": {
            "model": {"name": "vanilla-none-small-shallow"},
            "train": {"init_temporal": "default"},
            "data": {"mixup": {"kind": "cutmix", "prob": 0.5}},
        },
    },
    "per-frame continuation, 350 steps": {
        "finetune_lr": 3e-3,
        "finetune_steps": {4.0: 350, 10.0: 875},
        "finetune_options": {"model": {"name": "vanilla-none-small-shallow"}, "train": {"init_temporal": "default"}},
    },
}
THIN_CLASSES = ("pole", "traffic sign", "person")


def figures(evaluation: EvaluationResults) -> tuple[float, ...]:
    """mIoU all, clean and corrupted, TC, mVC_8 and the thin classes' IoU (all frames), in percent (NaN where
    undefined)."""
    results = ModelResults.of(evaluation)
    values = (
        results.all_frames.miou,
        results.corruption.clean.miou,
        results.corruption.corrupted.miou,
        results.tc,
        evaluation.mvc_8,
        *(results.all_frames.iou.get(name) for name in THIN_CLASSES),
    )
    return tuple(math.nan if value is None else 100 * value for value in values)


def differences(ran: dict, planned: dict, prefix: str = "") -> list[str]:
    """The config keys whose values differ, other than paths (``data.root``, ``train.init_from``)."""
    found = []
    for key in sorted(set(ran) | set(planned)):
        name = f"{prefix}{key}"
        if name in ("data.root", "train.init_from"):
            continue
        if isinstance(ran.get(key), dict) and isinstance(planned.get(key), dict):
            found += differences(ran[key], planned[key], f"{name}.")
        elif ran.get(key) != planned.get(key):
            found.append(f"{name}: {ran.get(key)!r} ran, {planned.get(key)!r} planned")
    return found


def link(target: Path, name: Path) -> None:
    if not name.exists():
        name.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target.resolve(), name)


def pretrain_run(demo: DemoPlan, plan: DemoPlan, work: Path) -> Path:
    """The pre-training run that ``plan`` starts from: the demo's own when its config is the same (step count and
    schedule), else one shared by the variants that plan the same run."""
    steps = plan.steps["pretrain"]
    if not differences(demo.config("pretrain"), plan.config("pretrain")):
        return demo.run_dir("pretrain")
    held = "" if plan.pretrain_final_lr_scale == 0 else f"-final-lr-{plan.pretrain_final_lr_scale:g}"
    shared = DemoPlan.create(work / f"pretrain-{steps}{held}", seed=demo.seed, minutes=demo.minutes)
    shared.pretrain_share = plan.pretrain_share
    shared.pretrain_final_lr_scale = plan.pretrain_final_lr_scale
    shared.steps = plan.steps
    if not (shared.run_dir("pretrain") / "evaluation.json").is_file():
        link(demo.data_root, shared.data_root)
        print(f"pre-training {steps} steps", flush=True)
        train_run(shared, "pretrain", log=lambda *_: None)
        evaluate_run(shared, "pretrain")
    return shared.run_dir("pretrain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", required=True, help="output folder of a finished `vidseg demo`")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME",
                        help=f"variants to run (default: all): {'; '.join(VARIANTS)}")
    parser.add_argument("--reuse", action="store_true", help="keep variants evaluated by an earlier run of this script")
    parser.add_argument("--name", help="result file name under benchmarks/results (default: demo_recipes_seed<S>, "
                        "with _minutes<M> at another budget than 10)")
    args = parser.parse_args()

    summary = json.loads((Path(args.demo) / "results.json").read_text())
    demo = DemoPlan.create(args.demo, seed=summary["plan"]["seed"], minutes=summary["plan"]["minutes"])
    demo.finetune_options = summary["plan"].get("finetune_options", {})  # the recipe it ran (older demos: plain cRNN)
    demo.pretrain_final_lr_scale = summary["plan"].get("pretrain_final_lr_scale", 0.0)  # older demos decayed it
    demo.steps = demo.schedule()
    if demo.steps != summary["plan"]["steps"]:
        raise SystemExit(f"{args.demo} was run with steps {summary['plan']['steps']}, this code plans {demo.steps}")
    work = Path(args.demo) / "recipes"

    def evaluation(run_dir: Path) -> EvaluationResults:
        return read_results(run_dir / "evaluation.json")

    demo_optim = yaml.safe_load((demo.out / "configs" / "finetune.yaml").read_text())["optim"]
    baseline = figures(evaluation(demo.run_dir("baseline")))
    rows = [
        ("per-frame baseline, the demo's run", demo.steps["baseline"], "-", baseline),
        (
            f"temporal, the demo's run: fine-tuning rate {demo_optim['lr']:g}",
            f"{demo.steps['pretrain']} + {demo.steps['finetune']}",
            demo.steps["baseline"],
            figures(evaluation(demo.run_dir("finetune"))),
        ),
    ]
    pretrain_rows = {}
    for name in args.variants:
        plan = DemoPlan.create(work / name.replace(" ", "_"), seed=demo.seed, minutes=demo.minutes)
        variant = {**SCREENED_BEFORE, **VARIANTS[name]}
        # Fine-tuning steps worked out for one demo budget (--minutes), replacing the equal-FLOPs schedule's count.
        finetune_steps = variant.pop("finetune_steps", None)
        if finetune_steps is not None and demo.minutes not in finetune_steps:
            raise SystemExit(f"variant {name!r} has step counts for --minutes {list(finetune_steps)} only")
        for key, value in variant.items():
            setattr(plan, key, value)
        plan.steps = plan.schedule()
        if finetune_steps is not None:  # the baseline steps that the run's FLOPs now buy follow
            plan.steps["finetune"] = finetune_steps[demo.minutes]
            plan.steps["baseline"] = plan.steps["pretrain"] + round(plan.steps["finetune"] * plan.finetune_cost())
        pretrained = pretrain_run(demo, plan, work)
        if not (pretrained / "evaluation.json").is_file():
            evaluate_run(demo, "pretrain")
        scale = plan.pretrain_final_lr_scale
        held = "" if scale == 0 else f", its rate held (final_lr_scale {scale:g})"
        pretrain_rows[(plan.steps["pretrain"], held)] = figures(evaluation(pretrained))
        if args.reuse and (plan.run_dir("finetune") / "evaluation.json").is_file():
            ran = yaml.safe_load((plan.run_dir("finetune") / "config.yaml").read_text())
            planned = config_from_dict(plan.config("finetune"), source="the plan")
            changed = differences(asdict(config_from_dict(ran, source="the saved run")), asdict(planned))
            if changed:
                raise SystemExit(f"{plan.run_dir('finetune')} ran another config than this code plans "
                                 f"({'; '.join(changed)}): move it away to train it again")
            results = evaluation(plan.run_dir("finetune"))
        else:
            link(demo.data_root, plan.data_root)
            link(pretrained, plan.run_dir("pretrain"))
            print(f"{name}: fine-tuning {plan.steps['finetune']} steps", flush=True)
            train_run(plan, "finetune", log=lambda *_: None)
            evaluate_run(plan, "finetune")
            results = evaluation(plan.run_dir("finetune"))
        steps = f"{plan.steps['pretrain']} + {plan.steps['finetune']}"
        rows.append((f"temporal, {name}", steps, f"{plan.steps['baseline']}", figures(results)))
    for (steps, held), values in sorted(pretrain_rows.items()):
        rows.append((f"its per-frame twin after pre-training alone ({steps} steps{held})", steps, "-", values))

    lines = [
        f"### Temporal recipes on the demo's data, seed {demo.seed} (`--minutes {demo.minutes:g}`)",
        "",
        "mIoU in percent over the held-out frames. Temporal steps: per-frame pre-training + cRNN fine-tuning; "
        "'baseline steps at equal compute' is what the per-frame baseline would get under that schedule "
        f"(the demo's baseline ran {demo.steps['baseline']}).",
        "",
        "| model | steps | baseline steps at equal compute | mIoU all | mIoU clean | mIoU corrupted | TC | mVC_8 | "
        + " | ".join(THIN_CLASSES)
        + " |",
        "|---|---|---|" + "---:|" * (5 + len(THIN_CLASSES)),
    ]
    for name, steps, baseline_steps, values in rows:
        lines.append(f"| {name} | {steps} | {baseline_steps} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    markdown = "\n".join(lines)
    print(markdown)
    # The demo's default budget keeps the historical name; a screen at another budget gets its own file.
    budget = "" if demo.minutes == 10 else f"_minutes{demo.minutes:g}"
    print(f"written to {write_result(args.name or f'demo_recipes_seed{demo.seed}{budget}', markdown)}")


if __name__ == "__main__":
    main()
