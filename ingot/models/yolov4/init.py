"""Random but well-conditioned weights, for artifacts compiled without trained weights (tests, benchmarks).

PyTorch's default init shrinks the signal at every one of YOLOv4's 110 layers, leaving heads that are constant up
to rounding, and a verification on them would measure noise. So: He-normal convolutions, then each batch norm's
running statistics set from one forward pass over random images of the input size (statistics taken at another
size leave the heads' outputs 10-50x too large), which keeps every layer's output at unit scale.
"""

from __future__ import annotations

import torch
from torch import nn

from ingot.models.yolov4.network import YOLOv4

CALIBRATION_BATCH = 2


def randomize(model: YOLOv4, input_size: int, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, (2 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0, 0.5, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.2, generator=generator)
                module.reset_running_stats()
                module.momentum = None  # a cumulative average: one batch sets the statistics exactly
        images = torch.rand(CALIBRATION_BATCH, 3, input_size, input_size, generator=generator)
        model.train()
        model(images)
        model.eval()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
