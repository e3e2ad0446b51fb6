"""ResShift denoiser: a UNet with Swin-transformer layers (UNetModelSwin, parity README 6.1-6.3).

Owns the network only; parameter and buffer names follow the official checkpoint layout.
"""
import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

_MASK_VALUE = -100.0


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 whatever the input dtype (bf16 statistics are too coarse)."""

    def forward(self, x):
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def _gn(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-5)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [cos(t f), sin(t f)] of integer steps t [B] -> [B, dim] float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.reshape(-1, 1).float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def relative_position_index(window: int) -> torch.Tensor:
    """[w², w²] int64 index into the (2w-1)² bias table for every token pair of a window."""
    r, c = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    r, c = r.reshape(-1), c.reshape(-1)
    dr = r[:, None] - r[None, :] + window - 1
    dc = c[:, None] - c[None, :] + window - 1
    return dr * (2 * window - 1) + dc


def _window_row_mask(height: int, window: int, shift: int, device=None) -> torch.Tensor:
    """Mask per window ROW [H/w, w², w²]: the 6.3 labels depend only on the window row, never on J."""
    rows = torch.arange(height, device=device)
    labels = torch.full((height,), 6, device=device)
    labels[rows >= height - window] = 7
    labels[rows >= height - shift] = 8
    # Token (p, q) of window row I takes label L[I*w + q]: the transposed in-window coordinate.
    lab = labels.reshape(height // window, 1, window).expand(-1, window, -1).reshape(height // window, -1)
    same = lab[:, :, None] == lab[:, None, :]
    return torch.where(same, 0.0, _MASK_VALUE).to(torch.float32)


def shifted_window_mask(H: int, W: int, window: int, shift: int) -> torch.Tensor:
    """Additive (0 / -100) mask [nW, w², w²] of a shifted block at feature size H x W (README 6.3)."""
    if H % window or W % window:
        raise ValueError(f"feature size {H}x{W} is not a multiple of the window size {window}")
    return _window_row_mask(H, window, shift).repeat_interleave(W // window, dim=0)


@lru_cache(maxsize=64)
def _cached_row_mask(H: int, W: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    # Built outside inference mode so the cached tensor can also serve autograd passes.
    with torch.inference_mode(False), torch.no_grad():
        return _window_row_mask(H, window, shift, device)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside w x w windows with a learned relative-position bias."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.window, self.heads = window, heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))

    def bias(self) -> torch.Tensor:
        n = self.window * self.window
        table = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return table.reshape(n, n, self.heads).permute(2, 0, 1)

    def forward(self, y: torch.Tensor, row_mask: torch.Tensor | None) -> torch.Tensor:
        """y [B, C, H, W] -> attention output [B, C, H, W]; row_mask [H/w, w², w²] or None."""
        B, C, H, W = y.shape
        w, nh = self.window, self.heads
        gh, gw, n, d = H // w, W // w, w * w, C // nh
        # Window columns go to the batch axis and window rows next to the heads, so one mask of
        # shape [gh*nh, n, n] (bias + shift mask) broadcasts over batch and window columns.
        t = y.reshape(B, C, gh, w, gw, w).permute(0, 4, 2, 3, 5, 1).reshape(B * gw, gh, n, C)
        qkv = self.qkv(t).reshape(B * gw, gh, n, 3, nh, d).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.reshape(3, B * gw, gh * nh, n, d).unbind(0)
        bias = self.bias()[None]
        mask = bias + row_mask[:, None] if row_mask is not None else bias.expand(gh, -1, -1, -1)
        # Plain matmul-softmax-matmul: for 64-token windows and 16-wide heads it is ~1.5x faster on the CPU than
        # the fused kernel (which needs the mask expanded to every batch entry).
        scores = torch.matmul(q * d**-0.5, k.transpose(-1, -2)) + mask.reshape(gh * nh, n, n).to(q.dtype)
        o = torch.matmul(scores.softmax(-1), v)
        o = self.proj(o.reshape(B * gw, gh, nh, n, d).transpose(2, 3).reshape(B * gw, gh, n, C))
        return o.reshape(B, gw, gh, w, w, C).permute(0, 5, 2, 3, 1, 4).reshape(B, C, H, W)


class Mlp(nn.Module):
    """Channels-first feed-forward: 1x1 conv, exact GELU, 1x1 conv."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block on a channels-first map; w and s fixed from ds."""

    def __init__(self, dim: int, heads: int, ds: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        if ds <= window:
            window, shift = ds, 0
        self.window, self.shift = window, shift
        if shift:
            # Stored for checkpoint compatibility only; forward rebuilds it from the actual size.
            self.register_buffer("attn_mask", shifted_window_mask(ds, ds, window, shift))
        self.norm1 = _gn(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = _gn(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        H, W = x.shape[-2:]
        w, s = self.window, self.shift
        if H % w or W % w:
            raise ValueError(f"Swin feature size {H}x{W} is not a multiple of the window size {w}")
        y = self.norm1(x)
        row_mask = None
        if s:
            y = torch.roll(y, (-s, -s), dims=(2, 3))
            row_mask = _cached_row_mask(H, W, w, s, x.device)
        a = self.attn(y, row_mask)
        if s:
            a = torch.roll(a, (s, s), dims=(2, 3))
        x = x + a
        return x + self.mlp(self.norm2(x))


class PatchProj(nn.Module):
    """1x1 conv holder named like the official patch_embed / patch_unembed."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.proj(x)


class SwinLayer(nn.Module):
    """embed (1x1) -> swin_depth blocks alternating shift -> unembed (1x1); no outer residual."""

    def __init__(self, cin, ds, embed_dim, heads, depth, window, mlp_ratio):
        super().__init__()
        self.patch_embed = PatchProj(cin, embed_dim)
        self.blocks = nn.ModuleList(
            SwinBlock(embed_dim, heads, ds, window, window // 2 if i % 2 else 0, mlp_ratio) for i in range(depth)
        )
        self.patch_unembed = PatchProj(embed_dim, cin)

    def forward(self, x):
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.patch_unembed(x)


class ResBlock(nn.Module):
    """Residual block with scale-shift conditioning on the time embedding."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(_gn(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout))
        self.out_layers = nn.Sequential(_gn(cout), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[1:](h)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Learned 3x3 stride-2 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


def _fold_taps(w: torch.Tensor, dim: int) -> torch.Tensor:
    """3 kernel taps along ``dim`` -> [2 output phases, ..., 2 taps]: after a nearest x2 upsampling, the output rows
    of parity 0 see input rows (p-1, p, p) and those of parity 1 see (p, p, p+1)."""
    t0, t1, t2 = w.unbind(dim)
    return torch.stack([torch.stack([t0, t1 + t2], dim), torch.stack([t0 + t1, t2], dim)])


class Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 convolution.

    On channels-last inputs (the CPU engine's) it runs as the same maths at the input size: one 2x2 convolution
    with a kernel per output phase, interleaved; 4/9 of the multiply-adds and no upsampled copy (~1.6x faster).
    """

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        n, _, h, w = x.shape
        kernels = _fold_taps(_fold_taps(self.conv.weight, 2), 4)  # [b, a, out, in, 2, 2]
        kernels = kernels.transpose(0, 1).flatten(0, 2).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(x, kernels, self.conv.bias.repeat(4), padding=1)  # phase (a, b) sits at rows a.., cols b..
        phases = out.permute(0, 2, 3, 1).unflatten(3, (2, 2, -1))  # [n, h + 1, w + 1, a, b, out], a view
        y = out.new_empty(n, h, 2, w, 2, phases.shape[-1])
        for a in (0, 1):
            for b in (0, 1):
                y[:, :, a, :, b] = phases[:, a:a + h, b:b + w, a, b]
        return y.flatten(3, 4).flatten(1, 2).permute(0, 3, 1, 2)


class EmbedSequential(nn.Sequential):
    """Sequential that hands the time embedding to the ResBlocks it holds."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def _require(ok: bool, option: str, value, supported: str):
    if not ok:
        raise ValueError(f"UNetModelSwin: unsupported {option}={value!r} (only {supported} is implemented)")


class UNetModelSwin(nn.Module):
    """ResShift denoiser; forward(x, timesteps, lq) predicts the clean latent (README 6.1)."""

    def __init__(self, image_size, in_channels, model_channels, out_channels, attention_resolutions,
                 dropout=0, channel_mult=(1, 2, 4, 8), num_res_blocks=2, conv_resample=True, dims=2,
                 use_fp16=False, num_head_channels=32, use_scale_shift_norm=True, resblock_updown=False,
                 swin_depth=2, swin_embed_dim=192, window_size=8, mlp_ratio=4, cond_lq=True, lq_size=None):
        super().__init__()
        lq_size = image_size if lq_size is None else lq_size
        _require(dims == 2, "dims", dims, "2")
        _require(bool(conv_resample), "conv_resample", conv_resample, "True")
        _require(bool(use_scale_shift_norm), "use_scale_shift_norm", use_scale_shift_norm, "True")
        _require(not resblock_updown, "resblock_updown", resblock_updown, "False")
        _require(bool(cond_lq), "cond_lq", cond_lq, "True")
        _require(lq_size == image_size, "lq_size", lq_size, "lq_size == image_size")
        _require(swin_embed_dim % num_head_channels == 0, "num_head_channels", num_head_channels,
                 "a divisor of swin_embed_dim")
        if isinstance(num_res_blocks, int):
            num_res_blocks = [num_res_blocks] * len(channel_mult)
        _require(len(num_res_blocks) == len(channel_mult), "num_res_blocks", num_res_blocks,
                 "one entry per channel_mult level")
        # use_fp16 is accepted and ignored: precision is chosen by the caller (autocast).
        self.in_channels, self.out_channels, self.model_channels = in_channels, out_channels, model_channels
        C, E = model_channels, 4 * model_channels
        attn_res = {int(r) for r in attention_resolutions}
        swin = dict(embed_dim=swin_embed_dim, heads=swin_embed_dim // num_head_channels, depth=swin_depth,
                    window=window_size, mlp_ratio=mlp_ratio)

        self.time_embed = nn.Sequential(nn.Linear(C, E), nn.SiLU(), nn.Linear(E, E))
        ch = C * channel_mult[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels + 3, ch, 3, padding=1))])
        chans, ds = [ch], image_size
        for level, m in enumerate(channel_mult):
            for j in range(num_res_blocks[level]):
                layers = [ResBlock(ch, C * m, E, dropout)]
                ch = C * m
                if ds in attn_res and j == 0:
                    layers.append(SwinLayer(ch, ds, **swin))
                self.input_blocks.append(EmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch)))
                chans.append(ch)
                ds //= 2
        self.middle_block = EmbedSequential(ResBlock(ch, ch, E, dropout), SwinLayer(ch, ds, **swin),
                                            ResBlock(ch, ch, E, dropout))
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks[level] + 1):
                layers = [ResBlock(ch + chans.pop(), C * m, E, dropout)]
                ch = C * m
                if ds in attn_res and i == 0:
                    layers.append(SwinLayer(ch, ds, **swin))
                if level != 0 and i == num_res_blocks[level]:
                    layers.append(Upsample(ch))
                    ds *= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(_gn(ch), nn.SiLU(), nn.Conv2d(C * channel_mult[0], out_channels, 3, padding=1))
        self.halo = window_size * 2 ** (len(channel_mult) - 1)  # one coarsest-level attention window, latent pixels

    def condition(self, lq: torch.Tensor) -> torch.Tensor:
        """The LR conditioning as ``forward`` takes it: the image itself (it is concatenated at every step)."""
        return lq

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """x [B, in_channels, H, W], timesteps int [B], lq [B, 3, H', W'] -> [B, out_channels, H, W]."""
        if lq.shape[-2:] != x.shape[-2:]:
            lq = F.interpolate(lq, size=x.shape[-2:], mode="bicubic", align_corners=False)
        emb = self.time_embed(timestep_embedding(timesteps.expand(x.shape[0]), self.model_channels))
        h = torch.cat([x, lq.to(x.dtype)], dim=1)
        hs = []
        for blk in self.input_blocks:
            h = blk(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for blk in self.output_blocks:
            skip = hs.pop()
            h = blk(torch.cat([h, skip.to(h.dtype)], dim=1), emb)
        return self.out(h).to(x.dtype)
