"""How stored image bytes become pixels: one sample at a time in the DataLoader workers (PIL or
torchvision's C++ decoders), or a whole batch on the training device.

Why a device path: on a GPU machine the workers' JPEG decode bounds training on photos (the
GPU waited on CPU decoding at 4.4-7.5k img/s with 14 workers on one H200, and decoding runs at
~435 img/s per core at 224 px here). :func:`decode_batch` hands a batch of JPEG bytes to
``torchvision.io.decode_jpeg(..., device="cuda")`` (nvJPEG, one call per batch), so the workers
only parse tars. The same code runs with ``device="cpu"`` (libjpeg-turbo), which is how it is
tested without a GPU.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112


def decode_image(data: bytes, mode: str | None = None) -> Image.Image:
    """Decode image bytes to PIL, EXIF orientation applied, converting the mode explicitly."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)
        target = mode or (image.mode if image.mode in ("L", "RGB") else "RGB")
        return image.convert(target) if image.mode != target else image.copy()


def block_tensor(pixels: np.ndarray, mode: str | None = None) -> torch.Tensor:
    """uint8 (B, H, W[, 3]) block pixels as a contiguous (B, C, H, W) tensor in ``mode``.

    RGB becomes L by ITU-R 601 weights rounded as PIL's ``convert("L")`` does; L becomes RGB by
    repeating the channel."""
    tensor = torch.from_numpy(pixels)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
        return tensor.expand(-1, 3, -1, -1).contiguous() if mode == "RGB" else tensor
    tensor = tensor.permute(0, 3, 1, 2)
    if mode == "L":
        weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
        grey = ((tensor.to(torch.int32) * weights).sum(1, keepdim=True) + 0x8000) >> 16
        return grey.to(torch.uint8)
    return tensor.contiguous()


def decode_image_array(pixels: np.ndarray, mode: str | None = None) -> Image.Image:
    """One block image (uint8 (H, W) or (H, W, 3)) as PIL, converted to ``mode``."""
    image = Image.fromarray(pixels)
    return image.convert(mode) if mode and image.mode != mode else image


def decode_tensor(data: bytes, mode: str | None = None) -> torch.Tensor:
    """Decode PNG/JPEG/WebP bytes straight to a uint8 (C, H, W) tensor.

    torchvision's C++ decoders take ~20 µs for a 28×28 PNG against ~40 µs for PIL plus the
    array copy. ``mode`` is ``"L"``, ``"RGB"`` or None (keep grey or RGB, drop alpha).
    """
    from torchvision.io import ImageReadMode, decode_image as tv_decode

    read_mode = {"L": ImageReadMode.GRAY, "RGB": ImageReadMode.RGB}.get(mode or "")
    tensor = tv_decode(
        torch.frombuffer(bytearray(data), dtype=torch.uint8),
        mode=read_mode or ImageReadMode.UNCHANGED,
        apply_exif_orientation=True,
    )
    if read_mode is None and tensor.shape[0] in (2, 4):  # grey+alpha or RGBA: drop alpha explicitly
        tensor = tensor[: tensor.shape[0] - 1]
    return tensor


def upright_jpeg(data: bytes) -> bool:
    """A JPEG without an EXIF rotation: nvJPEG decodes it as is (torchvision applies EXIF
    orientation on the CPU only). Reads the header, not the pixels."""
    if not data.startswith(b"\xff\xd8"):
        return False
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(EXIF_ORIENTATION, 1)) == 1
    except OSError:  # unreadable: the CPU decoder names the failure
        return False


def decode_batch(
    images: Sequence[bytes | torch.Tensor],
    mode: str,
    transform: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    keys: Sequence[str] | None = None,
) -> torch.Tensor:
    """A batch of encoded (or already decoded) images as uint8 (B, C, S, S) on ``device``.

    Upright JPEGs are decoded together by ``decode_jpeg`` on ``device``; any other image (PNG,
    WebP, a JPEG with an EXIF rotation) by :func:`decode_tensor` on the CPU, and a tensor (a
    block-layout sample, decoded already) is used as it is. Each image then goes through
    ``transform`` on the device (e.g. ``CenterCropResize``, making the sides equal). When the
    batched call fails (nvJPEG refuses some JPEGs, e.g. CMYK ones), that batch's JPEGs are
    decoded one by one on the CPU instead, with a warning.

    Args:
        images: encoded bytes or uint8 (C, H, W) tensors in ``mode``.
        mode: ``"L"`` or ``"RGB"``, the mode every image is converted to.
        transform: uint8 (C, H, W) → uint8 (C, S, S), with one S for the batch.
        device: where decoding and ``transform`` run.
        keys: the samples' keys, to name an image that cannot be decoded at all.

    Raises:
        ValueError: an image no decoder can read, named by its key.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    read_mode = ImageReadMode.GRAY if mode == "L" else ImageReadMode.RGB
    decoded: list[torch.Tensor | None] = [None] * len(images)
    jpegs = [i for i, item in enumerate(images) if isinstance(item, bytes) and upright_jpeg(item)]
    if jpegs:
        encoded = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in jpegs]
        try:
            for index, image in zip(jpegs, decode_jpeg(encoded, mode=read_mode, device=device)):
                decoded[index] = image
        except RuntimeError as exc:
            log.warning(
                "batched JPEG decode on %s failed (%s); this batch goes to the CPU", device, exc
            )
    for index, item in enumerate(images):
        if decoded[index] is None:
            try:
                tensor = item if isinstance(item, torch.Tensor) else decode_tensor(item, mode)
            except RuntimeError as exc:
                name = keys[index] if keys else f"image {index} of the batch"
                raise ValueError(f"cannot decode {name}: {exc}") from exc
            decoded[index] = tensor.to(device)
    return torch.stack([transform(image) for image in decoded if image is not None])
