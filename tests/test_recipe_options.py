"""Recipe options of issue 15 on the model side: residual (identity-preserving) temporal units, state dropout and
state warping, and all of them with CutMix in one warm-started training run.

Residual units must reproduce the per-frame twin exactly when they start (fresh or warm-started), keep a bounded
state over long videos, learn away from the identity, and be supported by every inference path (or refused).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import quiet, with_random_batchnorm
from torch import nn

from vidseg.checkpoint import TrainState, model_from_checkpoint, save_checkpoint
from vidseg.config import config_from_dict
from vidseg.errors import VidsegError
from vidseg.models import build_model, count_parameters, optimize_for_inference
from vidseg.models.temporal import ConvGRU, ConvRNN, drop_state, warp, zero_input_path
from vidseg.train import ClipForward, train, warm_start

UNITS = ["crnn", "cgru"]


def randomise_units(model: nn.Module, std: float | None = None, seed: int = 0) -> nn.Module:
    """Give every temporal unit random weights (a residual unit's input path starts at zero)."""
    torch.manual_seed(seed)
    for module in model.temporal.modules():
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()
            if std is not None:
                nn.init.normal_(module.weight, std=std)
                nn.init.normal_(module.bias, std=std)
    return model


# ------------------------------------------------------------------------------------------ residual units


@pytest.mark.parametrize("block", ["vanilla", "resnet", "convnext"])
@pytest.mark.parametrize("unit", UNITS)
def test_residual_model_warm_started_from_per_frame_reproduces_its_logits(tmp_path, block, unit):
    size = "small-deep" if block == "convnext" else "small-shallow"  # convnext exists in deep sizes only
    torch.manual_seed(0)
    per_frame = with_random_batchnorm(build_model(f"{block}-none-{size}", num_classes=7))
    path = tmp_path / "per_frame.pt"
    save_checkpoint(path, {"model_name": f"{block}-none-{size}", "num_classes": 7, "model": per_frame.state_dict()})

    torch.manual_seed(1)
    temporal = build_model(f"{block}-{unit}-{size}", num_classes=7, temporal_residual=True)
    copied = warm_start(temporal, str(path), "default", quiet)
    assert not any(name.startswith("temporal.") for name in copied)

    clip = torch.randn(2, 4, 3, 37, 45)
    for mode in ("eval", "train"):
        per_frame.train(mode == "train")
        temporal.train(mode == "train")
        with torch.no_grad():
            expected, _ = per_frame(clip)
            logits, state = temporal(clip)
        assert torch.equal(logits, expected), mode
        assert all(not h.any() for h in state), "the state of a unit at the identity stays zero"


@pytest.mark.parametrize("unit", UNITS)
def test_identity_init_resets_residual_units_to_the_per_frame_function(tmp_path, unit):
    # With init_temporal=identity even units whose weights were copied from a trained temporal model start over.
    from vidseg.train import identity_init_temporal

    torch.manual_seed(0)
    trained = randomise_units(build_model(f"vanilla-{unit}-small-shallow", num_classes=5, temporal_residual=True))
    path = tmp_path / "temporal.pt"
    name = f"vanilla-{unit}-small-shallow"
    save_checkpoint(path, {"model_name": name, "num_classes": 5, "model": trained.state_dict()})
    model = build_model(name, num_classes=5, temporal_residual=True).eval()
    assert warm_start(model, str(path), "identity", quiet)
    per_frame = build_model("vanilla-none-small-shallow", num_classes=5).eval()
    per_frame.load_state_dict(trained.state_dict(), strict=False)
    clip = torch.randn(1, 3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(clip)[0], per_frame(clip)[0])
        assert not torch.equal(trained.eval()(clip)[0], per_frame(clip)[0])
    config = config_from_dict(
        {"model": {"name": f"vanilla-{unit}-small-shallow", "temporal_residual": True},
         "train": {"steps": 1, "init_temporal": "identity"}}
    )
    assert config.train.init_temporal == "identity"
    identity_init_temporal(model)  # on a fresh model: changes nothing
    with torch.no_grad():
        assert torch.equal(model(clip)[0], per_frame(clip)[0])


@pytest.mark.parametrize("unit", UNITS)
def test_residual_units_change_the_logits_once_their_input_path_moves(unit):
    torch.manual_seed(0)
    per_frame = build_model("vanilla-none-small-shallow", num_classes=5).eval()
    temporal = build_model(f"vanilla-{unit}-small-shallow", num_classes=5, temporal_residual=True).eval()
    temporal.load_state_dict(per_frame.state_dict(), strict=False)
    randomise_units(temporal)
    clip = torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        expected, _ = per_frame(clip)
        logits, _ = temporal(clip)
    assert not torch.allclose(logits, expected)


@pytest.mark.parametrize("unit", UNITS)
def test_residual_model_has_the_plain_models_parameters(unit):
    plain = build_model(f"resnet-{unit}-small-shallow", num_classes=20)
    residual = build_model(f"resnet-{unit}-small-shallow", num_classes=20, temporal_residual=True)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in residual.state_dict().items()}
    assert count_parameters(plain) == count_parameters(residual)


@pytest.mark.parametrize("unit", UNITS)
def test_gradients_reach_the_zeroed_input_path_of_residual_units(unit):
    # A unit that starts at the identity must be able to leave it (a zero-initialised ReLU cRNN could not).
    torch.manual_seed(0)
    model = build_model(f"vanilla-{unit}-small-shallow", num_classes=5, temporal_residual=True)
    logits, _ = model(torch.randn(2, 3, 3, 32, 32))
    logits.square().mean().backward()
    for level, cell in enumerate(model.temporal):
        if unit == "crnn":
            grad = cell.input_conv.weight.grad
        else:
            grad = cell.candidate_conv.weight.grad
            grad = None if grad is None else grad[:, : cell.channels]  # the x half
        assert grad is not None and grad.abs().sum() > 0, level


