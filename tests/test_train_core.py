"""The training core's parts: the checkpoint schema (TrainState), the budget, stop reasons, the named step
all-reduce, activation checkpointing as a deepcopy-safe model flag, and the loss-term hook with its
temporal-consistency term."""

from __future__ import annotations

import copy
import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch
from helpers import quiet, tiny_config

import vidseg.train as train_module
from vidseg.checkpoint import TrainState, load_checkpoint
from vidseg.config import LossConfig
from vidseg.data.transforms import normalize
from vidseg.errors import VidsegError
from vidseg.models import build_model
from vidseg.train import Budget, StepReport, StopReason, train
from vidseg.training.losses import Criterion, TemporalConsistencyLoss, segmentation_loss
from vidseg.training.run_dir import checkpoint_due

# The keys of a training checkpoint as vidseg wrote them before TrainState existed (docs/design.md): a file
# written before loads after, and vice versa.
PAYLOAD_KEYS = [
    "format", "model_name", "num_classes", "label_set", "label_set_spec", "working_size", "model", "normalization",
    "config", "optimizer", "scheduler", "scaler", "step", "epoch", "metrics", "rng", "train_seconds",
    "class_weights", "copied_parameters", "log_events",
]





# ------------------------------------------------------------------------------------------ the checkpoint


def test_a_training_checkpoint_holds_exactly_the_schema_keys_and_round_trips(tmp_path, dense_tree):
    train(tiny_config(dense_tree.root), tmp_path / "run", log=quiet)
    payload = load_checkpoint(tmp_path / "run" / "last.pt")
    assert list(payload) == PAYLOAD_KEYS
    assert sorted(TrainState.KEYS) == sorted(f.name for f in dataclasses.fields(TrainState))
    state = TrainState.load(tmp_path / "run" / "last.pt")
    assert state.missing_for_training() == [] and state.step == 2 and state.data_order["batches_done"] == 2
    state.save(tmp_path / "again.pt")
    again = load_checkpoint(tmp_path / "again.pt")
    assert list(again) == PAYLOAD_KEYS
    for key in ("model_name", "num_classes", "step", "epoch", "metrics", "config", "log_events"):
        assert again[key] == payload[key], key
    for name, tensor in payload["model"].items():
        assert torch.equal(again["model"][name], tensor), name


def test_an_older_checkpoint_without_the_newer_keys_loads_for_inference_and_says_what_training_lacks(tmp_path):
    model = build_model("vanilla-none-small-shallow", num_classes=20)
    old = {"model_name": "vanilla-none-small-shallow", "num_classes": 20, "model": model.state_dict(), "step": 3}
    state = TrainState.from_payload({"format": "vidseg-checkpoint-v1", **old})
    assert state.normalization is None and state.mean_std()[0] == pytest.approx([0.485, 0.456, 0.406])
    assert state.predicted_label_set().name == "report"  # 20 classes, no recorded set
    assert set(state.missing_for_training()) == {"config", "optimizer", "scheduler", "epoch", "rng"}
    rebuilt = state.build_model()
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))
    with pytest.raises(VidsegError, match="lacks"):
        TrainState.from_payload({"model_name": "vanilla-none-small-shallow"})


# ------------------------------------------------------------------------------ budget, stops, checkpoints


def test_budget_progress_is_the_furthest_of_steps_and_epochs_and_says_what_is_spent():
    budget = Budget(steps=100, epochs=2, minutes=None, steps_per_epoch=30)
    assert budget.progress(15) == pytest.approx(0.25)  # epochs: 15 of 60 steps beats steps: 15 of 100
    assert budget.progress(90) == 1.0 and budget.total_steps() == 60
    assert not budget.spent(59, 1)
    assert budget.spent_parts(60, 2) == ["train.epochs=2"]
    assert budget.spent_parts(100, 2) == ["train.steps=100", "train.epochs=2"]
    timed = Budget(steps=None, epochs=None, minutes=1.0, steps_per_epoch=30, earlier_seconds=45.0)
    assert 0.75 <= timed.progress(0) < 0.9 and timed.total_steps() is None and not timed.out_of_time()
    timed.earlier_seconds = 60.0
    assert timed.out_of_time() and timed.spent_parts(0, 0) == ["train.minutes=1"] and timed.minutes_left() == 0.0


def test_stop_reasons_are_the_strings_the_log_has_always_said():
    assert [reason.value for reason in StopReason] == ["budget", "sigterm"]
    assert StopReason.SIGTERM == "sigterm"


