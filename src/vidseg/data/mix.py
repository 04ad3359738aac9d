"""CutMix for clips: a box of a second training clip pasted at the same place on every frame of a window.

CutMix (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features", ICCV
2019) as segmentation uses it (French et al., "Semi-supervised semantic segmentation needs strong, varied
perturbations", BMVC 2020): inside the box the frames and labels are the partner clip's, outside they are the
clip's own, so every pixel keeps one hard label that is true for what the pixel shows. The box is the same on
every frame of the window, so motion stays coherent inside and outside it, and the pasted content is a region
that memory of the previous frames cannot predict.

Pixel-blending mixup is not offered: a pixel that is 60% car and 40% road has no class, the loss would need soft
targets (every loss term, class weights and the ignore label included), and a flow-based consistency loss has no
motion to follow in a blend of two scenes.

Labels of the pasted region come from the partner's frame at the same window position; where that frame is not
labelled they are the ignore label (255). On sparsely labelled data (Cityscapes, CamVid) with
``gt_position: random`` the two annotated frames often sit at different positions, and the pasted region of the
annotated frame then counts in no loss: the paste still acts as an occlusion the model must segment around.

Deterministic: a seeded sample ``dataset[(index, seed)]`` draws whether to mix, the partner, its seed and the box
from ``seed`` alone, and the clip itself is ``dataset[(index, seed)]`` unchanged (a sample that is not mixed is
the wrapped dataset's sample, bit for bit).
"""

from __future__ import annotations

import numpy as np
import torch

from vidseg.data.clips import WrappedClips
from vidseg.data.corrupt import key_seed


def cutmix_box(rng: np.random.Generator, height: int, width: int, alpha: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a CutMix box: area share 1 - lambda with lambda ~ Beta(alpha, alpha), the
    box's aspect ratio the frame's, its centre uniform over the frame, clipped at the edges (as Yun et al.)."""
    share = 1.0 - float(rng.beta(alpha, alpha))
    box_h, box_w = round(height * share**0.5), round(width * share**0.5)
    centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(centre_y - box_h // 2, 0), min(centre_y - box_h // 2 + box_h, height)
    left, right = max(centre_x - box_w // 2, 0), min(centre_x - box_w // 2 + box_w, width)
    return top, bottom, left, right


def paste_clip(sample: dict, partner: dict, box: tuple[int, int, int, int]) -> dict:
    """``sample`` with the ``box`` region of every frame (and label map) taken from ``partner``.

    ``labelled`` becomes true where either clip's frame is labelled; a frame's corruption code is the sample's
    where it has one, else the partner's. Raises ValueError if the two clips differ in shape.
    """
    frames, labels = sample["frames"], sample["labels"]
    if partner["frames"].shape != frames.shape or partner["labels"].shape != labels.shape:
        raise ValueError(
            f"cannot paste clip {partner.get('name')!r} of shape {tuple(partner['frames'].shape)} into clip "
            f"{sample.get('name')!r} of shape {tuple(frames.shape)}: training clips must share one working size"
        )
    top, bottom, left, right = box
    frames, labels = frames.clone(), labels.clone()
    frames[..., top:bottom, left:right] = partner["frames"][..., top:bottom, left:right]
    labels[..., top:bottom, left:right] = partner["labels"][..., top:bottom, left:right]
    corruption = torch.as_tensor(sample["corruption"])
    return {
        **sample,
        "frames": frames,
        "labels": labels,
        "labelled": torch.as_tensor(sample["labelled"]) | torch.as_tensor(partner["labelled"]),
        "corruption": torch.where(corruption != 0, corruption, torch.as_tensor(partner["corruption"])),
    }


class CutMixClips(WrappedClips):
    """A training clip dataset whose samples are, with probability ``probability``, CutMixed with another clip
    of the dataset (see the module docstring).

    Args:
        dataset: samples as ``vidseg.data`` documents them; indices pass through, including the ``(index, seed)``
            form of seeded training samples (``train.SeededSamples``).
        probability: share of samples that are mixed.
        alpha: Beta(alpha, alpha) parameter of the share of the clip that stays its own (1 = uniform).
    """

    def __init__(self, dataset, probability: float, alpha: float = 1.0):
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        super().__init__(dataset)
        self.probability = probability
        self.alpha = alpha

    def __getitem__(self, index):
        sample = self.dataset[index]
        if isinstance(index, tuple):
            position, seed = int(index[0]), int(index[1])
        else:  # unseeded, like the wrapped dataset: torch's global RNG
            position, seed = int(index), int(torch.randint(0, 2**62, ()).item())
        rng = np.random.default_rng(key_seed(seed, "cutmix"))
        count = len(self.dataset)
        if count < 2 or rng.random() >= self.probability:
            return sample
        partner_index = (position % count + 1 + int(rng.integers(count - 1))) % count  # any other sample
        partner = self.dataset[(partner_index, key_seed(seed, "cutmix-partner") % 2**63)]
        height, width = sample["frames"].shape[-2:]
        return paste_clip(sample, partner, cutmix_box(rng, height, width, self.alpha))