@pytest.mark.slow
@pytest.mark.parametrize("unit", UNITS)
def test_residual_state_stays_bounded_over_a_1000_frame_stream(unit):
    # Large random weights: a ReLU cRNN with these weights grows without bound; tanh and the cGRU's convex mix
    # keep every state value inside (-1, 1) whatever the frames.
    model = randomise_units(build_model(f"vanilla-{unit}-small-shallow", num_classes=3, temporal_residual=True), 0.5)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    state = None
    largest = 0.0
    with torch.no_grad():
        for _ in range(1000):
            logits, state = model.step(3 * torch.randn(1, 3, 16, 16, generator=generator), state)
            largest = max(largest, max(float(h.abs().max()) for h in state))
            assert all(torch.isfinite(h).all() for h in state) and torch.isfinite(logits).all()
    assert 0 < largest <= 1.0


def test_plain_crnn_with_the_same_weights_is_unbounded():
    # What the residual cRNN's tanh prevents (and why the bound above is not a given).
    model = randomise_units(build_model("vanilla-crnn-small-shallow", num_classes=3), 0.5).eval()
    generator = torch.Generator().manual_seed(0)
    state = None
    with torch.no_grad():
        for _ in range(20):
            _, state = model.step(3 * torch.randn(1, 3, 16, 16, generator=generator), state)
    assert max(float(h.abs().max()) for h in state) > 1e6


def test_zero_input_path_refuses_other_modules():
    with pytest.raises(TypeError, match="ConvRNN or ConvGRU"):
        zero_input_path(nn.Conv2d(3, 3, 3))
    for unit in (ConvRNN(4, residual=True), ConvGRU(4, residual=True)):
        h = None
        for _ in range(3):
            h = unit(torch.randn(1, 4, 6, 6), h)
            assert not h.any()


