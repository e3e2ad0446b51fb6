"""ConvDenoiser: an all-convolutional x_0 predictor for packed pixel mode (4x4 HR blocks as channels at the LR size).

Owns the network only. The LR image is encoded once per image (``condition``); each diffusion step then runs a short
refiner on x_t, modulated per step. No normalisation layers, so a tile's output does not depend on the tile size.
Inference in float32 on a CPU takes a fused path: each step's modulation folded into its convolution's weights, every
ReLU and residual addition done inside oneDNN's convolution kernel (the kernels torch.compile uses), channels-last.
"""
from __future__ import annotations

import torch
from torch import nn


_POINTWISE = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
_GEOMETRY = ([1, 1], [1, 1], [1, 1], 1)  # a 3x3 convolution's padding, stride, dilation and groups


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def fused_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, relu: bool = False,
               add: torch.Tensor | None = None) -> torch.Tensor:
    """conv3x3(x), then ReLU or ``+ add``, in one oneDNN kernel: no extra pass through memory."""
    if add is not None:
        return _POINTWISE.binary(x, add, weight, bias, *_GEOMETRY, "add", None, None, [], None)
    return _POINTWISE(x, weight, bias, *_GEOMETRY, "relu" if relu else "none", [], "")


def fusable(x: torch.Tensor) -> bool:
    """Whether the fused inference path applies: float32 on a CPU with oneDNN, no gradients, no autocast."""
    return (_POINTWISE is not None and torch.backends.mkldnn.is_available() and x.device.type == "cpu"
            and x.dtype == torch.float32 and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu"))


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (EDSR's block, no batch norm), optionally scaled and shifted per step."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.conv2 = conv3x3(channels, channels), conv3x3(channels, channels)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None):
        h = self.conv1(x)
        if scale is not None:
            h = torch.addcmul(shift, h, scale)
        return x + self.conv2(torch.relu(h))

    def fused(self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None):
        """``forward`` for inference with per-channel ``scale`` and ``shift`` (shared by the batch) folded into
        the first convolution: scale (W x + b) + shift = (scale W) x + (scale b + shift)."""
        weight, bias = self.conv1.weight, self.conv1.bias
        if scale is not None:
            weight, bias = weight * scale[:, None, None, None], torch.addcmul(shift, bias, scale)
        h = fused_conv(x, weight, bias, relu=True)
        return fused_conv(h, self.conv2.weight, self.conv2.bias, add=x)


class ConvDenoiser(nn.Module):
    """x_t [B, in, h, w], step t [B], conditioning features -> x_0 (or x_0 - y_0 for a residual model) [B, out, h, w].

    ``encoder_blocks`` residual blocks read the LR image once; ``step_blocks`` blocks per step read x_t added to
    those features: the same blocks at every step, or with ``per_step_weights`` each step its own (more parameters,
    the same work per upscale). ``halo``: the receptive field of the whole chain in LR pixels either side (every step
    reads the previous step's output).
    """

    def __init__(self, *, in_channels: int, out_channels: int, lq_channels: int = 3, channels: int = 64,
                 encoder_blocks: int = 8, step_blocks: int = 3, steps: int = 4, per_step_weights: bool = False):
        super().__init__()
        self.encoder_head = conv3x3(lq_channels, channels)
        self.encoder = nn.ModuleList(ResBlock(channels) for _ in range(encoder_blocks))
        self.encoder_tail = conv3x3(channels, channels)
        self.head = conv3x3(in_channels, channels)
        # blocks[s * step_blocks + i] is block i of step s with per-step weights, blocks[i] of every step without.
        self.step_blocks, self.per_step_weights = step_blocks, per_step_weights
        self.blocks = nn.ModuleList(ResBlock(channels) for _ in range(step_blocks * (steps if per_step_weights else 1)))
        # Per step and block a scale (around 1) and a shift of the first convolution's output.
        self.step_embedding = nn.Embedding(steps, 2 * channels * step_blocks)
        nn.init.zeros_(self.step_embedding.weight)
        self.out = conv3x3(channels, out_channels)
        self.halo = 2 * encoder_blocks + 2 + steps * (2 * step_blocks + 2)

    def condition(self, lq: torch.Tensor) -> torch.Tensor:
        """Features of the LR image, computed once and shared by every step."""
        if fusable(lq):
            h = skip = fused_conv(lq.contiguous(memory_format=torch.channels_last), *_params(self.encoder_head))
            for block in self.encoder:
                h = block.fused(h)
            return fused_conv(h, *_params(self.encoder_tail), add=skip)
        h = self.encoder_head(lq)
        skip = h
        for block in self.encoder:
            h = block(h)
        return self.encoder_tail(h) + skip

    def step_modules(self, step: int) -> nn.ModuleList:
        """The residual blocks that step ``step`` runs."""
        first = step * self.step_blocks if self.per_step_weights else 0
        return self.blocks[first:first + self.step_blocks]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if fusable(x) and bool((timesteps == timesteps[0]).all()):
            return self._fused_forward(x, int(timesteps[0]), features)
        h = self.head(x) + features
        mod = self.step_embedding(timesteps)[:, :, None, None].to(h.dtype)
        if not self.per_step_weights:
            return self.out(self._refine(h, mod, self.blocks))
        refined = torch.empty_like(h)
        for step in timesteps.unique().tolist():  # each step's samples through that step's own blocks
            rows = (timesteps == step).nonzero().squeeze(1)
            refined = refined.index_copy(0, rows, self._refine(h[rows], mod[rows], self.step_modules(step)))
        return self.out(refined)

    @staticmethod
    def _refine(h: torch.Tensor, mod: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
        """``blocks`` on features ``h``, each block's first convolution scaled and shifted by its part of ``mod``."""
        for i, block in enumerate(blocks):
            scale, shift = mod[:, 2 * i * h.shape[1]:(2 * i + 2) * h.shape[1]].chunk(2, dim=1)
            h = block(h, 1 + scale, shift)
        return h

    def _fused_forward(self, x: torch.Tensor, step: int, features: torch.Tensor) -> torch.Tensor:
        """``forward`` on the fused path, every image of the batch at the same ``step``."""
        h = fused_conv(x.contiguous(memory_format=torch.channels_last), *_params(self.head), add=features)
        mod = self.step_embedding.weight[step].view(self.step_blocks, 2, -1)
        for block, (scale, shift) in zip(self.step_modules(step), mod):
            h = block.fused(h, 1 + scale, shift)
        return fused_conv(h, *_params(self.out)).contiguous()


def _params(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    return conv.weight, conv.bias
