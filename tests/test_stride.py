"""StridedState: a temporal model's state carried N frames apart (each frame continues the state of the frame N
before it), checked against the model's whole-clip forward on each interleaved subsequence."""

import numpy as np
import pytest
import torch
from test_evaluate import write_checkpoint

from vidseg.cli import main
from vidseg.data import ClipTransform, open_dataset
from vidseg.errors import VidsegError
from vidseg.evaluate import _SequenceFrames, evaluate_model, resolve_protocol
from vidseg.models import build_model
from vidseg.models.stride import StridedState
from vidseg.results import read_results


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("vanilla-crnn-small-shallow", num_classes=19).eval()
    with torch.no_grad():  # a state that matters: larger recurrent weights than the initialisation's
        for unit in model.temporal:
            unit.hidden_conv.weight.mul_(4)
    return model


@torch.no_grad()
def test_each_frame_continues_the_state_of_the_frame_stride_before():
    model = tiny_model()
    frames = torch.randn(8, 3, 32, 64)
    stepper = StridedState(model, 3)
    state = None
    for t in range(len(frames)):
        logits, state = stepper.step(frames[t][None], state)
        assert len(state) == min(t + 1, 3)
        # Frame t after frames t - 3k, ..., t - 3, from the zero state: the whole-clip forward of that subsequence.
        expected = model(frames[t % 3 : t + 1 : 3][None])[0][0, -1]
        torch.testing.assert_close(logits[0], expected)
    # Not plain streaming: from frame 3 on the strided logits differ from the stream's.
    streamed = model(frames[None])[0][0]
    assert not torch.allclose(logits[0], streamed[-1], atol=1e-4)


@torch.no_grad()
def test_stride_one_is_plain_streaming():
    model = tiny_model(1)
    frames = torch.randn(5, 3, 32, 64)
    streamed = model(frames[None])[0][0]
    stepper, state = StridedState(model, 1), None
    for t in range(len(frames)):
        logits, state = stepper.step(frames[t][None], state)
        torch.testing.assert_close(logits[0], streamed[t])


def test_bad_strides_are_refused():
    model = tiny_model()
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(ValueError, match="whole number of frames >= 1"):
            StridedState(model, bad)
    stepper = StridedState(model, 2)
    with pytest.raises(ValueError, match="at most 2 states"):
        stepper.step(torch.zeros(1, 3, 32, 64), ((), (), ()))


@torch.no_grad()
def test_stream_evaluation_scores_the_strided_predictions(dense_tree):
    dataset = open_dataset(dense_tree.root, "val", num_frames=3, gt_position="last", transform=ClipTransform())
    model = tiny_model(2)
    options = {"mode": "stream", "tc": False, "per_position": "off", "progress": False}
    results = evaluate_model(model, dataset, state_stride=2, **options)
    plain = evaluate_model(model, dataset, **options)
    # Reference: per sequence, each frame's logits from the clip forward of its every-other-frame history.
    index = dataset.index
    items = _SequenceFrames(index, list(range(len(index.sequences))), None, "labels", None)
    lut = resolve_protocol("standard", dataset.label_set, 19).target_lut
    preds, targets, by_sequence = [], [], {}
    for item in items:
        by_sequence.setdefault(item["sequence"], []).append(item)
    for sequence in by_sequence.values():
        frames = torch.stack([item["frame"] for item in sequence])
        for t, item in enumerate(sequence):
            logits = model(frames[t % 2 : t + 1 : 2][None])[0][0, -1]
            preds.append(logits.argmax(0).numpy())
            targets.append(lut[item["label"]].numpy())
    pred, target = np.stack(preds).reshape(-1), np.stack(targets).reshape(-1)
    valid = target != 255
    ious = []
    for c in range(19):
        union = np.sum(valid & ((pred == c) | (target == c)))
        if union:
            ious.append(np.sum(valid & (pred == c) & (target == c)) / union)
    assert results.frames_scored == len(preds)
    assert results.miou == pytest.approx(np.mean(ious), abs=1e-12)
    assert results.miou != plain.miou  # the stride changed what was scored


def test_evaluate_command_records_the_stride_and_refuses_a_bad_one(dense_tree, tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    write_checkpoint(checkpoint, dense_tree.root, model=tiny_model())
    out = tmp_path / "strided.json"
    base = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(dense_tree.root), "--split", "val",
            "--mode", "stream", "--no-tc", "--per-position", "off", "--out", str(out)]  # fmt: skip
    assert main([*base, "--state-stride", "3"]) == 0
    assert read_results(out).run["state_stride"] == 3
    assert main([*base, "--state-stride", "0"]) != 0
    assert "--state-stride: state stride must be a whole number of frames >= 1, got 0" in capsys.readouterr().err
    # The checkpoint's eval.state_stride is the default, and a bad one is named as such.
    from vidseg.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(checkpoint)
    payload.pop("format")
    for stride, code in ((2, 0), (0, 1)):
        payload["config"]["eval"]["state_stride"] = stride
        save_checkpoint(checkpoint, payload)
        assert (main(base + ["--overwrite"]) != 0) == bool(code)
        if code:
            assert "eval.state_stride of" in capsys.readouterr().err
        else:
            assert read_results(out).run["state_stride"] == 2


def test_segmenter_strides_its_state_as_the_checkpoint_says(dense_tree, tmp_path):
    from vidseg.checkpoint import load_checkpoint, save_checkpoint
    from vidseg.segment import Segmenter

    plain_path, strided_path = tmp_path / "plain.pt", tmp_path / "strided.pt"
    write_checkpoint(plain_path, dense_tree.root, model=tiny_model(3))
    payload = load_checkpoint(plain_path)
    payload["config"]["eval"]["state_stride"] = 2
    payload.pop("format")
    save_checkpoint(strided_path, payload)
    frames = [np.random.default_rng(t).integers(0, 256, (32, 64, 3), dtype=np.uint8) for t in range(6)]
    strided = Segmenter(strided_path, optimize=False)
    assert strided.state_stride == 2 and Segmenter(strided_path, optimize=False, state_stride=1).state_stride == 1
    masks = list(strided.stream(frames))
    # Reference: a plain streaming Segmenter fed only frames t % 2, t % 2 + 2, ..., t.
    plain = Segmenter(plain_path, optimize=False)
    assert plain.state_stride == 1
    differs = False
    for t, mask in enumerate(masks):
        plain.reset()
        expected = list(plain.stream(frames[t % 2 : t + 1 : 2]))[-1]
        np.testing.assert_array_equal(mask, expected)
        plain.reset()
        differs |= not np.array_equal(mask, list(plain.stream(frames[: t + 1]))[-1])
    assert differs  # the stride changed some frame's mask
    with pytest.raises(VidsegError, match="state stride must be a whole number of frames >= 1, got 0"):
        Segmenter(plain_path, optimize=False, state_stride=0)
    payload["config"]["eval"]["state_stride"] = -1
    save_checkpoint(strided_path, payload)
    with pytest.raises(VidsegError, match="eval.state_stride of checkpoint .*strided.pt: .*got -1"):
        Segmenter(strided_path, optimize=False)