@pytest.mark.parametrize("unit", UNITS)
def test_fused_inference_copy_supports_residual_units(unit):
    model = build_model(f"resnet-{unit}-small-shallow", num_classes=5, temporal_residual=True)
    model = randomise_units(with_random_batchnorm(model)).eval()
    fused = optimize_for_inference(model, dtype=torch.float32)
    frames = torch.randn(1, 3, 3, 37, 45)
    with torch.no_grad():
        expected, expected_state = model(frames)
        logits, state = fused(frames)
    assert (logits - expected).abs().max() < 1e-4
    for got, want in zip(state, expected_state):
        assert (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("unit", ["crnn", "cgru"])
def test_int8_runs_residual_units(unit):
    """The int8 copy passes x + h on the skips (and the cRNN's tanh): it follows the residual model, not the
    same weights read as plain units."""
    from vidseg.models.quantized import QuantizedUNet, int8_available

    if not int8_available():
        pytest.skip("this PyTorch build lacks oneDNN int8 convolutions")
    torch.manual_seed(0)
    model = build_model(f"vanilla-{unit}-small-shallow", num_classes=5, temporal_residual=True)
    model = randomise_units(with_random_batchnorm(model), std=0.2).eval()  # large enough to saturate tanh
    plain = build_model(f"vanilla-{unit}-small-shallow", num_classes=5).eval()
    plain.load_state_dict(model.state_dict())
    frames = torch.randn(4, 1, 3, 40, 56)
    network = QuantizedUNet(model)
    state = None
    for frame in frames:  # calibration
        _, state = network.step(frame, state)
    network.freeze()
    errors, gaps, state, expected_state, plain_state = [], [], None, None, None
    with torch.no_grad():
        for frame in frames:
            got, state = network.step(frame, state)
            expected, expected_state = model.step(frame, expected_state)
            other, plain_state = plain.step(frame, plain_state)
            span = float(expected.max() - expected.min())
            errors.append(float((got - expected).abs().max()) / span)
            gaps.append(float((other - expected).abs().max()) / span)
    assert max(errors) < 0.1, errors
    assert min(gaps) > 3 * max(errors), (gaps, errors)


def test_checkpoint_rebuilds_the_residual_model_from_its_config():
    model = randomise_units(build_model("vanilla-cgru-small-shallow", num_classes=5, temporal_residual=True)).eval()
    checkpoint = {
        "model_name": "vanilla-cgru-small-shallow",
        "num_classes": 5,
        "model": model.state_dict(),
        "config": {"model": {"name": "vanilla-cgru-small-shallow", "temporal_residual": True, "state_dropout": 0.3}},
    }
    rebuilt = model_from_checkpoint(checkpoint).eval()
    assert rebuilt.temporal_residual
    clip = torch.randn(1, 3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(clip)[0], model(clip)[0])
    # Checkpoints of older versions have no such key: the plain model.
    del checkpoint["config"]
    assert not model_from_checkpoint(checkpoint).temporal_residual


# ------------------------------------------------------------------------------------------- state dropout


def test_drop_state_zeroes_whole_samples_at_every_level_together():
    torch.manual_seed(0)
    state = (torch.rand(64, 2, 4, 4) + 0.1, torch.rand(64, 3, 2, 2) + 0.1)
    dropped = drop_state(state, 0.5)
    kept = [bool(dropped[0][i].any()) for i in range(64)]
    for i in range(64):
        for level in range(2):
            if kept[i]:
                assert torch.equal(dropped[level][i], state[level][i])
            else:
                assert not dropped[level][i].any()
    assert 16 < sum(kept) < 48
    assert all(torch.equal(a, b) for a, b in zip(drop_state(state, 0.0), state))


@pytest.mark.parametrize("unit", UNITS)
def test_state_dropout_in_training_replaces_the_incoming_state_by_zeros(unit):
    torch.manual_seed(0)
    model = build_model(f"vanilla-{unit}-small-shallow", num_classes=5, state_dropout=0.5)
    twin = build_model(f"vanilla-{unit}-small-shallow", num_classes=5)
    twin.load_state_dict(model.state_dict())
    model.eval(), twin.eval()
    frames = torch.randn(6, 2, 3, 16, 16)
    with torch.no_grad():
        _, state = twin.step(frames[:, 0])
        model.train(), twin.train()
        torch.manual_seed(7)
        got, got_state = model.step(frames[:, 1], state)
        torch.manual_seed(7)
        keep = torch.rand(6) >= 0.5  # the draw drop_state makes
        expected_state = tuple(h * keep.reshape(-1, 1, 1, 1) for h in state)
        expected, expected_new = twin.step(frames[:, 1], expected_state)
    assert 0 < int(keep.sum()) < 6
    assert torch.equal(got, expected)
    assert all(torch.equal(a, b) for a, b in zip(got_state, expected_new))


def test_state_dropout_has_no_effect_in_eval_mode():
    torch.manual_seed(0)
    model = build_model("vanilla-crnn-small-shallow", num_classes=5, state_dropout=0.9).eval()
    twin = build_model("vanilla-crnn-small-shallow", num_classes=5).eval()
    twin.load_state_dict(model.state_dict())
    clip = torch.randn(2, 4, 3, 16, 16)
    rng = torch.get_rng_state()
    with torch.no_grad():
        got, _ = model(clip)
    assert torch.equal(torch.get_rng_state(), rng), "eval mode draws nothing"
    with torch.no_grad():
        expected, _ = twin(clip)
    assert torch.equal(got, expected)


def test_state_dropout_in_training_changes_the_logits():
    torch.manual_seed(0)
    model = build_model("vanilla-crnn-small-shallow", num_classes=5, state_dropout=0.5)
    twin = build_model("vanilla-crnn-small-shallow", num_classes=5)
    twin.load_state_dict(model.state_dict())
    clip = torch.randn(4, 4, 3, 16, 16)
    torch.manual_seed(3)
    with torch.no_grad():
        got, _ = model(clip)
        expected, _ = twin(clip)
    assert torch.equal(got[:, 0], expected[:, 0])  # nothing to drop on the first frame
    assert not torch.equal(got, expected)


@pytest.mark.parametrize("mode", ["step", "stage"])
def test_state_dropout_draws_the_same_masks_when_steps_are_recomputed_in_backward(mode):
    # Activation checkpointing runs each step again in backward; the dropout draw must repeat, or the gradients
    # would belong to another forward pass.
    torch.manual_seed(0)
    reference = build_model("vanilla-cgru-small-shallow", num_classes=5, state_dropout=0.5, temporal_residual=True)
    randomise_units(reference)
    recomputed = copy.deepcopy(reference)
    recomputed.set_grad_checkpointing(True, granularity=mode)
    clip = torch.randn(4, 4, 3, 16, 16)
    for model in (reference, recomputed):
        torch.manual_seed(5)
        ClipForward(model)(clip).square().mean().backward()
    for (name, p), q in zip(reference.named_parameters(), recomputed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------------------- state warping


def test_warp_with_zero_flow_is_the_identity_in_bf16_on_wide_frames():
    # bf16 holds integers exactly only up to 256: the pixel grid must not be built in the flow's dtype.
    image = torch.arange(4 * 480, dtype=torch.float32).remainder(97).reshape(1, 1, 4, 480).to(torch.bfloat16)
    flow = torch.zeros(1, 2, 4, 480, dtype=torch.bfloat16)
    # Within one bf16 step of the values (0.5 below 128); a grid built in bf16 moves pixels by up to 2 and turns
    # the last column to 0.
    torch.testing.assert_close(warp(image, flow).float(), image.float(), rtol=0, atol=0.5)


@pytest.mark.parametrize("rank", [0, 1])
def test_state_dropout_under_ddp_keeps_each_process_slice_of_one_global_draw(monkeypatch, rank):
    # Every process seeds the generator alike; each must drop its own samples, not repeat rank 0's masks.
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    state = (torch.ones(8, 2, 3, 3), torch.ones(8, 4, 2, 2))
    torch.manual_seed(11)
    dropped = drop_state(state, 0.5)
    torch.manual_seed(11)
    expected_keep = (torch.rand(16) >= 0.5)[rank * 8 : (rank + 1) * 8]
    for hidden in dropped:
        assert torch.equal(hidden.flatten(1).amax(dim=1) > 0, expected_keep)
    after = torch.rand(1)
    torch.manual_seed(11)
    torch.rand(16)
    assert torch.equal(after, torch.rand(1)), "every process consumes the same draws"


def test_warp_samples_the_image_where_the_flow_points():
    image = torch.arange(20.0).reshape(1, 1, 4, 5)
    flow = torch.zeros(1, 2, 4, 5)
    flow[:, 0] = 1.0  # every pixel's content was one pixel to the right
    shifted = warp(image, flow)
    assert torch.allclose(shifted[..., :-1], image[..., 1:], atol=1e-5)
    assert torch.allclose(shifted[..., -1], image[..., -1], atol=1e-5), "edges replicated"
    flow = torch.zeros(1, 2, 4, 5)
    flow[:, 1] = 0.5  # half a row down: bilinear
    assert torch.allclose(warp(image, flow)[..., :-1, :], image[..., :-1, :] + 2.5, atol=1e-5)


@pytest.mark.parametrize("unit", UNITS)
def test_state_warp_starts_as_the_identity_and_learns(unit):
    torch.manual_seed(0)
    plain = build_model(f"vanilla-{unit}-small-shallow", num_classes=5).eval()
    warping = build_model(f"vanilla-{unit}-small-shallow", num_classes=5, warp_state=True).eval()
    missing, unexpected = warping.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".state_warp.motion." in name for name in missing) and missing
    clip = torch.randn(2, 4, 3, 37, 45)
    with torch.no_grad():
        expected, _ = plain(clip)
        logits, _ = warping(clip)
    assert (logits - expected).abs().max() < 1e-5
    warping.train()
    logits, _ = warping(clip)
    logits.square().mean().backward()
    for level, cell in enumerate(warping.temporal):
        grad = cell.state_warp.motion.weight.grad
        assert grad is not None and grad.abs().sum() > 0, level


def test_fused_copy_int8_and_checkpoints_handle_state_warping():
    from vidseg.models.quantized import QuantizedUNet

    model = build_model("resnet-cgru-small-shallow", num_classes=5, warp_state=True, temporal_residual=True)
    model = randomise_units(with_random_batchnorm(model)).eval()
    fused = optimize_for_inference(model, dtype=torch.float32)
    frames = torch.randn(1, 3, 3, 37, 45)
    with torch.no_grad():
        expected, _ = model(frames)
        logits, _ = fused(frames)
    assert (logits - expected).abs().max() < 1e-4
    # int8: calibration mode is the float model (the warp runs in float32 on the dequantized features) and the
    # frozen copy stays close to it over a short stream, whose later frames go through the warp.
    network = QuantizedUNet(model)
    state = expected_state = None
    for t in range(3):
        got, state = network.step(frames[:, t], state)
        with torch.no_grad():
            want, expected_state = model.step(frames[:, t], expected_state)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    network.freeze()
    state = expected_state = None
    for t in range(3):
        got, state = network.step(frames[:, t], state)
        with torch.no_grad():
            want, expected_state = model.step(frames[:, t], expected_state)
    assert float((got - want).abs().max()) < 0.1 * float(want.max() - want.min())
    checkpoint = {
        "model_name": "resnet-cgru-small-shallow",
        "num_classes": 5,
        "model": model.state_dict(),
        "config": {"model": {"warp_state": True, "temporal_residual": True}},
    }
    rebuilt = model_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(frames)[0], expected)
    del checkpoint["config"]
    with pytest.raises(VidsegError, match="state_warp"):
        model_from_checkpoint(checkpoint)


