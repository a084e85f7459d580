"""Data augmentation for image batches ``(N, C, H, W)``: random crops and horizontal flips.

Plain NumPy functions that take a generator, and :class:`RandomCropFlip`, a callback that gives
every epoch of :meth:`fit <nn_from_scratch.model.Sequential.fit>` freshly cropped and flipped
images drawn from the model's seeded generator::

    augment = RandomCropFlip(x_train, padding=2, flip=True)
    model.fit(augment.images, y_train, epochs=10, batch_size=128, callbacks=[augment])

``fit`` never copies its ``x`` whole (each batch is gathered by index), so rewriting
``augment.images`` in place at the start of each epoch is what every batch of that epoch sees.
Each image gets one independent crop and flip per epoch, as a torchvision transform applied
when a sample is loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .callbacks import Callback

__all__ = ["RandomCropFlip", "random_crop", "random_flip"]


def _check_images(images: Any, who: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim < 3:
        raise ValueError(f"{who}: expected images (N, ..., H, W) with at least 3 axes, got shape {images.shape}")
    return images


def random_crop(images: np.ndarray, padding: int, rng: np.random.Generator, out: np.ndarray | None = None) -> np.ndarray:
    """Pad every image with ``padding`` zeros on each side and cut a random ``H x W`` window.

    As torchvision's ``RandomCrop((H, W), padding=padding)`` (zero fill): image ``n`` is shifted
    by ``(sy, sx)``, each drawn uniformly from ``[-padding, padding]``, and the pixels it leaves
    are zeros::

        out[n, ..., y, x] = images[n, ..., y + sy, x + sx]   (0 outside the image)

    Args:
        images: ``(N, ..., H, W)``, any dtype.
        padding: the largest shift, ``>= 0``; ``padding < min(H, W)``.
        rng: draws the shifts (two integers per image, ``rng.integers``).
        out: where to write (same shape and dtype as ``images``, not ``images`` itself);
            a new array when None.

    Returns:
        ``out``.

    Example:
        >>> random_crop(np.ones((4, 1, 28, 28)), 2, np.random.default_rng(0)).shape
        (4, 1, 28, 28)
    """
    images = _check_images(images, "random_crop")
    h, w = images.shape[-2:]
    p = int(padding)
    if p < 0 or p >= min(h, w):
        raise ValueError(f"random_crop: padding must be in [0, {min(h, w) - 1}] for {h}x{w} images, got {padding}")
    if out is None:
        out = np.empty_like(images)
    elif out.shape != images.shape or out.dtype != images.dtype or np.shares_memory(out, images):
        raise ValueError(f"random_crop: out must be a separate array of shape {images.shape} and dtype {images.dtype}")
    shifts = rng.integers(-p, p + 1, size=(len(images), 2))
    code = (shifts[:, 0] + p) * (2 * p + 1) + (shifts[:, 1] + p)
    out.fill(0)
    for sy in range(-p, p + 1):
        for sx in range(-p, p + 1):
            sel = np.flatnonzero(code == (sy + p) * (2 * p + 1) + (sx + p))
            if sel.size:
                out[sel, ..., max(0, -sy):h - max(0, sy), max(0, -sx):w - max(0, sx)] = \
                    images[sel, ..., max(0, sy):h - max(0, -sy), max(0, sx):w - max(0, -sx)]
    return out


def random_flip(images: np.ndarray, rng: np.random.Generator, probability: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with ``probability``, in place; returns ``images``.

    As torchvision's ``RandomHorizontalFlip(p=probability)``: one uniform draw per image
    (``rng.random(N)``); image ``n`` is flipped when its draw is below ``probability``.

    Args:
        images: a batch ``(N, C, H, W)``, changed in place.
        rng: the generator that draws one uniform number per image.
        probability: the chance of flipping each image.

    Returns:
        ``images``, flipped where drawn.

    Example:
        >>> random_flip(np.arange(4.0).reshape(1, 1, 1, 4), np.random.default_rng(0), 1.0)[0, 0, 0]
        array([3., 2., 1., 0.])
    """
    images = _check_images(images, "random_flip")
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"random_flip: probability must be in [0, 1], got {probability}")
    sel = np.flatnonzero(rng.random(len(images)) < probability)
    images[sel] = images[sel][..., ::-1]
    return images


class RandomCropFlip(Callback):
    """Fresh random crops (zero padding ``padding``) and horizontal flips at every epoch.

    Keeps the original ``images`` and exposes a working copy, :attr:`images`, to pass to
    ``fit``; at the start of each epoch it rewrites that copy in place with
    ``random_flip(random_crop(original))``, the draws taken from the model's generator
    (``model.rng``), so a seeded model trains reproducibly.

    Args:
        images: the training images ``(N, C, H, W)``, already preprocessed (the padding is zeros
            of that scale, e.g. black for ``x / 255``).
        padding: largest shift of :func:`random_crop`; 0 for no crops.
        flip: whether to mirror half the images (:func:`random_flip`).

    Example:
        >>> augment = RandomCropFlip(x_train, padding=2)
        >>> model.fit(augment.images, y_train, epochs=5, callbacks=[augment])   # doctest: +SKIP
    """

    def __init__(self, images: np.ndarray, padding: int = 2, flip: bool = True) -> None:
        super().__init__()
        self.original = _check_images(images, "RandomCropFlip")
        self.images = np.array(self.original, copy=True)
        self.padding, self.flip = int(padding), bool(flip)
        if self.padding < 0 or self.padding >= min(self.original.shape[-2:]):
            raise ValueError(f"RandomCropFlip: padding must be in [0, {min(self.original.shape[-2:]) - 1}], got {padding}")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        rng = self.model.rng
        if self.padding:
            random_crop(self.original, self.padding, rng, out=self.images)
        else:
            self.images[...] = self.original
        if self.flip:
            random_flip(self.images, rng)
