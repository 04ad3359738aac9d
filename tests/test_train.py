"""The training loop on tiny generated data: loss, schedule, warm start, activation checkpointing, class
weights, a train -> evaluate -> resume round trip, NaN handling, and every Table 2 config."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import quiet, tiny_config

from vidseg.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from vidseg.cli import main as cli_main
from vidseg.config import load_config
from vidseg.errors import VidsegError
from vidseg.models import REPORT_PARAMS, build_model, count_parameters
from vidseg.train import (
    ClipForward,
    LRSchedule,
    SeededSamples,
    build_datasets,
    class_frequency_weights,
    epoch_batches,
    segmentation_loss,
    train,
    warm_start,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TABLE2 = sorted((CONFIGS / "cityscapes").glob("*.yaml"))





# ------------------------------------------------------------------------------------------------- the loss


def test_loss_on_annotated_or_labelled_frames_equals_direct_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    labels = torch.randint(0, 4, (2, 3, 5, 6))
    labels[0, 1] = 255  # an unlabelled frame
    labels[1, 2, :2] = 255  # ignore pixels on a labelled frame
    labelled = torch.tensor([[True, False, True], [True, True, True]])
    batch = {"labels": labels, "labelled": labelled, "gt_index": torch.tensor([2, 0])}
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5])

    annotated = segmentation_loss(logits, batch, "annotated", None)
    expected = F.cross_entropy(
        torch.stack([logits[0, 2], logits[1, 0]]), torch.stack([labels[0, 2], labels[1, 0]]), ignore_index=255
    )
    torch.testing.assert_close(annotated, expected)

    # Every labelled frame, class-weighted: sum of w[y] * -log p(y) over counted pixels / sum of w[y].
    log_p = logits.log_softmax(dim=2)
    numerator, denominator = 0.0, 0.0
    for b in range(2):
        for t in range(3):
            if not labelled[b, t]:
                continue
            for y in range(5):
                for x in range(6):
                    c = int(labels[b, t, y, x])
                    if c != 255:
                        numerator -= float(weights[c] * log_p[b, t, c, y, x].detach())
                        denominator += float(weights[c])
    weighted = segmentation_loss(logits, batch, "labelled", weights)
    assert weighted.item() == pytest.approx(numerator / denominator, rel=1e-5)


def test_corrupted_frames_weigh_corrupted_weight_times_a_clean_frame_in_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6)
    labels = torch.randint(0, 4, (2, 3, 5, 6))
    labels[1, 0, :2] = 255
    corruption = torch.tensor([[0, 3, 0], [1, 0, 0]])
    batch = {"labels": labels, "labelled": torch.ones(2, 3, dtype=torch.bool), "gt_index": torch.tensor([1, 2]),
             "corruption": corruption}
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    # Direct sum: pixel weight = class weight x (corrupted_weight on corrupted frames, 1 on clean ones).
    log_p = logits.log_softmax(dim=2)
    for corrupted_weight in (0.0, 0.3, 2.0):
        numerator = denominator = 0.0
        for b, t in np.ndindex(2, 3):
            frame = corrupted_weight if corruption[b, t] > 0 else 1.0
            for y, x in np.ndindex(5, 6):
                c = int(labels[b, t, y, x])
                if c != 255:
                    numerator -= frame * float(weights[c] * log_p[b, t, c, y, x])
                    denominator += frame * float(weights[c])
        got = segmentation_loss(logits, batch, "labelled", weights, corrupted_weight)
        assert got.item() == pytest.approx(numerator / denominator, rel=1e-5)
    # The annotated frame takes its own frame's weight: sample 0's is corrupted, sample 1's clean.
    plain = segmentation_loss(logits, batch, "annotated", None)
    only_clean = F.cross_entropy(logits[1:, 2], labels[1:, 2], ignore_index=255)
    torch.testing.assert_close(segmentation_loss(logits, batch, "annotated", None, 0.0), only_clean)
    assert segmentation_loss(logits, batch, "annotated", None, 0.0) != plain
    assert segmentation_loss(logits, batch, "annotated", None, 1.0) == plain


def test_loss_of_a_window_without_labels_is_zero_not_nan():
    logits = torch.randn(1, 2, 3, 4, 4, requires_grad=True)
    batch = {
        "labels": torch.full((1, 2, 4, 4), 255),
        "labelled": torch.tensor([[False, True]]),
        "gt_index": torch.tensor([1]),
    }
    for frames in ("annotated", "labelled"):
        loss = segmentation_loss(logits, batch, frames, torch.ones(3))
        loss.backward()
        assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


# ----------------------------------------------------------------------------------------- the LR schedule


def test_cosine_schedule_warms_up_linearly_then_decays_to_the_final_rate():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [parameter], "lr": 1.0}])
    schedule = LRSchedule(optimizer, "cosine", warmup_fraction=0.2, final_lr_scale=0.1)
    expected = {0.0: 0.0, 0.1: 0.5, 0.2: 1.0, 0.6: 0.1 + 0.9 * 0.5, 1.0: 0.1}
    for progress, lr in expected.items():
        schedule.set_progress(progress)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    constant = LRSchedule(torch.optim.Adam([parameter], lr=0.3), "constant", 0.0, 0.0)
    constant.set_progress(0.7)
    assert constant.optimizer.param_groups[0]["lr"] == pytest.approx(0.3)


# ---------------------------------------------------------------------------------------------- data order


def test_epoch_order_is_a_function_of_seed_and_epoch_and_ranks_partition_it():
    one = epoch_batches(10, epoch=3, seed=7, batch_size=3, rank=0, world_size=1)
    assert one == epoch_batches(10, epoch=3, seed=7, batch_size=3, rank=0, world_size=1)
    assert one != epoch_batches(10, epoch=4, seed=7, batch_size=3, rank=0, world_size=1)
    assert sorted(i for batch in one for i in batch) == list(range(10))
    ranks = [epoch_batches(11, epoch=0, seed=7, batch_size=2, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])  # padded so that DDP processes stay in step
    assert set(i for batches in ranks for batch in batches for i in batch) == set(range(11))


def test_seeded_samples_repeat_exactly_and_differ_between_epochs(cityscapes_tree):
    config = tiny_config(cityscapes_tree.root, data={"scale": [0.7, 1.3]})
    train_set, _ = build_datasets(config, with_val=False)
    samples = SeededSamples(train_set, seed=5)
    first = samples[1]
    again = samples[1]
    assert torch.equal(first["frames"], again["frames"]) and first["gt_index"] == again["gt_index"]
    draws = set()
    for epoch in range(6):
        samples.epoch = epoch
        sample = samples[1]
        draws.add((sample["gt_index"], sample["frames"].sum().item()))
    assert len(draws) > 1


# ------------------------------------------------------------------------------------------- warm start


def test_identity_warm_start_reproduces_the_per_frame_logits(tmp_path):
    torch.manual_seed(0)
    per_frame = build_model("vanilla-none-small-shallow", num_classes=19)
    # Non-trivial BatchNorm statistics, so that eval mode is not the identity either.
    per_frame.train()
    with torch.no_grad():
        per_frame(torch.randn(4, 2, 3, 32, 48))
    path = tmp_path / "per_frame.pt"
    save_checkpoint(
        path, {"model_name": "vanilla-none-small-shallow", "num_classes": 19, "model": per_frame.state_dict()}
    )

    temporal = build_model("vanilla-crnn-small-shallow", num_classes=19)
    copied = warm_start(temporal, str(path), "identity", quiet)
    assert len(copied) == len(list(per_frame.parameters()))
    assert not any(name.startswith("temporal.") for name in copied)

    clip = torch.randn(2, 4, 3, 32, 48)
    for mode in ("eval", "train"):
        getattr(per_frame, mode)()
        getattr(temporal, mode)()
        with torch.no_grad():
            expected, _ = per_frame(clip)
            logits, _ = temporal(clip)
        assert torch.equal(logits, expected), mode


def test_warm_start_without_matching_weights_is_an_error(tmp_path):
    other = build_model("convnext-none-original", num_classes=20)
    path = tmp_path / "other.pt"
    save_checkpoint(path, {"model_name": "convnext-none-original", "num_classes": 20, "model": other.state_dict()})
    with pytest.raises(VidsegError, match="no weight of"):
        warm_start(build_model("vanilla-crnn-small-shallow", num_classes=19), str(path), "default", quiet)


def test_copied_weights_train_at_the_scaled_rate(tmp_path, dense_tree):
    per_frame = build_model("vanilla-none-small-shallow", num_classes=19)
    path = tmp_path / "per_frame.pt"
    save_checkpoint(
        path, {"model_name": "vanilla-none-small-shallow", "num_classes": 19, "model": per_frame.state_dict()}
    )
    config = tiny_config(
        dense_tree.root,
        train={"steps": 1, "init_from": str(path), "init_temporal": "identity"},
        optim={"copied_lr_scale": 0.25, "lr": 0.01},
    )
    train(config, tmp_path / "run", log=quiet)
    payload = load_checkpoint(tmp_path / "run" / "last.pt")
    rates = sorted(group["lr"] for group in payload["optimizer"]["param_groups"])
    assert rates == pytest.approx([0.0025, 0.01])
    assert len(payload["copied_parameters"]) == len(list(per_frame.parameters()))


def test_training_crops_are_data_crop_and_evaluation_runs_at_data_size(tmp_path, dense_tree):
    config = tiny_config(dense_tree.root, data={"crop": [8, 16]}, train={"steps": 1}, eval={"every_epochs": 1})
    train_set, val_set = build_datasets(config)
    assert tuple(train_set[0]["frames"].shape[-2:]) == (8, 16)
    assert tuple(train_set[0]["labels"].shape[-2:]) == (8, 16)
    assert tuple(val_set[0]["frames"].shape[-2:]) == (16, 32)
    result = train(config, tmp_path / "run", log=quiet)
    assert result.metrics["val_step"] == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["working_size"] == [16, 32]


def test_frozen_parameters_keep_their_warm_started_values(tmp_path, dense_tree):
    """optim.freeze: residual units frozen at their zero start stay zero (that level passes the per-frame
    feature); the rest trains. A prefix that names nothing is an error, not a silent no-op."""
    per_frame = build_model("vanilla-none-small-shallow", num_classes=19)
    path = tmp_path / "per_frame.pt"
    save_checkpoint(
        path, {"model_name": "vanilla-none-small-shallow", "num_classes": 19, "model": per_frame.state_dict()}
    )
    frozen = ["temporal.0.", "temporal.1."]
    config = tiny_config(
        dense_tree.root,
        model={"temporal_residual": True},
        train={"steps": 3, "init_from": str(path), "init_temporal": "identity"},
        optim={"freeze": frozen, "lr": 0.01},
    )
    train(config, tmp_path / "run", log=quiet)
    weights = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    for name in ("temporal.0.input_conv.weight", "temporal.0.input_conv.bias", "temporal.1.hidden_conv.bias"):
        assert not weights[name].any(), name  # still the zero input path
    assert weights["temporal.2.input_conv.weight"].any()  # the unfrozen level learned
    assert not torch.equal(weights["encoder.0.0.0.weight"], per_frame.state_dict()["encoder.0.0.0.weight"])

    typo = tiny_config(dense_tree.root, optim={"freeze": ["temporal.9."]})
    with pytest.raises(VidsegError, match=r"optim.freeze: 'temporal.9.' names no parameter.*temporal\.0\."):
        train(typo, tmp_path / "typo", log=quiet)
    everything = tiny_config(dense_tree.root, optim={"freeze": ["encoder.", "temporal.", "decoder.", "head."]})
    with pytest.raises(VidsegError, match="freeze every parameter"):
        train(everything, tmp_path / "everything", log=quiet)


# -------------------------------------------------------------------------------- activation checkpointing


@pytest.mark.parametrize("mode", ["step", "stage"])
def test_activation_checkpointing_gives_the_same_gradients_and_statistics(mode):
    torch.manual_seed(0)
    reference = build_model("vanilla-cgru-small-shallow", num_classes=5)
    recomputed = copy.deepcopy(reference)
    recomputed.set_grad_checkpointing(granularity=mode)
    clip = torch.randn(2, 3, 3, 16, 16)
    labels = torch.randint(0, 5, (2, 3, 16, 16))
    batch = {"labels": labels, "labelled": torch.ones(2, 3, dtype=torch.bool), "gt_index": torch.tensor([2, 1])}
    for model in (reference, recomputed):
        loss = segmentation_loss(ClipForward(model)(clip), batch, "labelled", None)
        loss.backward()
    for (name, p), q in zip(reference.named_parameters(), recomputed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
    # The recomputation in backward must not update BatchNorm statistics a second time.
    for (name, b), c in zip(reference.named_buffers(), recomputed.buffers()):
        torch.testing.assert_close(c, b, rtol=0, atol=0, msg=name)


# ------------------------------------------------------------------------------------------- class weights


def test_sqrt_inverse_frequency_weights_equal_an_independent_count(dense_tree):
    from vidseg.distributed import Context

    config = tiny_config(dense_tree.root)
    train_set, _ = build_datasets(config, with_val=False)
    samples = SeededSamples(train_set, seed=0)
    weights = class_frequency_weights(samples, 19, "labelled", 0, 0, Context(0, 1, torch.device("cpu")))
    counts = torch.zeros(19, dtype=torch.float64)
    for index in range(len(samples)):
        labels = samples[index]["labels"]
        counts += torch.bincount(labels[labels != 255], minlength=256)[:19].double()
    seen = counts > 0
    expected = torch.zeros(19, dtype=torch.float64)
    expected[seen] = (counts[seen] / counts.sum()) ** -0.5
    expected[seen] /= expected[seen].mean()
    expected[~seen] = expected[seen].max()
    torch.testing.assert_close(weights, expected.float())
    assert 1 < int(seen.sum()) < 19  # the check covers both seen and unseen classes


# --------------------------------------------------------------------------------- train, evaluate, resume


def test_synthcity_recipe_trains_evaluates_and_resumes(tmp_path, synthcity_root):
    from vidseg.evaluate import evaluate_model

    run = tmp_path / "run"
    # The CPU recipe (bf16, channels_last, class weights, loss on every labelled frame, warm-up + cosine), shrunk.
    recipe = CONFIGS / "synthcity" / "vanilla-crnn-small-shallow.yaml"
    shrink = [
        f"data.root={synthcity_root}",
        "data.size=[16,32]",
        "data.num_frames=3",
        "data.batch_size=2",
        "data.num_workers=0",
        "optim.accumulate=2",
        "train.minutes=null",
        "train.steps=3",
        "train.log_every=1",
        "train.tensorboard=false",
        "eval.every_steps=2",
        "eval.every_epochs=0",
        "eval.num_frames=3",
        "eval.batch_size=2",
    ]
    config = load_config(recipe, shrink)
    assert (config.train.amp, config.train.channels_last, config.loss.frames) == ("bf16", True, "labelled")
    result = train(config, run, log=quiet)
    assert (result.step, result.stopped_by) == (3, "budget")
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl"]
    assert load_config(run / "config.yaml") == config

    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(e["event"], e["step"]) for e in events] == [
        ("train", 1),
        ("train", 2),
        ("eval", 2),
        ("train", 3),
        ("eval", 3),
        ("stop", 3),
    ]
    assert all(math.isfinite(e["loss"]) and e["lr"] > 0 and e["frames_per_s"] > 0 for e in events[:2])

    last = load_checkpoint(run / "last.pt")
    for key in ("model", "optimizer", "scheduler", "step", "epoch", "config", "metrics", "rng", "normalization"):
        assert key in last
    assert last["step"] == 3 and last["rng"]["data_order"]["batches_done"] == 6 and last["epoch"] == 0
    assert last["label_set"] == "cityscapes" and last["num_classes"] == 19

    # best.pt is the evaluation with the highest mIoU, and its figure is what evaluate_model says of its weights.
    evals = [e for e in events if e["event"] == "eval"]
    best = load_checkpoint(run / "best.pt")
    best_event = max(evals, key=lambda e: e["miou"])
    assert best["step"] == best_event["step"]
    _, val_set = build_datasets(config)
    # Same layout and precision as in training, so that the figures must agree exactly.
    best_model = model_from_checkpoint(best).to(memory_format=torch.channels_last)
    again = evaluate_model(best_model, val_set, amp="bf16", batch_size=2, tc=False, progress=False)
    assert again.miou == pytest.approx(best_event["miou"], abs=1e-9)
    assert again.mode == "stream" and again.frames_scored == 6  # every frame of the 6-frame val sequence

    # Resume with a larger budget: it continues at step 4 and keeps the run's class weights.
    extended = load_config(run / "config.yaml", ["train.steps=5"])
    resumed = train(extended, run, resume=True, log=quiet)
    assert resumed.step == 5
    final = load_checkpoint(run / "last.pt")
    torch.testing.assert_close(final["class_weights"], last["class_weights"])
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # The first session's "stop" event came after its last checkpoint and is gone.
    assert [(e["event"], e["step"]) for e in events[5:]] == [
        ("train", 4),
        ("eval", 4),
        ("train", 5),
        ("eval", 5),
        ("stop", 5),
    ]

    with pytest.raises(VidsegError, match="already holds a run"):
        train(config, run, log=quiet)


def test_cli_trains_a_config_with_overrides(tmp_path, cityscapes_tree, capsys):
    config = tmp_path / "per-frame.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "vanilla-none-small-shallow"},
                "data": {"root": str(cityscapes_tree.root), "num_frames": 1, "size": [16, 32]},
                "train": {"epochs": 1, "tensorboard": False},
                "eval": {"num_frames": 1},
            }
        )
    )
    run = tmp_path / "run"
    assert cli_main(["train", str(config), "--set", "data.batch_size=2", "--out", str(run)]) == 0
    payload = load_checkpoint(run / "last.pt")
    # 6 training samples in batches of 2: one epoch is 3 steps; evaluated once at the end of the epoch.
    assert (payload["step"], payload["epoch"], payload["rng"]["data_order"]["batches_done"]) == (3, 1, 0)
    assert payload["metrics"]["val"]["windows"] == 6
    assert (run / "best.pt").is_file()

    assert cli_main(["train", str(config), "--set", "train.stepz=1"]) == 2
    assert "unknown key 'train.stepz'" in capsys.readouterr().err
    assert cli_main(["train", str(config), "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_wall_clock_budget_stops_training_and_evaluates(tmp_path, dense_tree):
    config = tiny_config(
        dense_tree.root,
        train={"steps": None, "minutes": 0.001},
        optim={"schedule": "cosine"},
        eval={"every_epochs": 5, "max_samples": 2},
    )
    result = train(config, tmp_path / "run", log=quiet)
    assert result.stopped_by == "budget" and 1 <= result.step < 18  # 18 steps would be one epoch
    assert result.metrics["val_step"] == result.step  # a final evaluation, although no epoch ended
    # The schedule measures progress by the time budget, and reached its end.
    assert load_checkpoint(tmp_path / "run" / "last.pt")["scheduler"]["progress"] == 1.0


def test_fp16_on_cpu_is_refused(tmp_path, dense_tree):
    with pytest.raises(VidsegError, match="fp16 needs a CUDA device"):
        train(tiny_config(dense_tree.root, train={"amp": "fp16", "device": "cpu"}), tmp_path / "run", log=quiet)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, dense_tree):
    run = tmp_path / "run"
    config = tiny_config(dense_tree.root, train={"steps": 6, "checkpoint_every": 1}, optim={"lr": 1e30})
    with pytest.raises(VidsegError) as caught:
        train(config, run, log=quiet)
    message = str(caught.value)
    assert "loss became" in message and "at step" in message and "checkpoints in" in message
    failed_step = int(message.split("at step ")[1].split()[0])
    assert f"newest at step {failed_step - 1}" in message
    kept = load_checkpoint(run / "last.pt")
    assert kept["step"] == failed_step - 1
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "nonfinite" and events[-1]["step"] == failed_step


# ----------------------------------------------------------------------------------------- Table 2 configs


def test_there_is_one_config_per_table2_row():
    names = {load_config(path).model.name for path in TABLE2}
    assert len(TABLE2) == 10 and len(names) == 10
    # Table 2's "ResNet small deep cRNN, 760,420" is the ConvNeXt small-deep cRNN.
    assert "convnext-crnn-small-deep" in names and "resnet-crnn-small-deep" not in names


@pytest.mark.parametrize("path", TABLE2, ids=[p.stem for p in TABLE2])
def test_table2_config_builds_the_published_model_and_trains_a_step(tmp_path, cityscapes_tree, path):
    config = load_config(path)
    assert (config.optim.name, config.optim.lr, config.optim.betas, config.optim.eps) == (
        "adam",
        3e-4,
        [0.9, 0.999],
        1e-8,
    )
    assert config.optim.weight_decay == 0.0 and config.data.label_set == "report" and config.data.size == [512, 1024]
    assert config.train.epochs == 100 and config.optim.accumulate > 1
    temporal = "-none-" not in config.model.name
    assert config.data.num_frames == (5 if temporal else 1) and config.data.gt_position == "random"
    assert (config.eval.num_frames, config.eval.gt_position) == ((12, "last") if temporal else (1, "last"))
    model = build_model(config.model.name, num_classes=20)
    assert count_parameters(model) == REPORT_PARAMS[config.model.name]

    run = tmp_path / "run"
    overrides = [
        f"data.root={cityscapes_tree.root}",
        "data.size=[16,32]",
        "data.num_frames=2",
        "data.num_workers=0",
        "optim.accumulate=1",
        "train.epochs=null",
        "train.steps=1",
        "train.tensorboard=false",
        "eval.every_epochs=0",
    ]
    assert cli_main(["train", str(path), "--out", str(run), *[f"--set={o}" for o in overrides]]) == 0
    payload = load_checkpoint(run / "last.pt")
    assert payload["step"] == 1 and payload["num_classes"] == 20 and payload["model_name"] == config.model.name
    assert count_parameters(model_from_checkpoint(payload)) == REPORT_PARAMS[config.model.name]


def test_tensorboard_logs_the_same_scalars_as_metrics_jsonl(tmp_path, cityscapes_tree):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny_config(cityscapes_tree.root, train={"steps": 3, "tensorboard": True}), run, log=quiet)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {e["step"]: e["loss"] for e in events if e["event"] == "train"}
    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    scalars = {s.step: s.value for s in board.Scalars("train/loss")}
    assert sorted(scalars) == sorted(logged) == [1, 2, 3]
    for step, loss in logged.items():
        assert scalars[step] == pytest.approx(loss, rel=1e-6)


def test_tensorboard_missing_is_said_once_and_training_goes_on(tmp_path, cityscapes_tree, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    messages = []
    run = tmp_path / "run"
    result = train(tiny_config(cityscapes_tree.root, train={"tensorboard": True}), run, log=messages.append)
    assert result.step == 2
    notes = [m for m in messages if "TensorBoard is not installed" in m]
    assert len(notes) == 1 and "train.tensorboard=false" in notes[0]
    assert not (run / "tensorboard").exists() and (run / "metrics.jsonl").is_file()


def test_corrupted_frames_without_class_weights_keep_their_total_weight_spread_evenly():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, 6)
    labels = torch.randint(0, 4, (2, 3, 5, 6))
    labels[0, 1, :3] = 255
    corruption = torch.tensor([[0, 3, 0], [1, 0, 0]])
    batch = {"labels": labels, "labelled": torch.ones(2, 3, dtype=torch.bool), "gt_index": torch.tensor([1, 2]),
             "corruption": corruption}
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    # Direct sum: a clean frame's pixel weighs its class weight; a corrupted frame's pixel weighs corrupted_weight
    # x the mean class weight of that frame's labelled pixels.
    log_p = logits.log_softmax(dim=2)
    for corrupted_weight in (1.0, 0.3):
        numerator = denominator = 0.0
        for b, t in np.ndindex(2, 3):
            frame_classes = [int(c) for c in labels[b, t].flatten() if c != 255]
            frame_mean = sum(float(weights[c]) for c in frame_classes) / len(frame_classes)
            for y, x in np.ndindex(5, 6):
                c = int(labels[b, t, y, x])
                if c == 255:
                    continue
                weight = corrupted_weight * frame_mean if corruption[b, t] > 0 else float(weights[c])
                numerator -= weight * float(log_p[b, t, c, y, x])
                denominator += weight
        got = segmentation_loss(logits, batch, "labelled", weights, corrupted_weight, corrupted_class_weights=False)
        assert got.item() == pytest.approx(numerator / denominator, rel=1e-5)
        class_weighted = segmentation_loss(logits, batch, "labelled", weights, corrupted_weight)
        assert got.item() != pytest.approx(class_weighted.item())
    # Without class weights there is nothing to drop: the loss is the plain one.
    torch.testing.assert_close(
        segmentation_loss(logits, batch, "labelled", None, 1.0, corrupted_class_weights=False),
        segmentation_loss(logits, batch, "labelled", None),
    )