@pytest.mark.slow
def test_onnx_export_streams_residual_units_state_warping_and_skip_gates_like_pytorch(tmp_path):
    # One export (it takes seconds) for the three options: the cGRU unit itself is unchanged by them, so the cRNN.
    pytest.importorskip("onnxruntime")
    from vidseg.export import export_onnx, run_onnx_sequence

    model = build_model(
        "vanilla-crnn-small-shallow", num_classes=5, temporal_residual=True, warp_state=True, temporal_gate=True
    )
    model = randomise_units(with_random_batchnorm(model), std=0.05).eval()
    path = export_onnx(model, tmp_path / "options.onnx")
    frames = torch.randn(1, 3, 3, 13, 22, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, expected_states = model(frames)
    logits, states = run_onnx_sequence(path, frames.numpy())
    assert np.abs(logits - expected.numpy()).max() < 1e-4 * max(1.0, float(expected.abs().max()))
    for got, want in zip(states, expected_states):
        assert np.abs(got - want.numpy()).max() < 1e-4


# ------------------------------------------------------------------------------- units on chosen levels


def deep_only_and_its_full_twin(unit: str) -> tuple[nn.Module, nn.Module]:
    """A residual model with a unit on level 2 only, and the all-level model with the same weights whose units on
    levels 0 and 1 are at their zero start (no effect): the two must compute the same."""
    torch.manual_seed(0)
    deep = build_model(f"vanilla-{unit}-small-shallow", num_classes=5, temporal_residual=True, temporal_levels=[2])
    deep = randomise_units(with_random_batchnorm(deep), std=0.1).eval()
    full = build_model(f"vanilla-{unit}-small-shallow", num_classes=5, temporal_residual=True).eval()
    for cell in full.temporal:
        zero_input_path(cell)
    weights = {name.replace("temporal.0.", "temporal.2."): value for name, value in deep.state_dict().items()}
    missing, unexpected = full.load_state_dict(weights, strict=False)
    assert not unexpected and all(name.startswith(("temporal.0.", "temporal.1.")) for name in missing)
    return deep, full


@pytest.mark.parametrize("unit", UNITS)
def test_units_on_chosen_levels_compute_what_zero_units_elsewhere_would(unit):
    deep, full = deep_only_and_its_full_twin(unit)
    assert deep.temporal_levels == (2,) and len(deep.temporal) == 1
    frames = torch.randn(1, 4, 3, 24, 40)
    with torch.no_grad():
        logits, state = deep(frames)
        expected, full_state = full(frames)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert len(state) == 1 and not full_state[0].any() and not full_state[1].any()
    torch.testing.assert_close(state[0], full_state[2])
    assert count_parameters(deep) < count_parameters(full)
    # The state is one tensor per unit: a full model's state does not fit.
    with pytest.raises(ValueError, match="state has 3 tensors, the model has 1"):
        deep.step(frames[:, 0], full_state)


def test_fused_and_int8_copies_and_checkpoints_keep_the_unit_levels():
    from vidseg.models.quantized import QuantizedUNet, int8_available

    deep, _ = deep_only_and_its_full_twin("crnn")
    frames = torch.randn(1, 3, 3, 37, 45)
    with torch.no_grad():
        expected, expected_state = deep(frames)
        logits, state = optimize_for_inference(deep, dtype=torch.float32)(frames)
    assert (logits - expected).abs().max() < 1e-4 and len(state) == 1
    checkpoint = {
        "model_name": "vanilla-crnn-small-shallow",
        "num_classes": 5,
        "model": deep.state_dict(),
        "config": {"model": {"temporal_residual": True, "temporal_levels": [2]}},
    }
    rebuilt = model_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(frames)[0], expected)
    if not int8_available():
        return
    network = QuantizedUNet(deep)
    state = None
    for t in range(3):
        _, state = network.step(frames[:, t], state)
    network.freeze()
    state = None
    for t in range(3):
        got, state = network.step(frames[:, t], state)
    assert len(state) == 1 and state[0].shape == expected_state[0].shape
    assert float((got - expected[:, -1]).abs().max()) < 0.1 * float(expected.max() - expected.min())


