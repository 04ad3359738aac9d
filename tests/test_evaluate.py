"""evaluate_model and `vidseg evaluate` on tiny generated trees, checked against independent computations."""

import json
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.checkpoint import save_checkpoint
from vidseg.cli import main
from vidseg.data.cityscapes import CityscapesSequences
from vidseg.data.labels import LABELS
from vidseg.data.transforms import MEAN, STD, normalize
from vidseg.evaluate import evaluate_model, resolve_protocol, results_markdown
from vidseg.metrics import ConfusionMatrix
from vidseg.models import build_model
from vidseg.results import Figures

IGNORE = 255
NAMES_19 = [label.name for label in sorted(LABELS, key=lambda l: l.train_id) if label.train_id != 255]


def tiny_model(name: str, num_classes: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, num_classes=num_classes).eval()


def make_class_win_half_the_pixels(model, frames: torch.Tensor, class_index: int) -> None:
    """Raise the head bias of one class by its median logit gap, so that it wins on about half the pixels."""
    with torch.no_grad():
        logits = model(frames[None])[0][0].movedim(1, -1).reshape(-1, model.num_classes)
        others = torch.cat([logits[:, :class_index], logits[:, class_index + 1 :]], dim=1)
        model.head.bias[class_index] += (others.max(dim=1).values - logits[:, class_index]).median()


def clip_predictions(model, dataset) -> list[np.ndarray]:
    """Argmax of the model's whole-clip forward (not the per-step path evaluate_model uses), per window."""
    with torch.no_grad():
        return [model(dataset[i]["frames"][None])[0][0].argmax(dim=1).numpy() for i in range(len(dataset))]


def reference(pred: np.ndarray, target: np.ndarray, num_classes: int, ignored=(IGNORE,)) -> dict:
    """Figures from per-class pixel masks (cityscapesScripts definitions); no confusion matrix involved."""
    pred, target = pred.reshape(-1), target.reshape(-1)
    valid = ~np.isin(target, ignored)
    iou, acc = [], []
    for c in range(num_classes):
        is_gt, is_pred = valid & (target == c), valid & (pred == c)
        union, truth = np.sum(is_gt | is_pred), is_gt.sum()
        iou.append(np.sum(is_gt & is_pred) / union if union else math.nan)
        acc.append(np.sum(is_gt & is_pred) / truth if truth else math.nan)
    return {
        "miou": np.nanmean(iou) if not np.all(np.isnan(iou)) else math.nan,
        "macc": np.nanmean(acc) if not np.all(np.isnan(acc)) else math.nan,
        "aacc": np.sum(valid & (pred == target)) / valid.sum(),
        "iou": iou,
        "pixels": int(valid.sum()),
    }


def assert_figures(found: Figures, expected: dict, names) -> None:
    assert found.pixels == expected["pixels"]
    for key in ("miou", "macc", "aacc"):
        assert getattr(found, key) == pytest.approx(expected[key], abs=1e-12)
    for name, value in zip(names, expected["iou"]):
        assert (found.iou[name] is None) if math.isnan(value) else found.iou[name] == pytest.approx(value)


@pytest.fixture(scope="module")
def dense_dataset(dense_tree):
    """6 windows of 4 frames, each with all three corruption codes (frame % 3)."""
    windows = CityscapesSequences(dense_tree.root, "val", num_frames=4, gt_position="last")
    return torch.utils.data.Subset(windows, range(0, len(windows), 3))


def predicted_classes(preds: np.ndarray, labels: np.ndarray) -> tuple[set[int], set[int]]:
    """The classes predicted on labelled pixels, and those among them predicted right somewhere."""
    valid = labels != IGNORE
    return set(np.unique(preds[valid]).tolist()), set(np.unique(preds[valid & (preds == labels)]).tolist())