def test_last_checkpoint_rule_inside_an_epoch():
    config = tiny_config("/nowhere", train={"checkpoint_every": 3, "keep_checkpoints": True}).train
    assert [checkpoint_due(step, False, config) for step in (1, 3)] == [(False, False), (True, True)]
    assert checkpoint_due(4, True, config) == (True, False)
    config.keep_checkpoints = False
    assert checkpoint_due(6, False, config) == (True, False)


def test_the_step_report_sums_each_field_by_name():
    report = StepReport(loss=0.5, nonfinite=0.0, stop_requested=1.0, out_of_time=0.0)
    summed = report.summed_over_processes(torch.device("cpu"))  # one process: the sum is the value
    assert summed == report
    assert [f.name for f in dataclasses.fields(summed)] == ["loss", "nonfinite", "stop_requested", "out_of_time"]


def test_step_report_fields_come_back_by_name_from_the_all_reduce(monkeypatch):
    # Another process reported other values: each field must come back as the sum of its own values, whatever
    # order the fields travel in.
    other = {"loss": 0.25, "nonfinite": 2.0, "stop_requested": 0.0, "out_of_time": 3.0}
    travelled: list[torch.Tensor] = []

    def sum_with_other_process(values: torch.Tensor) -> torch.Tensor:
        travelled.append(values.clone())
        names = [f.name for f in dataclasses.fields(StepReport)]
        return values + torch.tensor([other[name] for name in names], dtype=values.dtype)

    monkeypatch.setattr(train_module, "all_reduce_sum", sum_with_other_process)
    summed = StepReport(loss=0.5, nonfinite=0.0, stop_requested=1.0, out_of_time=0.0).summed_over_processes(
        torch.device("cpu")
    )
    assert len(travelled) == 1, "one all-reduce per step"
    assert summed == StepReport(loss=0.75, nonfinite=2.0, stop_requested=1.0, out_of_time=3.0)


# ---------------------------------------------------------------------------------- activation checkpointing


@pytest.mark.parametrize("granularity", ["step", "stage"])
def test_a_deep_copy_of_a_checkpointed_model_runs_its_own_stages(granularity):
    """An EMA copy: the copy's forward must use the copy's weights and put gradients on the copy only (a
    ``stage.forward`` patched with a closure over the original stage fails both)."""
    torch.manual_seed(0)
    model = build_model("vanilla-cgru-small-shallow", num_classes=5)
    model.set_grad_checkpointing(granularity=granularity)
    twin = copy.deepcopy(model)
    assert twin.grad_checkpointing == granularity
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    plain_twin = copy.deepcopy(twin)
    plain_twin.set_grad_checkpointing(False)
    clip = torch.randn(2, 3, 3, 16, 16)
    logits, _ = twin(clip)
    logits.square().mean().backward()
    torch.testing.assert_close(logits, plain_twin(clip)[0], rtol=0, atol=0)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert all(parameter.grad is not None for parameter in twin.parameters())


def test_grad_checkpointing_granularity_is_checked():
    with pytest.raises(ValueError, match="granularity"):
        build_model("vanilla-cgru-small-shallow", num_classes=5).set_grad_checkpointing(granularity="layer")


# ------------------------------------------------------------------------------------- the loss-term hook

HEIGHT, WIDTH = 32, 48


def textured(width: int, seed: int) -> np.ndarray:
    """An RGB frame of smooth random texture that optical flow can follow, ``[HEIGHT, width, 3]`` uint8."""
    noise = (np.random.default_rng(seed).random((HEIGHT, width, 3)) * 255).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 1.5)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def clip_of(images: list[np.ndarray]) -> torch.Tensor:
    """Normalised frames ``[1, T, 3, H, W]`` of uint8 images."""
    return normalize(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))[None]


def smooth_logits(width: int, seed: int, classes: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, classes, HEIGHT // 8, width // 8, generator=generator) * 3
    return torch.nn.functional.interpolate(coarse, size=(HEIGHT, width), mode="bilinear", align_corners=False)[0]


def test_zero_weight_gives_bitwise_the_segmentation_loss_and_a_weight_adds_the_term():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, HEIGHT, WIDTH)
    batch = {
        "frames": clip_of([textured(WIDTH, t) for t in range(3)]).expand(2, -1, -1, -1, -1),
        "labels": torch.randint(0, 5, (2, 3, HEIGHT, WIDTH)),
        "labelled": torch.ones(2, 3, dtype=torch.bool),
        "gt_index": torch.tensor([2, 1]),
    }
    weights = torch.rand(5) + 0.5
    plain = segmentation_loss(logits, batch, "labelled", weights)
    assert torch.equal(Criterion(LossConfig(frames="labelled"), weights)(logits, batch), plain)
    weighted = Criterion(LossConfig(frames="labelled", temporal_consistency=0.5), weights)(logits, batch)
    term = TemporalConsistencyLoss()(logits, batch)
    assert term > 0
    torch.testing.assert_close(weighted, plain + 0.5 * term)


