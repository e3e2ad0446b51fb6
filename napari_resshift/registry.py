"""Named model presets, described by data: configuration, expected files, description.

Every preset, and every user file, is loaded through ``loading.load_model``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources

OFFICIAL_SCALE = 4  # the published ResShift models' (and this package's first models') scale
OFFICIAL_UNET = {
    "image_size": 64,
    "in_channels": 3,
    "model_channels": 160,
    "out_channels": 3,
    "attention_resolutions": [64, 32, 16, 8],
    "dropout": 0,
    "channel_mult": [1, 2, 2, 4],
    "num_res_blocks": [2, 2, 2, 2],
    "conv_resample": True,
    "dims": 2,
    "use_fp16": False,
    "num_head_channels": 32,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "swin_depth": 2,
    "swin_embed_dim": 192,
    "window_size": 8,
    "mlp_ratio": 4,
    "cond_lq": True,
    "lq_size": 64,
}

OFFICIAL_AUTOENCODER = {
    "embed_dim": 3,
    "n_embed": 8192,
    "ddconfig": {
        "double_z": False,
        "z_channels": 3,
        "resolution": 64,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
        "padding_mode": "zeros",
    },
}


def diffusion_params(*, steps: int, min_noise_level: float, kappa: float = 2.0, scale: int = OFFICIAL_SCALE) -> dict:
    """The official ``diffusion.params`` block for an exponential schedule (the official models are x4)."""
    return {
        "sf": scale,
        "schedule_name": "exponential",
        "schedule_kwargs": {"power": 0.3},
        "etas_end": 0.99,
        "steps": steps,
        "min_noise_level": min_noise_level,
        "kappa": kappa,
        "weighted_mse": False,
        "predict_type": "xstart",
        "timestep_respacing": None,
        "scale_factor": 1.0,
        "normalize_input": True,
        "latent_flag": True,
    }


def official_config(*, steps: int, min_noise_level: float) -> dict:
    return {
        "autoencoder": {"params": copy.deepcopy(OFFICIAL_AUTOENCODER)},
        "model": {"params": copy.deepcopy(OFFICIAL_UNET)},
        "diffusion": {"params": diffusion_params(steps=steps, min_noise_level=min_noise_level)},
    }


MODES = ("latent", "pixel", "packed")
SCALES = (2, OFFICIAL_SCALE)  # packed models take any of these; latent ones are x4, as their VQ-f4 autoencoder


def check_scale(scale: int, mode: str) -> None:
    if scale not in SCALES:
        raise KeyError(f"unknown scale {scale}; choose one of {', '.join(map(str, SCALES))}")
    if mode != "packed" and scale != OFFICIAL_SCALE:
        raise KeyError(f"a {mode}-mode model is x{OFFICIAL_SCALE} only; use --mode packed for x{scale}")


def rescaled(config: dict, scale: int) -> dict:
    """A packed model's configuration at another scale: the same network with scale x scale blocks as channels."""
    if config["model"].get("space_to_depth") is None:
        raise KeyError(f"only a packed-mode model changes scale; this one is x{config['diffusion']['params']['sf']}")
    check_scale(scale, "packed")
    config = copy.deepcopy(config)
    net = config["model"]["params"]
    net["in_channels"] = net["out_channels"] = 3 * scale**2
    config["model"]["space_to_depth"] = scale
    config["diffusion"]["params"]["sf"] = scale
    return config


@dataclass(frozen=True)
class Preset:
    """A named model: its configuration and the files a user supplies (official) or the package ships."""

    name: str
    description: str
    config: dict | None = None
    files: dict = field(default_factory=dict)
    packaged: str | None = None
    use: str = ""  # what images it is for, in a user's words (the widget's list and card)

    def packaged_path(self):
        """Where the package holds this preset's model file (None for official presets, which users supply)."""
        return resources.files("napari_resshift") / "weights" / self.packaged if self.packaged else None


def official(name: str, description: str, steps: int, min_noise_level: float, unet: str, use: str) -> Preset:
    """An official ResShift preset: its configuration, and the denoiser file its authors publish beside the VQ-f4."""
    return Preset(name, description, official_config(steps=steps, min_noise_level=min_noise_level),
                  {"unet": unet, "autoencoder": "autoencoder_vq_f4.pth"}, use=use)


NOISY, CLEAN = "for noisy or blurred images", "for clean images"
NOISY_PHOTOS = "for noisy or blurred photos"

PRESETS = {
    p.name: p
    for p in [
        Preset("default", "x4 for real images: removes noise, blur and JPEG artefacts (shipped)",
               packaged="default.safetensors", use=NOISY),
        Preset("clean", "x4 for clean, bicubic-like images (shipped)", packaged="clean.safetensors", use=CLEAN),
        official("v1", "official ResShift RealSR x4, 15 steps", 15, 0.04, "resshift_realsrx4_s15_v1.pth", NOISY_PHOTOS),
        official("v2", "official ResShift RealSR x4, 15 steps (v2 weights)", 15, 0.04, "resshift_realsrx4_s15_v2.pth",
                 NOISY_PHOTOS),
        official("v3", "official ResShift RealSR x4, 4 steps (journal version)", 4, 0.2, "resshift_realsrx4_s4_v3.pth",
                 NOISY_PHOTOS),
        official("bicsr", "official ResShift bicubic x4, 4 steps", 4, 0.2, "resshift_bicsrx4_s4.pth", CLEAN),
    ]
}


