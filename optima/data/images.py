"""Image decoding (by content, never by extension) and the tensor transform every loader shares."""

from __future__ import annotations

import os
from pathlib import Path

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


def normalization() -> tuple[torch.Tensor, torch.Tensor]:
    """open_clip's OPENAI_DATASET_MEAN/STD as [3, 1, 1] tensors (the CoCa teacher was trained with them)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1), torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)


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
        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode

        image = load_image(path)
        size = self.image_size
        if image.size != (size, size):
            image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC)
            image = TF.center_crop(image, size)
        pixels = TF.pil_to_tensor(image)
        if self.cache is not None:
            self.cache[path] = pixels
        return pixels

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        return (self.pixels(path).float() / 255.0 - self.mean) / self.std