@pytest.mark.slow
def test_onnx_export_of_units_on_chosen_levels_streams_like_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from vidseg.export import export_onnx, run_onnx_sequence, state_shapes

    deep, _ = deep_only_and_its_full_twin("cgru")
    path = export_onnx(deep, tmp_path / "deep.onnx")
    frames = torch.randn(1, 3, 3, 13, 22, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, expected_states = deep(frames)
    assert state_shapes(path, 13, 22) == [tuple(s.shape) for s in expected_states]  # the level-2 size
    logits, states = run_onnx_sequence(path, frames.numpy())
    assert np.abs(logits - expected.numpy()).max() < 1e-4 * max(1.0, float(expected.abs().max()))
    assert np.abs(states[0] - expected_states[0].numpy()).max() < 1e-4


def test_training_builds_units_on_the_configured_levels_and_the_checkpoint_rebuilds(tmp_path, dense_tree):
    raw = {
        "model": {"name": "vanilla-crnn-small-shallow", "temporal_residual": True, "temporal_levels": [1, 2]},
        "data": {"root": str(dense_tree.root), "size": [16, 32], "num_frames": 3, "batch_size": 2},
        "train": {"steps": 2, "log_every": 1, "tensorboard": False},
        "eval": {"every_epochs": 0},
    }
    train(config_from_dict(raw, source="levels test"), tmp_path / "run", log=quiet)
    state = TrainState.load(tmp_path / "run" / "last.pt")
    assert sorted({name.split(".")[1] for name in state.model if name.startswith("temporal.")}) == ["0", "1"]
    model = state.build_model()
    assert model.temporal_levels == (1, 2) and len(model.temporal) == 2


def test_units_on_fewer_levels_cost_fewer_training_flops():
    from vidseg.demo.plan import training_flops

    none = training_flops("vanilla-none-small-shallow", (32, 64))
    full = training_flops("vanilla-crnn-small-shallow", (32, 64), temporal_residual=True)
    deep = training_flops("vanilla-crnn-small-shallow", (32, 64), temporal_residual=True, temporal_levels=[2])
    assert none < deep < full
    # Each level's unit costs about the same here (channels^2 x pixels is constant), so one unit is a third.
    assert deep - none == pytest.approx((full - none) / 3, rel=0.05)



# ------------------------------------------------------------------------------- units with 1x1 kernels


@pytest.mark.parametrize("unit", UNITS)
def test_1x1_units_are_a_per_pixel_recurrence_and_cost_a_ninth(unit):
    from vidseg.demo.plan import training_flops

    torch.manual_seed(0)
    model = randomise_units(build_model(f"vanilla-{unit}-small-shallow", num_classes=5, temporal_kernel=1), std=0.1)
    model = model.eval()
    assert all(conv.kernel_size == (1, 1) for cell in model.temporal for conv in cell.modules()
               if isinstance(conv, nn.Conv2d))
    # Per pixel: a change of one pixel of the previous state reaches the same pixel of the next state only.
    x = torch.rand(1, model.channels[0], 9, 11)
    h = torch.rand(1, model.channels[0], 9, 11)
    bumped = h.clone()
    bumped[..., 4, 5] += 1.0
    with torch.no_grad():
        moved = (model.temporal[0](x, bumped) - model.temporal[0](x, h)).abs().sum(dim=1)[0]
    assert moved[4, 5] > 0 and moved.sum() == moved[4, 5]
    none = training_flops("vanilla-none-small-shallow", (32, 64))
    three = training_flops(f"vanilla-{unit}-small-shallow", (32, 64))
    one = training_flops(f"vanilla-{unit}-small-shallow", (32, 64), temporal_kernel=1)
    assert one - none == pytest.approx((three - none) / 9, rel=0.1)


# ------------------------------------------------------------------------------------------------ skip gates


def gated_and_plain_twins(unit: str, bias: float) -> tuple[nn.Module, nn.Module, nn.Module]:
    """A gated residual model whose gates sit at ``bias`` (weights zero: g = sigmoid(bias) everywhere), the plain
    residual model with the same units and the per-frame model with the same encoder and decoder."""
    torch.manual_seed(0)
    name = f"vanilla-{unit}-small-shallow"
    gated = build_model(name, num_classes=5, temporal_residual=True, temporal_gate=True)
    gated = randomise_units(with_random_batchnorm(gated), std=0.1).eval()
    with torch.no_grad():
        for gate in gated.skip_gates:
            gate.conv.weight.zero_()
            gate.conv.bias.fill_(bias)
    plain = build_model(name, num_classes=5, temporal_residual=True).eval()
    per_frame = build_model("vanilla-none-small-shallow", num_classes=5).eval()
    weights = {k: v for k, v in gated.state_dict().items() if not k.startswith("skip_gates.")}
    plain.load_state_dict(weights)
    per_frame.load_state_dict({k: v for k, v in weights.items() if not k.startswith("temporal.")})
    return gated, plain, per_frame


@pytest.mark.parametrize("unit", UNITS)
def test_skip_gates_scale_the_units_correction_and_leave_the_state_alone(unit):
    frames = torch.randn(1, 4, 3, 24, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        closed, plain, per_frame = gated_and_plain_twins(unit, bias=-40.0)
        logits, state = closed(frames)
        plain_logits, plain_state = plain(frames)
        # A shut gate passes the per-frame feature: the per-frame model's logits, though the units run and remember.
        torch.testing.assert_close(logits, per_frame(frames)[0], rtol=1e-5, atol=1e-5)
        assert (logits - plain_logits).abs().max() > 1e-2
        for got, want in zip(state, plain_state):  # the state is h, not g * h
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            assert want.abs().max() > 1e-2
        open_gate, plain, _ = gated_and_plain_twins(unit, bias=40.0)
        torch.testing.assert_close(open_gate(frames)[0], plain_logits, rtol=1e-5, atol=1e-5)
        half, _, _ = gated_and_plain_twins(unit, bias=0.0)  # g = 1/2: halfway between, not either end
        midway = half(frames)[0]
    assert (midway - plain_logits).abs().max() > 1e-3 and (midway - logits).abs().max() > 1e-3


def test_skip_gates_start_from_the_per_frame_logits_and_learn():
    per_frame = with_random_batchnorm(build_model("vanilla-none-small-shallow", num_classes=5)).eval()
    gated = build_model("vanilla-crnn-small-shallow", num_classes=5, temporal_residual=True, temporal_gate=True)
    gated.load_state_dict(per_frame.state_dict(), strict=False)
    for cell in gated.temporal:
        zero_input_path(cell)
    frames = torch.randn(2, 3, 3, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(frames)[0], per_frame(frames)[0], rtol=0, atol=0)
    gated.train()
    gated(frames)[0].square().mean().backward()
    assert all(cell.input_conv.weight.grad.abs().sum() > 0 for cell in gated.temporal)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("vanilla-crnn-small-shallow", {"temporal_residual": True, "temporal_kernel": 1}),
        ("resnet-crnn-small-shallow", {"temporal_residual": True, "temporal_gate": True}),
    ],
    ids=["1x1 units", "skip gates"],
)
def test_1x1_units_and_skip_gates_survive_fusion_int8_and_checkpoints(name, options):
    from vidseg.models.quantized import QuantizedUNet, int8_available

    torch.manual_seed(0)
    model = build_model(name, num_classes=5, **options)
    model = randomise_units(with_random_batchnorm(model), std=0.1).eval()
    frames = torch.randn(1, 3, 3, 21, 34)
    with torch.no_grad():
        expected, _ = model(frames)
        fused, _ = optimize_for_inference(model, dtype=torch.float32)(frames)
    assert (fused - expected).abs().max() < 1e-4
    checkpoint = {"model_name": name, "num_classes": 5, "model": model.state_dict(), "config": {"model": options}}
    with torch.no_grad():
        assert torch.equal(model_from_checkpoint(checkpoint).eval()(frames)[0], expected)
    if int8_available():
        network = QuantizedUNet(model)  # calibration mode computes the float model, gates included
        state = None
        for t in range(3):
            got, state = network.step(frames[:, t], state)
        torch.testing.assert_close(got, expected[:, -1], rtol=1e-4, atol=1e-4)
        network.freeze()
        state = None
        for t in range(3):
            got, state = network.step(frames[:, t], state)
        assert (got.argmax(1) == expected[:, -1].argmax(1)).float().mean() > 0.9


