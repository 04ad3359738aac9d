"""EvaluationResults: the JSON form round-trips, keeps the key order results.json files have always had, and a
malformed file is a clear error."""

import dataclasses
import json

import pytest
import torch

from vidseg.data import ClipTransform, open_dataset
from vidseg.data.cityscapes import CityscapesSequences
from vidseg.data.corrupt import CorruptedClips, Corruption
from vidseg.errors import VidsegError
from vidseg.evaluate import evaluate_model
from vidseg.models import build_model
from vidseg.results import EvaluationResults, read_results

# The JSON keys as results.json files hold them, written out by hand from files the code wrote before results
# became dataclasses (not derived from the code under test).
FIGURE_KEYS = ["miou", "macc", "aacc", "iou", "acc", "pixels"]
STREAM_KEYS = [
    "mode", "protocol", "label_set", "classes", "frames_scored", "sequences",
    "miou", "macc", "aacc", "iou", "acc", "pixels", "headline", "corruption", "per_position",
    "tc", "tc_pairs", "mvc_8", "mvc_16", "mvc_runs", "score_at",
]  # fmt: skip
WINDOW_KEYS = [
    "mode", "protocol", "label_set", "classes", "frames_scored", "windows", "frames_per_window", "annotated_frames",
    "miou", "macc", "aacc", "iou", "acc", "pixels", "headline", "all_frames", "corruption", "per_position",
    "tc", "tc_pairs", "mvc_8", "mvc_16", "mvc_runs", "score_at",
]  # fmt: skip


def tiny_model():
    torch.manual_seed(0)
    return build_model("vanilla-crnn-small-shallow", num_classes=19).eval()


@pytest.fixture(scope="module")
def stream_results(dense_tree) -> EvaluationResults:
    """Every labelled frame of 3 sequences streamed, half of them corrupted, with per-position figures and TC."""
    dataset = open_dataset(dense_tree.root, "val", num_frames=3, gt_position="last", transform=ClipTransform())
    corrupted = CorruptedClips(dataset, Corruption(0.5, ("dark", "blur"), 1), deterministic=True)
    return evaluate_model(tiny_model(), corrupted, mode="stream", tc=True, progress=False)


@pytest.fixture(scope="module")
def window_results(dense_tree) -> EvaluationResults:
    """Fully labelled windows (corruption code = frame % 3) scored at their last frame, per window position."""
    windows = CityscapesSequences(dense_tree.root, "val", num_frames=3, gt_position="last")
    subset = torch.utils.data.Subset(windows, range(0, len(windows), 4))
    return evaluate_model(tiny_model(), subset, per_position="labelled", tc=True, progress=False)


def test_stream_and_window_results_round_trip_through_json(stream_results, window_results):
    for results in (stream_results, window_results):
        # The round trip covers every optional part only if the evaluations produced them.
        assert results.corruption is not None and results.corruption.types and results.per_position is not None
        for saved in (results, dataclasses.replace(results, run={"checkpoint": "best.pt", "size": [16, 32]})):
            text = json.dumps(saved.to_dict(), allow_nan=False)
            assert EvaluationResults.from_dict(json.loads(text)) == saved
    assert stream_results.per_position is not None and stream_results.per_position.every == 3
    assert window_results.all_frames is not None and window_results.all_frames.frames is not None


def test_json_keys_keep_their_order(stream_results, window_results):
    stream = stream_results.to_dict()
    windows = window_results.to_dict()
    assert list(stream) == STREAM_KEYS
    assert list(windows) == WINDOW_KEYS
    # The evaluate command adds what it ran on last.
    assert list(dataclasses.replace(window_results, run={}).to_dict()) == [*WINDOW_KEYS, "run"]
    assert list(stream["per_position"]) == ["mode", "frames_seen", "miou", "frames", "every", "stream_miou"]
    assert list(windows["per_position"]) == ["mode", "frames_seen", "miou", "frames"]
    assert list(windows["all_frames"]) == ["frames", *FIGURE_KEYS]
    for results in (stream, windows):
        assert list(results["headline"]) == ["mIoU", "mAcc"]
        assert list(results["corruption"]) == ["clean", "corrupted", "types"]
        for figures in [results["corruption"]["clean"], *results["corruption"]["types"].values()]:
            assert list(figures) == FIGURE_KEYS
        assert list(results["iou"]) == results["classes"]
    assert stream["mode"] == "stream" and windows["mode"] == "windows"


def test_malformed_results_files_name_the_file_and_key(window_results, tmp_path):
    good = window_results.to_dict()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(good))
    assert read_results(path) == window_results

    missing = {key: value for key, value in good.items() if key != "tc_pairs"}
    path.write_text(json.dumps(missing))
    with pytest.raises(VidsegError, match=rf"{path}: .*lack the key 'tc_pairs'"):
        read_results(path)

    nested = json.loads(json.dumps(good))
    del nested["corruption"]["clean"]["pixels"]
    path.write_text(json.dumps(nested))
    with pytest.raises(VidsegError, match=rf"{path}: .*'corruption\.clean\.pixels'"):
        read_results(path)

    wrong = dict(good, miou="high")
    path.write_text(json.dumps(wrong))
    with pytest.raises(VidsegError, match=rf"{path}: .*key 'miou' should hold a number or null, found 'high'"):
        read_results(path)

    path.write_text("[1, 2]")
    with pytest.raises(VidsegError, match=str(path)):
        read_results(path)
    path.write_text("{not json")
    with pytest.raises(VidsegError, match=rf"{path}: not JSON"):
        read_results(path)
    with pytest.raises(VidsegError, match="missing.json"):
        read_results(tmp_path / "missing.json")