def test_figures_equal_an_independent_computation(dense_dataset):
    model = tiny_model("vanilla-crnn-small-shallow", 19)
    # Road (present in every window) wins about half the pixels; the rest keep the random model's classes.
    make_class_win_half_the_pixels(model, dense_dataset[0]["frames"], 0)
    results = evaluate_model(model, dense_dataset, tc=False, progress=False)
    json.dumps(results.to_dict(), allow_nan=False)
    preds = clip_predictions(model, dense_dataset)
    samples = [dense_dataset[i] for i in range(len(dense_dataset))]
    labels = np.stack([s["labels"].numpy() for s in samples])
    codes = np.stack([s["corruption"].numpy() for s in samples])
    preds = np.stack(preds)
    # A one-class prediction would leave most per-class figures 0 or undefined and hide mistakes in them.
    predicted, right = predicted_classes(preds[:, -1], labels[:, -1])
    assert len(predicted) >= 2 and len(right) >= 2, (predicted, right)
    assert sum(1 for value in results.iou.values() if value) >= 2
    assert results.windows == len(samples) and results.frames_per_window == 4
    assert_figures(results.scored, reference(preds[:, -1], labels[:, -1], 19), NAMES_19)
    assert results.headline == {"mIoU": results.miou, "mAcc": results.macc}
    assert results.all_frames is not None and results.all_frames.frames == labels.shape[0] * 4
    assert_figures(results.all_frames, reference(preds, labels, 19), NAMES_19)
    assert results.per_position is not None and results.per_position.mode == "labelled"
    for position in range(4):
        expected = reference(preds[:, position], labels[:, position], 19)["miou"]
        assert results.per_position.miou[position] == pytest.approx(expected)
    # The tree's corruption codes are frame % 3 with names clean, noise, dark.
    corruption = results.corruption
    assert corruption is not None
    assert_figures(corruption.clean, reference(preds[codes == 0], labels[codes == 0], 19), NAMES_19)
    assert_figures(corruption.corrupted, reference(preds[codes > 0], labels[codes > 0], 19), NAMES_19)
    assert set(corruption.types) == {"noise", "dark"}
    assert_figures(corruption.types["dark"], reference(preds[codes == 2], labels[codes == 2], 19), NAMES_19)
    markdown = results_markdown(results)
    assert "| corruption: dark |" in markdown and "| sky |" in markdown


def test_protocols_for_a_void_predicting_model():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 20, size=(6, 8, 16))  # report label set: 19 is void
    target[:, 0] = IGNORE  # padding
    pred = rng.integers(0, 20, size=target.shape)  # a 20-class model, void predictions included
    spec = resolve_protocol("standard", "report", 20)
    matrix = ConfusionMatrix(spec.num_classes, num_pred_classes=spec.num_pred_classes)
    matrix.update(torch.from_numpy(pred), spec.target_lut[torch.from_numpy(target)])
    # Void ground truth is ignored; void predictions remain in each true class's union as misses.
    expected = reference(pred, target, 19, ignored=(19, IGNORE))
    found = matrix.compute()
    assert found["miou"] == pytest.approx(expected["miou"]) and found["aacc"] == pytest.approx(
        expected["aacc"]
    )
    assert found["pixels"] == expected["pixels"]

    spec = resolve_protocol("report", "report", 20)
    assert spec.class_names[-1] == "void" and spec.num_classes == 20
    matrix = ConfusionMatrix(spec.num_classes, num_pred_classes=spec.num_pred_classes)
    matrix.update(torch.from_numpy(pred), spec.target_lut[torch.from_numpy(target)])
    assert matrix.compute()["miou"] == pytest.approx(reference(pred, target, 20)["miou"])

    # Labels read with the 19-class set mark void as 255 on labelled frames: the report protocol counts it.
    lut = resolve_protocol("report", "cityscapes", 19).target_lut
    assert lut[IGNORE] == 19 and lut[3] == 3
    with pytest.raises(Exception, match="predicts 5 classes"):
        resolve_protocol("standard", "cityscapes", 5)


def test_report_protocol_end_to_end_counts_void(dense_tree):
    windows = CityscapesSequences(dense_tree.root, "val", 2, gt_position="last", label_set="report")
    dataset = torch.utils.data.Subset(windows, range(0, len(windows), 5))
    model = tiny_model("vanilla-none-small-shallow", 20)
    results = evaluate_model(model, dataset, protocol="report", tc=False, progress=False)
    preds = np.stack(clip_predictions(model, dataset))
    labels = np.stack([dataset[i]["labels"].numpy() for i in range(len(dataset))])
    assert (labels[:, -1] == 19).any(), "the tree paints void labelIds"
    assert_figures(results.scored, reference(preds[:, -1], labels[:, -1], 20), [*NAMES_19, "void"])
    assert results.headline["mAcc"] == results.aacc  # the report's mAcc is pixel accuracy


