"""Image decoding (by content, never by extension) and the tensor transform every loader shares."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from optima.errors import DataError


def load_image(path: str | os.PathLike) -> Image.Image:
    """RGB image; PIL picks the decoder from the file header (NLVR2 '.png' files are often JPEGs)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


# open_clip.constants.OPENAI_DATASET_MEAN / _STD (the CoCa teacher's normalisation), copied so that loading
# data does not import open_clip and torchvision (seconds per data-loader worker); a test checks they agree
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)


def normalization() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as [3, 1, 1] tensors."""
    return torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1), torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (bicubic), then the centre square: open_clip's eval transform."""
    if image.size == (size, size):
        return image
    width, height = image.size
    # the same arithmetic as torchvision's Resize(size) and CenterCrop(size)
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


class ImageLoader:
    """Path -> normalised FloatTensor[3, S, S]: shorter side resized to S (bicubic), centre crop, as
    open_clip's eval transform. No random augmentation: the synthetic texts talk about positions
    ("top left"), which crops and flips would falsify. With ``cache``, each image is decoded once and
    kept as uint8 (4x smaller than float)."""

    def __init__(self, image_size: int, cache: bool = True):
        self.image_size = image_size
        self.cache: dict[Path, torch.Tensor] | None = {} if cache else None
        self.mean, self.std = normalization()

    def pixels(self, path: str | os.PathLike) -> torch.Tensor:
        """uint8 [3, S, S]."""
        path = Path(path)
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        image = resize_center_crop(load_image(path), self.image_size)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
        if self.cache is not None:
            self.cache[path] = pixels
        return pixels

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        return (self.pixels(path).float() / 255.0 - self.mean) / self.std
