"""Train/eval transforms by recipe name.

Two kinds of pipelines exist because the datasets come in two forms: small bundled datasets
(digits, lfw) are kept as normalised in-memory tensors (fast to reload in every Ray worker),
while folder-backed datasets (imagefolder, cifar10) decode PIL images per sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms as T

RECIPES = ("none", "light", "deit")

Transform = Callable[[torch.Tensor], torch.Tensor]


class RandomShift:
    """Translate a CxHxW tensor by up to `pixels` in each direction (edge-replicated border).

    Digits and faces are roughly centred, so a 1-pixel jitter in the upsampled space is an
    honest augmentation: it never cuts off the object, only breaks the exact pixel alignment.
    """

    def __init__(self, pixels: int = 1) -> None:
        self.pixels = pixels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pixels
        h, w = x.shape[-2:]
        padded = F.pad(x.unsqueeze(0), (p, p, p, p), mode="replicate").squeeze(0)
        top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
        return padded[:, top : top + h, left : left + w]


def _check_recipe(recipe: str) -> None:
    if recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; valid recipes: {', '.join(RECIPES)}")


def tensor_train_transform(recipe: str) -> Transform | None:
    """Training transform for in-memory tensor datasets (digits, lfw).

    `deit` here is the shift plus random erasing (p=0.25): RandAugment's photometric ops need
    real photographs, not 8x8 digit scans.
    """
    _check_recipe(recipe)
    if recipe == "none":
        return None
    if recipe == "light":
        return RandomShift(1)
    return T.Compose([RandomShift(1), T.RandomErasing(p=0.25)])


Stats = tuple[float, ...] | None


def _normalise(mean: Stats, std: Stats) -> list[Transform]:
    """To tensor and normalise; ImageNet statistics unless the source model's `pretrained_cfg` says otherwise."""
    return [T.ToTensor(), T.Normalize(mean or IMAGENET_DEFAULT_MEAN, std or IMAGENET_DEFAULT_STD)]


def pil_eval_transform(image_size: int, mean: Stats = None, std: Stats = None) -> Transform:
    """Resize + center-crop + normalisation, the timm evaluation convention."""
    return T.Compose([T.Resize(image_size), T.CenterCrop(image_size), *_normalise(mean, std)])


@dataclass(frozen=True)
class Preprocessing:
    """What turns an image into the model's evaluation input, written down beside the transform that does
    it, so a deployed model's users (the exported model card) feed it exactly what it was tested on."""

    input_size: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]  # per input channel, subtracted after scaling to [0, 1]
    std: tuple[float, ...]
    interpolation: str
    resize: str  # how the image reaches its input size
    crop: str
    channels: str
    steps: tuple[str, ...]  # the whole recipe, in order, on a PIL image
    stored_size: int | None = None  # grey datasets: the square size images are kept at before resizing


def pil_preprocessing(image_size: int, mean: Stats = None, std: Stats = None) -> Preprocessing:
    """`pil_eval_transform` in words."""
    mean, std = tuple(mean or IMAGENET_DEFAULT_MEAN), tuple(std or IMAGENET_DEFAULT_STD)
    return Preprocessing(
        input_size=(3, image_size, image_size),
        mean=mean,
        std=std,
        interpolation="bilinear (antialiased)",
        resize=f"shorter side to {image_size} px, aspect ratio kept",
        crop=f"center {image_size}x{image_size}",
        channels="RGB",
        steps=(
            "image.convert('RGB')",
            f"resize the shorter side to {image_size} px: torchvision Resize({image_size}), bilinear with "
            "antialiasing (PIL Image.BILINEAR)",
            f"center-crop {image_size}x{image_size}",
            "scale to [0, 1] (pixel / 255), channels first (C, H, W)",
            f"per channel: (x - mean) / std, mean {list(mean)}, std {list(std)}",
        ),
    )


def tensor_preprocessing(source: str, stored: int, image_size: int, mean: float, std: float) -> Preprocessing:
    """The in-memory datasets' recipe (`datasets._tensor_splits`) in words: `source` says how a PIL image
    becomes the stored `stored` x `stored` grey image in [0, 1]; one mean and std for every pixel."""
    return Preprocessing(
        input_size=(3, image_size, image_size),
        mean=(mean,) * 3,
        std=(std,) * 3,
        interpolation="bilinear, half-pixel centres, no antialiasing",
        resize=f"{stored}x{stored} -> {image_size}x{image_size}",
        crop="none",
        channels="grey, repeated to 3 channels",
        steps=(
            source,
            f"resize {stored}x{stored} -> {image_size}x{image_size} bilinear without antialiasing: "
            "torch.nn.functional.interpolate(x, size, mode='bilinear', align_corners=False), which equals "
            "PIL's resize(Image.BILINEAR) of a float ('F' mode) image when enlarging",
            f"(x - {mean!r}) / {std!r}: one mean and std for every pixel (the training split's)",
            "repeat the grey channel 3 times: shape (3, H, W)",
        ),
        stored_size=stored,
    )


def pil_train_transform(recipe: str, image_size: int, mean: Stats = None, std: Stats = None) -> Transform:
    """Training transform for PIL-backed datasets; `deit` is RandAugment m9 + random erasing 0.25."""
    _check_recipe(recipe)
    if recipe == "none":
        return pil_eval_transform(image_size, mean, std)
    normalise = _normalise(mean, std)
    if recipe == "light":
        return T.Compose(
            [
                T.Resize(image_size),
                T.RandomCrop(image_size, padding=image_size // 8, padding_mode="reflect"),
                T.RandomHorizontalFlip(),
                *normalise,
            ]
        )
    return T.Compose(
        [
            T.RandomResizedCrop(image_size),
            T.RandomHorizontalFlip(),
            T.RandAugment(num_ops=2, magnitude=9),
            *normalise,
            T.RandomErasing(p=0.25),
        ]
    )
