"""VQ-f4 autoencoder (VQModelTorch, parity README 5.3 and 6.4): encoder, codebook, decoder.

Owns the network only; parameter names follow the official checkpoint layout.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .unet import GroupNorm32


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice, plus a 1x1 shortcut when the width changes."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions (global: memory grows with (H*W)^2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.q, self.k, self.v = (nn.Conv2d(ch, ch, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).reshape(B, 1, C, H * W).transpose(-1, -2) for conv in (self.q, self.k, self.v))
        o = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(o.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """3x3 stride-2 conv after asymmetric zero padding (right and bottom only)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Mid(nn.Module):
    """Middle stage: ResnetBlock, global attention, ResnetBlock."""

    def __init__(self, ch: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, dropout)
        self.attn_1 = AttnBlock(ch)
        self.block_2 = ResnetBlock(ch, ch, dropout)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


def _check_ddconfig(ddconfig: dict):
    if ddconfig.get("double_z", False):
        raise ValueError("VQModelTorch: unsupported ddconfig double_z=True (only False is implemented)")
    if list(ddconfig.get("attn_resolutions", [])):
        raise ValueError(f"VQModelTorch: unsupported ddconfig attn_resolutions={ddconfig['attn_resolutions']!r} "
                         "(only [] is implemented)")


class Encoder(nn.Module):
    """Image [B, in_channels, H, W] -> latent [B, z_channels, H/f, W/f], f = 2^(len(ch_mult)-1)."""

    def __init__(self, *, ch, ch_mult, num_res_blocks, in_channels, z_channels, dropout=0.0, **_ignored):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        c = ch
        for level, m in enumerate(ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock(c, ch * m, dropout))
                c = ch * m
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(c)
            self.down.append(stage)
        self.mid = Mid(c, dropout)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for stage in self.down:
            for blk in stage.block:
                h = blk(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [B, z_channels, h, w] -> image [B, out_ch, h*f, w*f]."""

    def __init__(self, *, ch, ch_mult, num_res_blocks, out_ch, z_channels, dropout=0.0, **_ignored):
        super().__init__()
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, c, 3, padding=1)
        self.mid = Mid(c, dropout)
        stages = []
        for level in reversed(range(len(ch_mult))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                stage.block.append(ResnetBlock(c, ch * ch_mult[level], dropout))
                c = ch * ch_mult[level]
            if level != 0:
                stage.upsample = Upsample(c)
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)  # indexed by level; run from the last level down
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, out_ch, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            for blk in stage.block:
                h = blk(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


QUANTIZE_ROWS = 64  # latent pixels per band of codebook distances on a CPU (64 x 8192 floats: 2 MB)


class VectorQuantizer(nn.Module):
    """Nearest-codebook-vector lookup; holds `embedding` [n_embed, embed_dim]."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, H, W = z.shape
        # float32 and no autocast: code margins can be ~1e-4, far below bf16 resolution.
        with torch.autocast(z.device.type, enabled=False):
            zf = z.float()
            flat = zf.permute(0, 2, 3, 1).reshape(-1, C)
            codes = self.embedding.weight.float()
            norms, codes_t = codes.pow(2).sum(1)[None], codes.t()
            # On a CPU, rows in cache-sized bands: the [rows, n_embed] distances of a whole tile are 100s of MB, three
            # passes over them took 3x the time. Each distance is computed as before, so the codes are the same.
            rows = QUANTIZE_ROWS if flat.device.type == "cpu" else max(1, flat.shape[0])
            idx = torch.cat([
                (band.pow(2).sum(1, keepdim=True) + norms - 2.0 * band @ codes_t).argmin(dim=1)  # first index on ties
                for band in flat.split(rows)
            ])
            z_q = codes[idx].reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()
            if torch.is_grad_enabled() and zf.requires_grad:
                z_q = zf + (z_q - zf).detach()  # straight-through estimator
        return z_q, idx.reshape(B, H, W)


class VQModelTorch(nn.Module):
    """VQ-f4 autoencoder: encode() without quantisation, decode() quantising by default."""

    def __init__(self, embed_dim: int, n_embed: int, ddconfig: dict):
        super().__init__()
        _check_ddconfig(ddconfig)
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        z_channels = ddconfig["z_channels"]
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] in [-1, 1] -> latent z [B, embed_dim, H/4, W/4] (not quantised)."""
        return self.quant_conv(self.encoder(x))

    def quantize_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z -> (z_q float32 with straight-through gradient, code indices int64 [B, H, W])."""
        return self.quantize(z)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Latent [B, embed_dim, h, w] -> image [B, 3, 4h, 4w]; quantises first unless told not to."""
        if quantize:
            z, _ = self.quantize_latent(z)
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