def test_skip_gates_cost_a_ninth_of_a_3x3_crnn_unit():
    from vidseg.demo.plan import training_flops

    none = training_flops("vanilla-none-small-shallow", (32, 64))
    units = training_flops("vanilla-crnn-small-shallow", (32, 64), temporal_residual=True)
    gated = training_flops("vanilla-crnn-small-shallow", (32, 64), temporal_residual=True, temporal_gate=True)
    assert gated - units == pytest.approx((units - none) / 9, rel=0.15)



# ------------------------------------------------------------------------- memory-only residual skips


def memory_only_twins(unit: str, seed: int = 0):
    """A memory-only residual model with random units and BatchNorm, the plain residual model and the per-frame
    model with the same weights."""
    torch.manual_seed(seed)
    name = f"vanilla-{unit}-small-shallow"
    model = build_model(name, num_classes=5, temporal_residual=True, temporal_memory_only=True, warp_state=True)
    model = randomise_units(with_random_batchnorm(model), std=0.1).eval()
    plain = build_model(name, num_classes=5, temporal_residual=True, warp_state=True).eval()
    plain.load_state_dict(model.state_dict())
    per_frame = build_model("vanilla-none-small-shallow", num_classes=5).eval()
    per_frame.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("temporal.")})
    return model, plain, per_frame


