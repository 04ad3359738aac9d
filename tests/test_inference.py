"""The fused inference copy computes the same function as the model it was built from."""

import pytest
import torch

from vidseg.models import MODEL_NAMES, build_model, optimize_for_inference


def _with_random_batchnorm_statistics(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


# Every block type x temporal unit; the sizes only change channel counts.
FUSION_CASES = [n for n in MODEL_NAMES if n.endswith("small-shallow")] + ["resnet-cgru-small-deep"]


@pytest.mark.parametrize("name", FUSION_CASES)
def test_fused_fp32_equals_the_model_over_a_clip(name):
    torch.manual_seed(0)
    model = _with_random_batchnorm_statistics(build_model(name, num_classes=5))
    fused = optimize_for_inference(model, dtype=torch.float32)
    frames = torch.randn(1, 3, 3, 37, 45)
    with torch.no_grad():
        expected, expected_state = model(frames)
        state = None
        for t in range(frames.shape[1]):
            logits, state = fused.step(frames[:, t], state)
            assert logits.shape == (1, 5, 37, 45)
            assert (logits - expected[:, t]).abs().max() < 1e-4
    for a, b in zip(state, expected_state):
        assert (a - b).abs().max() < 1e-4


def test_fused_copy_leaves_the_model_untouched_and_trainable():
    model = build_model("resnet-cgru-small-shallow", num_classes=3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize_for_inference(model, dtype=torch.bfloat16)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", ["resnet-cgru-small-deep", "vanilla-crnn-small-shallow", "convnext-crnn-small-deep"])
def test_fused_bf16_argmax_agrees_with_fp32(name):
    torch.manual_seed(1)
    model = build_model(name, num_classes=5).eval()
    fused = optimize_for_inference(model, dtype=torch.bfloat16)
    frames = torch.randn(1, 4, 3, 48, 64)
    with torch.no_grad():
        expected, _ = model(frames)
        got, state = fused(frames)
    assert got.dtype == torch.bfloat16 and all(h.dtype == torch.bfloat16 for h in state)
    agreement = (got.float().argmax(2) == expected.argmax(2)).float().mean()
    assert agreement > 0.97


def test_fused_model_rejects_bad_frames_like_the_model():
    fused = optimize_for_inference(build_model("vanilla-crnn-small-shallow"))
    with pytest.raises(ValueError, match="expected 3 input channels"):
        fused.step(torch.randn(1, 1, 32, 32))
    _, state = fused.step(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="frame size or batch size changed"):
        fused.step(torch.randn(1, 3, 48, 32), state)
    with pytest.raises(ValueError, match=r"expects a clip \[B, T, 3, H, W\]"):
        fused(torch.randn(1, 3, 32, 32))