def architecture(name: str, *, mode: str = "latent", scale: int = OFFICIAL_SCALE) -> dict:
    """Official-layout configuration of a size preset for training from scratch (``tiny`` is for tests).

    ``mode``: ``latent`` (a VQ-f4 autoencoder), ``pixel`` (the denoiser at the HR size) or ``packed`` (pixel-space
    diffusion with scale x scale pixel blocks packed into channels, so the denoiser runs at the LR size: lossless,
    and as cheap as latent mode without an autoencoder to run or to cap the quality; its denoiser is residual,
    predicting x_0 as y_0 plus its output).
    ``small`` is CPU-sized: a continuous 16-channel latent, a 32-channel denoiser and kappa 1; ``fast`` is the
    default model's: packed, no full-resolution res blocks, kappa 0.5 for outputs close to the posterior mean.
    """
    sizes = {
        # name: (model_channels, channel_mult, num_res_blocks, swin_embed_dim, window, lq_size, latent channels,
        #        autoencoder ch, ch_mult, num_res_blocks, quantize on decode, kappa)
        "tiny": (32, [1, 2], [1, 1], 32, 4, 16, 3, 32, [1, 2, 2], 1, True, 2.0),
        "small": (32, [1, 2, 2], [1, 1, 1], 32, 8, 32, 16, 32, [1, 1, 1], 0, False, 1.0),
        "fast": (32, [1, 2, 2], [0, 1, 1], 32, 8, 32, 16, 32, [1, 1, 1], 0, False, 0.5),
    }
    if name in CONV_SIZES:
        return conv_architecture(name, mode=mode, scale=scale)
    if name not in sizes:
        raise KeyError(f"unknown architecture {name!r}; choose one of {', '.join([*sizes, *CONV_SIZES])}")
    if mode not in MODES:
        raise KeyError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    check_scale(scale, mode)
    mc, mult, nrb, ed, window, lq, latent_ch, ae_ch, ae_mult, ae_nrb, quantize, kappa = sizes[name]
    channels = {"latent": latent_ch, "pixel": 3, "packed": 3 * scale**2}[mode]
    unet = dict(OFFICIAL_UNET) | {
        "image_size": lq,
        "lq_size": lq,
        "in_channels": channels,
        "out_channels": channels,
        "model_channels": mc,
        "channel_mult": mult,
        "num_res_blocks": nrb,
        "attention_resolutions": [lq // 2 ** i for i in range(1, len(mult))],
        "swin_embed_dim": ed,
        "num_head_channels": 32 if ed >= 64 else 16,
        "window_size": window,
    }
    diff = diffusion_params(steps=4, min_noise_level=0.2, kappa=kappa, scale=scale)
    config = {"model": {"params": unet}, "diffusion": {"params": diff}}
    if mode == "packed":
        config["model"] |= {"space_to_depth": scale, "residual": True}
    if mode == "latent":
        ae = copy.deepcopy(OFFICIAL_AUTOENCODER)
        ae["embed_dim"] = latent_ch
        ae["n_embed"] = 1024
        ae["ddconfig"] |= {"ch": ae_ch, "ch_mult": ae_mult, "num_res_blocks": ae_nrb, "z_channels": latent_ch}
        config["autoencoder"] = {"params": ae, "quantize": quantize}
    return config


# ConvDenoiser sizes (packed mode only): channels, LR-encoder blocks (run once), refiner blocks (run every step), kappa.
CONV_SIZES = {
    "conv-tiny": (16, 1, 1, 0.1),
    "conv": (64, 8, 3, 0.1),
    "conv-fast": (64, 8, 2, 0.1),  # two modulated blocks per step: 0.8x the convolutions of "conv"
    "conv-half": (32, 8, 3, 0.1),  # a quarter of "conv"'s work per LR pixel: x2 at the x4 models' cost per output
}


def conv_architecture(name: str, *, mode: str = "packed", scale: int = OFFICIAL_SCALE) -> dict:
    """Configuration of a packed-mode ConvDenoiser model: residual, 4 steps, no autoencoder."""
    if mode != "packed":
        raise KeyError(f"architecture {name!r} runs in packed mode only; use --mode packed")
    check_scale(scale, mode)
    channels, encoder_blocks, step_blocks, kappa = CONV_SIZES[name]
    net = {"in_channels": 3 * scale**2, "out_channels": 3 * scale**2, "lq_channels": 3, "channels": channels,
           "encoder_blocks": encoder_blocks, "step_blocks": step_blocks, "steps": 4}
    return {
        "model": {"target": "ConvDenoiser", "params": net, "space_to_depth": scale, "residual": True},
        "diffusion": {"params": diffusion_params(steps=4, min_noise_level=0.2, kappa=kappa, scale=scale)},
    }


SHIPPED = tuple(name for name, p in PRESETS.items() if p.packaged)  # the presets the package ships, default first