def test_the_criterion_weighs_corrupted_frames_by_the_configured_weight():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, HEIGHT, WIDTH)
    labels = torch.randint(0, 5, (2, 3, HEIGHT, WIDTH))
    corruption = torch.tensor([[0, 2, 0], [0, 0, 5]])
    batch = {"labels": labels, "labelled": torch.ones(2, 3, dtype=torch.bool), "gt_index": torch.tensor([2, 1]),
             "corruption": corruption}
    weights = torch.rand(5) + 0.5
    # Weight 0: the loss of the clean frames alone, as if the corrupted ones were unlabelled.
    clean_only = segmentation_loss(logits, {**batch, "labelled": corruption == 0}, "labelled", weights)
    got = Criterion(LossConfig(frames="labelled", corrupted_weight=0.0), weights)(logits, batch)
    torch.testing.assert_close(got, clean_only)
    everything = Criterion(LossConfig(frames="labelled"), weights)(logits, batch)
    assert not torch.allclose(everything, clean_only)
    # loss.corrupted_class_weights reaches the loss.
    unweighted = segmentation_loss(logits, batch, "labelled", weights, 1.0, corrupted_class_weights=False)
    got = Criterion(LossConfig(frames="labelled", corrupted_class_weights=False), weights)(logits, batch)
    torch.testing.assert_close(got, unweighted)
    assert not torch.allclose(got, everything)


def test_identical_frames_give_zero_for_identical_predictions_and_more_for_differing_ones():
    frame, logits = textured(WIDTH, 0), smooth_logits(WIDTH, 0)
    batch = {"frames": clip_of([frame, frame, frame])}
    term = TemporalConsistencyLoss()
    same = term(torch.stack([logits, logits, logits])[None], batch)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    differing = term(torch.stack([logits, smooth_logits(WIDTH, 1), logits])[None], batch)
    assert float(differing) > 0.05


def test_a_shifted_frame_with_its_prediction_shifted_alike_costs_nearly_nothing():
    shift = 3  # the camera pans right: frame 1 sees the scene 3 px further left
    wide_frame, wide_logits = textured(WIDTH + shift, 2), smooth_logits(WIDTH + 8, 2)[..., : WIDTH + shift]
    frames = clip_of([wide_frame[:, :WIDTH], wide_frame[:, shift:]])
    term = TemporalConsistencyLoss()
    moved = term(torch.stack([wide_logits[..., :WIDTH], wide_logits[..., shift:]])[None], {"frames": frames})
    unmoved = term(torch.stack([wide_logits[..., :WIDTH], wide_logits[..., :WIDTH]])[None], {"frames": frames})
    assert float(unmoved) > 0.01
    assert float(moved) < 0.05 * float(unmoved)
    # The flow points where the pixel was: frame 1's x is frame 0's x + shift, inside the overlap.
    flow, valid = term.flow_to_previous(frames)
    inner = valid[0, 4:-4, 4 : WIDTH - shift - 4]
    assert inner.float().mean() > 0.9
    assert flow[0, 0, 4:-4, 4 : WIDTH - shift - 4][inner].median() == pytest.approx(shift, abs=0.25)


def test_the_term_gradient_reaches_the_model():
    torch.manual_seed(0)
    model = build_model("vanilla-crnn-small-shallow", num_classes=4)
    frames = clip_of([textured(WIDTH + 2, 3)[:, :WIDTH], textured(WIDTH + 2, 3)[:, 2:]])
    logits, _ = model(frames)
    term = TemporalConsistencyLoss()(logits, {"frames": frames})
    term.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(grad is not None and torch.isfinite(grad).all() for grad in grads.values())
    assert grads["head.weight"].abs().sum() > 0 and grads["encoder.0.0.0.weight"].abs().sum() > 0


def test_training_with_the_temporal_term_runs_and_changes_the_loss(tmp_path, dense_tree):
    losses = {}
    for weight in (0.0, 1.0):
        config = tiny_config(dense_tree.root, loss={"temporal_consistency": weight})
        result = train(config, tmp_path / f"w{weight}", log=quiet)
        assert result.stopped_by is StopReason.BUDGET and result.step == 2
        losses[weight] = result.metrics["train"]["loss"]
    assert math.isfinite(losses[1.0]) and losses[1.0] != losses[0.0]


def test_a_negative_term_weight_is_refused():
    with pytest.raises(VidsegError, match="loss.temporal_consistency"):
        tiny_config("/nowhere", loss={"temporal_consistency": -1.0})