@pytest.mark.parametrize("unit", UNITS)
def test_memory_only_skips_pass_the_per_frame_feature_without_history(unit):
    model, plain, per_frame = memory_only_twins(unit)
    frames = torch.randn(1, 4, 3, 24, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, state = model(frames)
        plain_logits, plain_state = plain(frames)
        alone = per_frame(frames)[0]
        # The first frame has no history: exactly the per-frame logits, though the units are far from zero.
        assert torch.equal(logits[:, 0], alone[:, 0])
        assert (plain_logits[:, 0] - alone[:, 0]).abs().max() > 1e-2
        # Later frames carry memory: neither the per-frame nor the plain residual model's logits.
        assert (logits[:, 1:] - alone[:, 1:]).abs().max() > 1e-3
        assert (logits[:, 1:] - plain_logits[:, 1:]).abs().max() > 1e-3
        for got, want in zip(state, plain_state):  # the state is the unit's h, as in the plain model
            torch.testing.assert_close(got, want)


def test_memory_only_skips_pass_nothing_when_the_state_is_not_read():
    model, plain, per_frame = memory_only_twins("crnn", seed=2)
    with torch.no_grad():
        for cell in model.temporal:  # h_t no longer depends on h_{t-1}: memory adds nothing
            cell.hidden_conv.weight.zero_()
        plain.load_state_dict(model.state_dict())
    frames = torch.randn(1, 3, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(frames)[0], per_frame(frames)[0], rtol=0, atol=1e-6)
        assert (plain(frames)[0] - per_frame(frames)[0]).abs().max() > 1e-2


def test_memory_only_units_learn_from_a_zero_start_through_the_recurrence():
    torch.manual_seed(0)
    model = build_model("vanilla-crnn-small-shallow", num_classes=5, temporal_residual=True, temporal_memory_only=True)
    model.train()
    model(torch.randn(2, 3, 3, 16, 32))[0].square().mean().backward()
    # The input path starts at zero; its gradient arrives through h_{t-1} in later frames' h_t - h0_t.
    assert all(cell.input_conv.weight.grad.abs().sum() > 0 for cell in model.temporal)


def test_memory_only_survives_fusion_int8_checkpoints_and_costs_one_more_unit_pass():
    from vidseg.demo.plan import training_flops
    from vidseg.models.quantized import QuantizedUNet, int8_available

    model, _, _ = memory_only_twins("crnn", seed=4)
    options = {"temporal_residual": True, "temporal_memory_only": True, "warp_state": True}
    frames = torch.randn(1, 3, 3, 21, 34)
    with torch.no_grad():
        expected, _ = model(frames)
        fused, _ = optimize_for_inference(model, dtype=torch.float32)(frames)
    assert (fused - expected).abs().max() < 1e-4
    checkpoint = {"model_name": "vanilla-crnn-small-shallow", "num_classes": 5, "model": model.state_dict(),
                  "config": {"model": options}}  # fmt: skip
    with torch.no_grad():
        rebuilt = model_from_checkpoint(checkpoint).eval()
        assert rebuilt.temporal_memory_only and torch.equal(rebuilt(frames)[0], expected)
    if int8_available():
        network = QuantizedUNet(model)  # calibration mode computes the float model
        state = None
        with torch.no_grad():
            for t in range(3):
                got, state = network.step(frames[:, t], state)
        torch.testing.assert_close(got, expected[:, -1], rtol=1e-4, atol=1e-4)
    size = (32, 64)
    plain = training_flops("vanilla-crnn-small-shallow", size, temporal_residual=True, temporal_kernel=1)
    memory = training_flops("vanilla-crnn-small-shallow", size, temporal_residual=True, temporal_kernel=1,
                            temporal_memory_only=True)  # fmt: skip
    none = training_flops("vanilla-none-small-shallow", size)
    # The zero-state pass costs the input path only (no state to warp or read): more than nothing, less than a unit.
    assert 0 < memory - plain < plain - none

def test_onnx_export_streams_memory_only_skips_like_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from vidseg.export import export_onnx, run_onnx_sequence

    model, _, per_frame = memory_only_twins("crnn", seed=5)
    path = export_onnx(model, tmp_path / "memory-only.onnx")
    frames = torch.randn(1, 3, 3, 13, 22, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected, _ = model(frames)
        alone = per_frame(frames)[0]
    logits, _ = run_onnx_sequence(path, frames.numpy())
    # The exported step always reads a state (zeros at first): the first frame must still be the per-frame one.
    assert np.abs(logits[:, 0] - alone[:, 0].numpy()).max() < 1e-4
    assert np.abs(logits - expected.numpy()).max() < 1e-4 * max(1.0, float(expected.abs().max()))


# ------------------------------------------------------- corrupted frames' gradient into the encoder


def parameter_grads(model: nn.Module, frames: torch.Tensor, scale: torch.Tensor | None, mode: str = "off") -> dict:
    """Every parameter's gradient of the loss on sample 1 alone, the clip run with ``encoder_grad_scale``."""
    model.zero_grad()
    model.set_grad_checkpointing(mode != "off", "step" if mode == "off" else mode)
    logits = ClipForward(model)(frames, scale)
    logits[1].square().mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["off", "step", "stage"])
def test_encoder_grad_scale_scales_only_the_gradient_reaching_the_encoder(mode):
    # Eval mode: BatchNorm uses its running statistics, so samples do not mix and sample 0's scale of 1 cannot
    # carry sample 1's gradient into the encoder (in training mode the batch statistics do, slightly).
    torch.manual_seed(0)
    model = build_model("vanilla-crnn-small-shallow", num_classes=5, temporal_residual=True, temporal_kernel=1)
    model = randomise_units(with_random_batchnorm(model), std=0.1).eval()
    frames = torch.randn(2, 3, 3, 16, 32)
    whole = parameter_grads(model, frames, None, mode)
    encoder = [name for name in whole if name.startswith("encoder.")]
    readers = [name for name in whole if not name.startswith("encoder.")]
    assert encoder and any(name.startswith("temporal.") for name in readers)
    assert all(whole[name].abs().sum() > 0 for name in encoder)
    for value in (0.0, 0.5):
        scale = torch.tensor([[1.0, 1.0, 1.0], [value, value, value]])
        got = parameter_grads(model, frames, scale, mode)
        assert got.keys() == whole.keys()
        for name in encoder:
            torch.testing.assert_close(got[name], value * whole[name], rtol=1e-5, atol=1e-9)
        for name in readers:  # the units, decoder and head get the gradient whole
            torch.testing.assert_close(got[name], whole[name], rtol=1e-5, atol=1e-9)
    # Only the scaled sample's frames are scaled: sample 1's loss with sample 0 at 0 is the unscaled gradient.
    got = parameter_grads(model, frames, torch.tensor([[0.0] * 3, [1.0] * 3]), mode)
    for name in whole:
        torch.testing.assert_close(got[name], whole[name], rtol=1e-5, atol=1e-9)
    with torch.no_grad():  # the forward pass is unchanged
        torch.testing.assert_close(ClipForward(model)(frames, torch.zeros(2, 3)), ClipForward(model)(frames))


def test_corrupted_frames_with_no_encoder_gradient_leave_the_encoder_untouched(tmp_path, dense_tree):
    # Every frame corrupted: with loss.corrupted_encoder_gradient 0 the encoder's weights stay those the run
    # started from while the units and the decoder learn; with 1 the encoder learns too.
    from vidseg.checkpoint import load_checkpoint

    def run_config(name, steps, **extra):
        raw = {
            "model": {"name": name},
            "data": {"root": str(dense_tree.root), "size": [16, 32], "num_frames": 3, "batch_size": 2},
            "loss": {"frames": "labelled"},
            "optim": {"lr": 1e-2},
            "train": {"steps": steps, "tensorboard": False},
            "eval": {"every_epochs": 0},
        }
        for section, values in extra.items():
            raw[section].update(values)
        return config_from_dict(raw, source="encoder gradient test")

    train(run_config("vanilla-none-small-shallow", 1, data={"num_frames": 1}), tmp_path / "pre", log=quiet)
    start = load_checkpoint(tmp_path / "pre" / "last.pt")["model"]
    trained = {}
    for value in (0.0, 1.0):
        recipe = run_config(
            "vanilla-crnn-small-shallow",
            2,
            model={"temporal_residual": True, "temporal_kernel": 1},
            data={"corrupt": {"rate": 1.0}},
            loss={"corrupted_encoder_gradient": value},
            train={"steps": 2, "init_from": str(tmp_path / "pre" / "last.pt")},
        )
        train(recipe, tmp_path / f"run{value}", log=quiet)
        trained[value] = load_checkpoint(tmp_path / f"run{value}" / "last.pt")["model"]
    weights = [name for name in start if name.endswith(".weight") and start[name].dim() == 4]
    encoder = [name for name in weights if name.startswith("encoder.")]
    decoder = [name for name in weights if name.startswith("decoder.")]
    assert encoder and decoder
    assert all(torch.equal(trained[0.0][name], start[name]) for name in encoder)
    assert all(not torch.equal(trained[0.0][name], start[name]) for name in decoder)
    assert all(not torch.equal(trained[1.0][name], start[name]) for name in encoder)


# ------------------------------------------------------------------------------------------------ config


def config(**model):
    return config_from_dict({"model": {"name": "vanilla-crnn-small-shallow", **model}, "train": {"steps": 1}})


def test_options_are_off_by_default_and_parse():
    default = config()
    assert default.model.temporal_residual is False and default.model.state_dropout == 0.0
    assert default.model.warp_state is False
    assert default.data.mixup.kind == "none"
    on = config(temporal_residual=True, state_dropout=0.25)
    assert on.model.temporal_residual and on.model.state_dropout == 0.25


@pytest.mark.parametrize(
    ("model", "train", "message"),
    [
        ({"name": "vanilla-none-small-shallow", "temporal_residual": True}, {}, "model.temporal_residual: needs"),
        ({"name": "vanilla-none-small-shallow", "state_dropout": 0.2}, {}, "model.state_dropout: needs"),
        ({"name": "vanilla-none-small-shallow", "warp_state": True}, {}, "model.warp_state: needs"),
        ({"state_dropout": 1.0}, {}, r"probability in \[0, 1\)"),
        ({"name": "vanilla-cgru-small-shallow"}, {"init_temporal": "identity"}, "cRNN units and residual units"),
        ({"name": "vanilla-none-small-shallow", "temporal_levels": [1]}, {}, "model.temporal_levels: needs"),
        ({"temporal_levels": [3]}, {}, r"model.temporal_levels: expected distinct levels from 0 .* to 2 .*\[3\]"),
        ({"temporal_levels": [1, 1]}, {}, "model.temporal_levels: expected distinct"),
        ({"temporal_levels": []}, {}, "model.temporal_levels: expected distinct"),
        ({"name": "vanilla-none-small-shallow", "temporal_kernel": 1}, {}, "model.temporal_kernel: needs"),
        ({"temporal_kernel": 2}, {}, "model.temporal_kernel: expected an odd positive size .* found 2"),
        ({"temporal_kernel": 0}, {}, "model.temporal_kernel: expected an odd positive size"),
        ({"temporal_gate": True}, {}, "model.temporal_gate: needs model.temporal_residual: true .* found"),
        ({"name": "vanilla-none-small-shallow", "temporal_gate": True}, {}, "model.temporal_gate: needs temporal"),
        ({"temporal_memory_only": True}, {}, "model.temporal_memory_only: needs model.temporal_residual: true"),
    ],
)
def test_bad_option_combinations_are_errors(model, train, message):
    raw = {"model": {"name": "vanilla-crnn-small-shallow", **model}, "train": {"steps": 1, **train}}
    with pytest.raises(VidsegError, match=message):
        config_from_dict(raw)


def test_the_model_refuses_options_it_cannot_honour():
    with pytest.raises(ValueError, match="need temporal units"):
        build_model("vanilla-none-small-shallow", temporal_residual=True)
    with pytest.raises(ValueError, match="temporal_levels must be distinct levels 0 to 2"):
        build_model("vanilla-crnn-small-shallow", temporal_levels=[0, 3])
    with pytest.raises(ValueError, match="probability"):
        build_model("vanilla-cgru-small-shallow", state_dropout=-0.1)
    with pytest.raises(ValueError, match="temporal_kernel must be odd and positive, got 4"):
        build_model("vanilla-crnn-small-shallow", temporal_kernel=4)
    with pytest.raises(ValueError, match="need temporal units"):
        build_model("vanilla-none-small-shallow", temporal_kernel=1)
    with pytest.raises(ValueError, match="temporal_gate gates the residual skip x \\+ h: it needs temporal_residual"):
        build_model("vanilla-crnn-small-shallow", temporal_gate=True)
    with pytest.raises(ValueError, match="temporal_memory_only corrects the residual skip x \\+ h: it needs"):
        build_model("vanilla-crnn-small-shallow", temporal_memory_only=True)


# ------------------------------------------------------------------------------- the options in training


def test_warm_started_residual_recipe_with_every_option_trains_and_resumes(tmp_path, dense_tree):
    # The demo's recipe shape (per-frame pre-training, then the temporal twin warm-started from it) with residual
    # units, state dropout, CutMix and random frame strides together; the checkpoint rebuilds the residual model.
    from vidseg.checkpoint import load_checkpoint
    from vidseg.train import train

    def run_config(name, steps, **extra):
        raw = {
            "model": {"name": name},
            "data": {"root": str(dense_tree.root), "size": [16, 32], "num_frames": 3, "batch_size": 2},
            "loss": {"frames": "labelled"},
            "train": {"steps": steps, "log_every": 1, "tensorboard": False},
            "eval": {"every_epochs": 0, "num_frames": 3, "batch_size": 2},
        }
        for section, values in extra.items():
            raw[section].update(values)
        return config_from_dict(raw, source="recipe test")

    train(run_config("vanilla-none-small-shallow", 1, data={"num_frames": 1}), tmp_path / "pre", log=quiet)
    recipe = run_config(
        "vanilla-cgru-small-shallow",
        2,
        model={"temporal_residual": True, "state_dropout": 0.3, "warp_state": True},
        data={"frame_stride": [1, 2], "mixup": {"kind": "cutmix", "prob": 0.5}},
        train={"steps": 2, "init_from": str(tmp_path / "pre" / "last.pt")},
    )
    result = train(recipe, tmp_path / "run", log=quiet)
    assert result.step == 2
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    model = model_from_checkpoint(last)
    assert model.temporal_residual and model.warp_state and model.state_dropout == 0.0  # dropout: training only
    recipe.train.steps = 3
    assert train(recipe, tmp_path / "run", resume=True, log=quiet).step == 3
    # Resumed after step 2 = straight through 3 steps, bit for bit: every option's random draws (state dropout
    # masks, CutMix boxes, strides, the consistency term's inputs) continue where they stopped.
    recipe.loss.temporal_consistency = 0.5
    recipe.train.steps = 2
    train(recipe, tmp_path / "resumed", log=quiet)
    recipe.train.steps = 3
    said: list[str] = []
    train(recipe, tmp_path / "resumed", resume=True, log=said.append)
    assert any("at step 2" in message for message in said), "the run resumed, it did not start again"
    train(recipe, tmp_path / "straight", log=quiet)
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name
