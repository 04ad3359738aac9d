"""Every model of the zoo: Table 3 parameter counts, shapes, gradients, streaming parity, odd sizes, errors."""

import pytest
import torch

from vidseg.models import MODEL_NAMES, REPORT_PARAMS, build_model, count_parameters


def test_zoo_has_27_names():
    assert len(MODEL_NAMES) == 27
    assert len(set(MODEL_NAMES)) == 27


# The report's Table 3 (n = 20 classes), copied from the publication (via model-spec.md), not from vidseg: a wrong
# rule in the code would otherwise be compared with a table that code produced.
TABLE_3 = {
    "vanilla-none-small-shallow": 125_732, "vanilla-none-small-deep": 507_940, "vanilla-none-original": 1_958_996,
    "vanilla-crnn-small-shallow": 222_724, "vanilla-crnn-small-deep": 900_100, "vanilla-crnn-original": 3_508_180,
    "vanilla-cgru-small-shallow": 416_372, "vanilla-cgru-small-deep": 1_683_700, "vanilla-cgru-original": 6_605_204,
    "resnet-crnn-small-shallow": 229_908, "resnet-crnn-small-deep": 923_860, "resnet-crnn-original": 3_598_356,
    "resnet-cgru-small-shallow": 423_556, "resnet-cgru-small-deep": 1_707_460, "resnet-cgru-original": 6_695_380,
    "convnext-crnn-small-deep": 760_420, "convnext-crnn-original": 2_933_588,
    "convnext-cgru-small-deep": 1_544_020, "convnext-cgru-original": 6_030_612,
}


@pytest.mark.parametrize("name", TABLE_3)
def test_published_table3_count(name):
    assert count_parameters(build_model(name, num_classes=20)) == TABLE_3[name]


def test_the_table_vidseg_params_prints_is_table3():
    assert len(TABLE_3) == 19
    assert REPORT_PARAMS == TABLE_3


def test_unpublished_counts_follow_the_spec():
    # model-spec.md gives the two unpublished small-shallow ConvNeXt counts.
    assert count_parameters(build_model("convnext-crnn-small-shallow")) == 195_044
    assert count_parameters(build_model("convnext-cgru-small-shallow")) == 388_692


def test_temporal_unit_cost_matches_formulas():
    # cRNN adds 18c^2 + 2c per level, cGRU 54c^2 + 3c (model-spec.md).
    base = count_parameters(build_model("vanilla-none-small-shallow"))
    crnn = count_parameters(build_model("vanilla-crnn-small-shallow"))
    cgru = count_parameters(build_model("vanilla-cgru-small-shallow"))
    channels = (16, 32, 64)
    assert crnn - base == sum(18 * c * c + 2 * c for c in channels) == 96_992
    assert cgru - base == sum(54 * c * c + 3 * c for c in channels)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_finite_and_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5)
    frames = torch.randn(2, 2, 3, 32, 48)
    logits, state = model(frames)
    assert logits.shape == (2, 2, 5, 32, 48)
    assert torch.isfinite(logits).all()
    if model.is_temporal:
        assert len(state) == len(model.channels)
    else:
        assert state == ()
    logits.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad}"
    zero_grad = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero_grad, f"parameters with an all-zero gradient: {zero_grad}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_streaming_step_equals_clip_forward(name):
    torch.manual_seed(1)
    model = build_model(name, num_classes=4).eval()
    frames = torch.randn(1, 4, 3, 32, 40)
    with torch.no_grad():
        clip_logits, clip_state = model(frames)
        state = None
        for t in range(frames.shape[1]):
            step_logits, state = model.step(frames[:, t], state)
            assert (step_logits - clip_logits[:, t]).abs().max() < 1e-5
    for a, b in zip(state, clip_state):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["vanilla-cgru-small-shallow", "resnet-crnn-small-deep", "convnext-cgru-small-deep"])
def test_odd_sizes_give_logits_of_the_same_size(name):
    model = build_model(name, num_classes=3).eval()
    with torch.no_grad():
        logits, _ = model(torch.randn(1, 2, 3, 67, 131))
        tiny, _ = model(torch.randn(1, 1, 3, 5, 7))
    assert logits.shape == (1, 2, 3, 67, 131)
    assert tiny.shape == (1, 1, 3, 5, 7)


def test_state_carries_information_between_frames():
    torch.manual_seed(2)
    model = build_model("vanilla-cgru-small-shallow", num_classes=3).eval()
    a, b = torch.randn(2, 1, 3, 32, 32)
    with torch.no_grad():
        after_a, _ = model(torch.stack([a, b], dim=1))
        after_zero, _ = model(torch.stack([torch.zeros_like(a), b], dim=1))
        per_frame = build_model("vanilla-none-small-shallow", num_classes=3).eval()
        pf1, _ = per_frame(torch.stack([a, b], dim=1))
        pf2, _ = per_frame(torch.stack([torch.zeros_like(a), b], dim=1))
    assert not torch.allclose(after_a[:, 1], after_zero[:, 1])
    assert torch.equal(pf1[:, 1], pf2[:, 1])


def test_initial_state_is_zeros_and_deterministic():
    model = build_model("resnet-crnn-small-shallow", num_classes=3).eval()
    frame = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        implicit, state = model.step(frame)
        explicit, _ = model.step(frame, tuple(torch.zeros_like(h) for h in state))
        again, _ = model.step(frame)
    assert torch.equal(implicit, explicit)
    assert torch.equal(implicit, again)


def test_four_dimensional_clip_is_a_clear_error():
    model = build_model("vanilla-crnn-small-shallow")
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\].*model.step"):
        model(torch.randn(1, 3, 32, 32))


def test_one_channel_input_is_a_clear_error():
    model = build_model("vanilla-crnn-small-shallow")
    with pytest.raises(ValueError, match="expected 3 input channels.*got 1"):
        model(torch.randn(1, 2, 1, 32, 32))


def test_state_of_another_size_is_a_clear_error():
    model = build_model("vanilla-crnn-small-shallow").eval()
    with torch.no_grad():
        _, state = model.step(torch.randn(1, 3, 32, 32))
        with pytest.raises(ValueError, match="frame size or batch size changed"):
            model.step(torch.randn(1, 3, 64, 32), state)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown model name 'resnet-lstm-small'.*vanilla-none-small-shallow"):
        build_model("resnet-lstm-small")


def test_empty_clip_gives_a_clear_error():
    model = build_model("vanilla-crnn-small-shallow").eval()
    with pytest.raises(ValueError, match="no frames"):
        model(torch.zeros(1, 0, 3, 32, 32))