def test_per_position_context_equals_runs_on_window_suffixes(cityscapes_tree):
    windows = CityscapesSequences(cityscapes_tree.root, "val", num_frames=3, gt_position="last")
    dataset = torch.utils.data.Subset(windows, range(3))
    model = tiny_model("vanilla-cgru-small-shallow", 19)
    results = evaluate_model(model, dataset, per_position="auto", tc=False, progress=False)
    position = results.per_position
    assert position is not None
    assert position.mode == "context" and len(position.miou) == 3 and position.frames == [3, 3, 3]
    with torch.no_grad():
        for seen in (1, 2, 3):
            preds, labels = [], []
            for i in range(len(dataset)):
                sample = dataset[i]
                logits = model(sample["frames"][None, 3 - seen :])[0][0, -1]
                preds.append(logits.argmax(dim=0).numpy())
                labels.append(sample["labels"][-1].numpy())
            expected = reference(np.stack(preds), np.stack(labels), 19)["miou"]
            assert position.miou[seen - 1] == pytest.approx(expected)
    assert position.miou[-1] == pytest.approx(results.miou)
    assert len(set(position.miou)) > 1, "a recurrent model should depend on how much it has seen"

    per_frame = evaluate_model(
        tiny_model("vanilla-none-small-shallow", 19),
        dataset,
        per_position="context",
        tc=False,
        progress=False,
    )
    assert per_frame.per_position is not None and per_frame.per_position.miou == [per_frame.miou] * 3


