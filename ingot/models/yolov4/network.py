"""YOLOv4 as published: CSPDarknet53 with Mish, SPP, a PANet neck and three YOLO heads.

Module names follow the Tianxiaomo/pytorch-YOLOv4 port (``down1.conv1.conv.0.weight``), so its state dicts load
as they are, and convolutions are registered in yolov4.cfg's order, so Darknet's flat weight file loads in
``conv_layers()`` order. ``forward`` returns the three heads' raw maps; decoding them is the runtime's job.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ingot.models.yolov4.spec import NUM_CLASSES


class ConvBN(nn.Module):
    """Darknet's [convolutional] layer: conv, then batch norm (or a conv bias), then the activation."""

    def __init__(self, cin: int, cout: int, size: int, stride: int, activation: str, bn: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, size, stride, (size - 1) // 2, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        self.conv = nn.ModuleList(layers)  # the port's naming: conv.0 is the convolution, conv.1 the batch norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.conv:
            x = layer(x)
        if self.activation == "mish":
            return F.mish(x)
        if self.activation == "leaky":
            return F.leaky_relu(x, 0.1)
        return x


class ResBlock(nn.Module):
    """``count`` residual units of a 1x1 and a 3x3 Mish convolution."""

    def __init__(self, ch: int, count: int) -> None:
        super().__init__()
        self.module_list = nn.ModuleList(
            nn.ModuleList([ConvBN(ch, ch, 1, 1, "mish"), ConvBN(ch, ch, 3, 1, "mish")]) for _ in range(count)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for first, second in self.module_list:
            x = x + second(first(x))
        return x


class DownSample1(nn.Module):
    """The stem and first CSP stage (its residual unit has half width, as in yolov4.cfg)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBN(3, 32, 3, 1, "mish")
        self.conv2 = ConvBN(32, 64, 3, 2, "mish")
        self.conv3 = ConvBN(64, 64, 1, 1, "mish")
        self.conv4 = ConvBN(64, 64, 1, 1, "mish")
        self.conv5 = ConvBN(64, 32, 1, 1, "mish")
        self.conv6 = ConvBN(32, 64, 3, 1, "mish")
        self.conv7 = ConvBN(64, 64, 1, 1, "mish")
        self.conv8 = ConvBN(128, 64, 1, 1, "mish")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = self.conv2(self.conv1(x))
        split = self.conv3(x2)
        x4 = self.conv4(x2)
        x6 = self.conv6(self.conv5(x4)) + x4
        return self.conv8(torch.cat([self.conv7(x6), split], dim=1))


class DownSample(nn.Module):
    """A CSP stage: a stride-2 conv, then two halves, one through ``blocks`` residual units, concatenated."""

    def __init__(self, cin: int, cout: int, blocks: int) -> None:
        super().__init__()
        half = cout // 2
        self.conv1 = ConvBN(cin, cout, 3, 2, "mish")
        self.conv2 = ConvBN(cout, half, 1, 1, "mish")
        self.conv3 = ConvBN(cout, half, 1, 1, "mish")
        self.resblock = ResBlock(half, blocks)
        self.conv4 = ConvBN(half, half, 1, 1, "mish")
        self.conv5 = ConvBN(cout, cout, 1, 1, "mish")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        split = self.conv2(x1)
        x4 = self.conv4(self.resblock(self.conv3(x1)))
        return self.conv5(torch.cat([x4, split], dim=1))


def _leaky(cin: int, cout: int, size: int, stride: int = 1) -> ConvBN:
    return ConvBN(cin, cout, size, stride, "leaky")


class Neck(nn.Module):
    """SPP on the last stage, then PANet's top-down path (upsampling, merged with stages 4 and 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = _leaky(1024, 512, 1), _leaky(512, 1024, 3), _leaky(1024, 512, 1)
        self.conv4, self.conv5, self.conv6 = _leaky(2048, 512, 1), _leaky(512, 1024, 3), _leaky(1024, 512, 1)
        self.conv7, self.conv8 = _leaky(512, 256, 1), _leaky(512, 256, 1)
        self.conv9, self.conv10, self.conv11 = _leaky(512, 256, 1), _leaky(256, 512, 3), _leaky(512, 256, 1)
        self.conv12, self.conv13 = _leaky(256, 512, 3), _leaky(512, 256, 1)
        self.conv14, self.conv15 = _leaky(256, 128, 1), _leaky(256, 128, 1)
        self.conv16, self.conv17, self.conv18 = _leaky(256, 128, 1), _leaky(128, 256, 3), _leaky(256, 128, 1)
        self.conv19, self.conv20 = _leaky(128, 256, 3), _leaky(256, 128, 1)

    def forward(
        self, d5: torch.Tensor, d4: torch.Tensor, d3: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x3 = self.conv3(self.conv2(self.conv1(d5)))
        pools = [F.max_pool2d(x3, size, 1, size // 2) for size in (13, 9, 5)]
        x6 = self.conv6(self.conv5(self.conv4(torch.cat([*pools, x3], dim=1))))
        up = F.interpolate(self.conv7(x6), scale_factor=2, mode="nearest")
        x8 = torch.cat([self.conv8(d4), up], dim=1)
        x13 = self.conv13(self.conv12(self.conv11(self.conv10(self.conv9(x8)))))
        up = F.interpolate(self.conv14(x13), scale_factor=2, mode="nearest")
        x15 = torch.cat([self.conv15(d3), up], dim=1)
        x20 = self.conv20(self.conv19(self.conv18(self.conv17(self.conv16(x15)))))
        return x20, x13, x6


class Head(nn.Module):
    """PANet's bottom-up path and the three detection convolutions (strides 8, 16, 32)."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _leaky(128, 256, 3), ConvBN(256, outputs, 1, 1, "linear", bn=False)
        self.conv3 = _leaky(128, 256, 3, 2)
        self.conv4, self.conv5, self.conv6 = _leaky(512, 256, 1), _leaky(256, 512, 3), _leaky(512, 256, 1)
        self.conv7, self.conv8, self.conv9 = _leaky(256, 512, 3), _leaky(512, 256, 1), _leaky(256, 512, 3)
        self.conv10 = ConvBN(512, outputs, 1, 1, "linear", bn=False)
        self.conv11 = _leaky(256, 512, 3, 2)
        self.conv12, self.conv13, self.conv14 = _leaky(1024, 512, 1), _leaky(512, 1024, 3), _leaky(1024, 512, 1)
        self.conv15, self.conv16, self.conv17 = _leaky(512, 1024, 3), _leaky(1024, 512, 1), _leaky(512, 1024, 3)
        self.conv18 = ConvBN(1024, outputs, 1, 1, "linear", bn=False)

    def forward(
        self, x20: torch.Tensor, x13: torch.Tensor, x6: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        small = self.conv2(self.conv1(x20))
        x8 = self.conv8(self.conv7(self.conv6(self.conv5(self.conv4(torch.cat([self.conv3(x20), x13], dim=1))))))
        medium = self.conv10(self.conv9(x8))
        x17 = self.conv17(self.conv16(self.conv15(self.conv14(self.conv13(self.conv12(
            torch.cat([self.conv11(x8), x6], dim=1)
        ))))))  # fmt: skip
        return small, medium, self.conv18(x17)


class YOLOv4(nn.Module):
    """images [batch, 3, size, size] RGB in [0, 1] -> the heads' maps [batch, 3 * (5 + classes), size/s, size/s]
    for strides s = 8, 16, 32."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.down1 = DownSample1()
        self.down2 = DownSample(64, 128, 2)
        self.down3 = DownSample(128, 256, 8)
        self.down4 = DownSample(256, 512, 8)
        self.down5 = DownSample(512, 1024, 4)
        self.neck = Neck()
        self.head = Head(3 * (5 + num_classes))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d3 = self.down3(self.down2(self.down1(images)))
        d4 = self.down4(d3)
        d5 = self.down5(d4)
        return self.head(*self.neck(d5, d4, d3))

    def conv_layers(self) -> list[ConvBN]:
        """Every [convolutional] layer in yolov4.cfg's order (the order of Darknet's weight file)."""
        return [m for m in self.modules() if isinstance(m, ConvBN)]