class StaticWindows(torch.utils.data.Dataset):
    """Windows whose T frames are one textured image: a static scene.

    Labels: left half sky, right half road, on the last frame only or (``dense``) on every frame, where a
    block turns to car on frame 3 so that the ground truth is not constant everywhere.
    """

    def __init__(self, count: int = 2, num_frames: int = 3, dense: bool = False, size=(32, 64)):
        rng = np.random.default_rng(3)
        self.images = []
        for _ in range(count):
            noise = cv2.GaussianBlur((rng.random((*size, 3)) * 255).astype(np.float32), (0, 0), 1.5)
            self.images.append(torch.from_numpy(noise.clip(0, 255).astype(np.uint8)).permute(2, 0, 1))
        self.num_frames = num_frames
        self.dense = dense
        self.label_set = "cityscapes"

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        frames = self.images[index].expand(self.num_frames, -1, -1, -1)
        height, width = frames.shape[-2:]
        labels = torch.zeros(self.num_frames, height, width, dtype=torch.int64)
        labels[:, :, : width // 2] = 10
        labels[:, 4:8, 4:12] = IGNORE
        if self.dense:
            labels[3, 8:16, 20:40] = 13
            labelled = torch.ones(self.num_frames, dtype=torch.bool)
        else:
            labelled = torch.arange(self.num_frames) == self.num_frames - 1
            labels[~labelled] = IGNORE
        return {
            "frames": normalize(frames),
            "labels": labels,
            "labelled": labelled,
            "corruption": torch.zeros(self.num_frames, dtype=torch.int64),
            "gt_index": self.num_frames - 1,
            "name": f"static_{index:06d}_000000",
        }


def test_tc_is_one_on_a_static_scene_and_keys_are_documented():
    results = evaluate_model(tiny_model("vanilla-none-small-shallow", 19), StaticWindows(), progress=False)
    assert results.tc == 1.0 and results.tc_pairs == 2 * 2
    saved = results.to_dict()
    for key in (
        "miou",
        "macc",
        "aacc",
        "iou",
        "acc",
        "headline",
        "per_position",
        "mvc_8",
        "mvc_16",
        "classes",
    ):
        assert key in saved
    assert results.miou is not None and math.isfinite(results.miou)
    assert results.aacc is not None and math.isfinite(results.aacc)
    assert results.per_position is not None and len(results.per_position.miou) == 3
    assert "all_frames" not in saved and "corruption" not in saved
    assert results.mvc_8 is None and results.mvc_runs == {"8": 0, "16": 0}


def test_mvc_over_fully_labelled_windows():
    dataset = StaticWindows(num_frames=9, dense=True)
    model = tiny_model("vanilla-none-small-shallow", 19)
    make_class_win_half_the_pixels(model, dataset[0]["frames"], 10)  # some pixels right, some wrong
    results = evaluate_model(model, dataset, tc=False, progress=False)
    scores = []
    for i, pred in enumerate(clip_predictions(model, dataset)):
        labels = dataset[i]["labels"].numpy()
        for start in (0, 1):  # the two runs of 8 frames in a 9-frame window
            truth, guess = labels[start : start + 8], pred[start : start + 8]
            truth_constant = np.all(truth == truth[0], axis=0) & (truth[0] != IGNORE)
            right_throughout = np.all(guess == truth[0], axis=0)
            scores.append(np.sum(truth_constant & right_throughout) / truth_constant.sum())
    assert results.mvc_runs == {"8": 4, "16": 0}
    assert 0 < np.mean(scores) < 1
    assert results.mvc_8 == pytest.approx(np.mean(scores)) and results.mvc_16 is None


def test_save_predictions_writes_official_label_id_pngs(cityscapes_tree, tmp_path):
    dataset = CityscapesSequences(
        cityscapes_tree.root, "val", num_frames=2, gt_position="last", label_set="report"
    )
    model = tiny_model("vanilla-none-small-shallow", 20)
    make_class_win_half_the_pixels(model, dataset[0]["frames"], 19)  # so that void -> labelId 0 shows
    evaluate_model(
        model,
        dataset,
        tc=False,
        progress=False,
        save_predictions=tmp_path / "preds",
        prediction_size=(64, 128),
    )
    label_id_of = {label.train_id: label.id for label in LABELS if label.train_id != 255}
    written = sorted(p.name for p in (tmp_path / "preds").iterdir())
    assert written == sorted(f"{name}_pred.png" for name in dataset.names)
    preds = clip_predictions(model, dataset)
    saw_void = False
    for name, pred in zip(dataset.names, preds):
        with Image.open(tmp_path / "preds" / f"{name}_pred.png") as image:
            assert image.mode == "L" and image.size == (128, 64)
            label_ids = np.asarray(image)
        upsampled = pred[-1].repeat(2, axis=0).repeat(2, axis=1)
        expected = np.vectorize(lambda c: label_id_of.get(int(c), 0))(upsampled)
        assert np.array_equal(label_ids, expected)
        saw_void |= bool((upsampled == 19).any())
    assert saw_void


def _rank_main(rank: int, world: int, port: int, root: str, weights: str, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build_model("vanilla-cgru-small-shallow", num_classes=19)
        model.load_state_dict(torch.load(weights))
        dataset = CityscapesSequences(root, "val", num_frames=3, gt_position="last")
        subset = torch.utils.data.Subset(dataset, range(3))  # odd: ranks get 2 and 1 windows
        results = evaluate_model(model, subset, per_position="context", progress=False)
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(results.to_dict(), f)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_return_identical_figures_equal_to_one_process(cityscapes_tree, tmp_path):
    import socket

    model = tiny_model("vanilla-cgru-small-shallow", 19)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(
        _rank_main,
        args=(2, port, str(cityscapes_tree.root), str(tmp_path / "weights.pt"), str(tmp_path)),
        nprocs=2,
    )
    first = json.loads((tmp_path / "rank0.json").read_text())
    second = json.loads((tmp_path / "rank1.json").read_text())
    dataset = CityscapesSequences(cityscapes_tree.root, "val", num_frames=3, gt_position="last")
    single = evaluate_model(
        model, torch.utils.data.Subset(dataset, range(3)), per_position="context", progress=False
    ).to_dict()
    assert first == second
    assert first["windows"] == 3 and first["per_position"]["frames"] == [3, 3, 3]
    for key in ("miou", "macc", "aacc", "pixels", "tc_pairs", "tc"):
        assert first[key] == pytest.approx(single[key]), key
    assert first["per_position"]["miou"] == pytest.approx(single["per_position"]["miou"])
    assert first["iou"] == pytest.approx(
        {name: v for name, v in single["iou"].items() if v is not None}
        | {name: None for name, v in single["iou"].items() if v is None}
    )


def write_checkpoint(
    path, tree_root, model_name="vanilla-crnn-small-shallow", num_classes=19, label_set=None, model=None
):
    model = model if model is not None else tiny_model(model_name, num_classes)
    save_checkpoint(
        path,
        {
            "model_name": model_name,
            "num_classes": num_classes,
            "label_set": label_set or ("report" if num_classes == 20 else "cityscapes"),
            "model": model.state_dict(),
            "normalization": {"mean": list(MEAN), "std": list(STD)},
            "config": {"data": {"root": str(tree_root), "size": [32, 64]}, "eval": {"num_frames": 3}},
        },
    )
    return model


def test_evaluate_command_end_to_end(cityscapes_tree, tmp_path, capsys):
    checkpoint = tmp_path / "run" / "best.pt"
    model = tiny_model("vanilla-crnn-small-shallow", 19)
    windows = CityscapesSequences(cityscapes_tree.root, "val", num_frames=3, gt_position="last")
    make_class_win_half_the_pixels(model, windows[0]["frames"], 0)  # road wins about half the pixels
    write_checkpoint(checkpoint, cityscapes_tree.root, model=model)
    preds_dir = tmp_path / "preds"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--save-predictions",
            str(preds_dir),
            "--max-samples",
            "3",
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "run" / "best-val-standard.json").read_text())
    assert results["windows"] == 3 and results["frames_per_window"] == 3
    assert (
        results["run"]["data"] == str(cityscapes_tree.root) and results["per_position"]["mode"] == "context"
    )
    assert results["tc"] is not None and math.isfinite(results["miou"])
    table = (tmp_path / "run" / "best-val-standard.md").read_text()
    assert table in capsys.readouterr().out
    saved = sorted(preds_dir.glob("*_pred.png"))
    assert len(saved) == 3
    # The model predicts several classes, some of them right: figures of a one-class model prove little.
    assert all(len(np.unique(np.asarray(Image.open(p)))) >= 2 for p in saved)
    assert sum(1 for value in results["iou"].values() if value) >= 2

    out = tmp_path / "report.json"
    options = [
        "--protocol",
        "report",
        "--no-tc",
        "--max-samples",
        "2",
        "--num-frames",
        "2",
        "--gt-position",
        "1",
    ]
    code = main(["evaluate", "--checkpoint", str(checkpoint), *options, "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "report" and len(report["classes"]) == 20 and report["tc"] is None
    assert report["frames_per_window"] == 2 and out.with_suffix(".md").exists()


def test_evaluate_command_rejects_bad_checkpoints(cityscapes_tree, tmp_path, capsys):
    def error_of(args):
        assert main(["evaluate", *args]) == 2
        return capsys.readouterr().err

    assert "does not exist" in error_of(["--checkpoint", str(tmp_path / "missing.pt")])
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    assert "corrupt" in error_of(["--checkpoint", str(corrupt)])
    mismatched = tmp_path / "mismatch.pt"
    write_checkpoint(mismatched, cityscapes_tree.root, num_classes=20, label_set="cityscapes")
    message = error_of(["--checkpoint", str(mismatched)])
    assert "20-class model" in message and "'cityscapes'" in message and "19 classes" in message
    no_root = tmp_path / "noroot.pt"
    model = tiny_model("vanilla-none-small-shallow", 19)
    save_checkpoint(
        no_root, {"model_name": "vanilla-none-small-shallow", "num_classes": 19, "model": model.state_dict()}
    )
    assert "--data" in error_of(["--checkpoint", str(no_root)])
    valid = tmp_path / "valid.pt"
    write_checkpoint(valid, cityscapes_tree.root)
    assert "HEIGHTxWIDTH" in error_of(["--checkpoint", str(valid), "--size", "big"])
    assert "do not fit" in error_of(["--checkpoint", str(valid), "--num-frames", "40"])
