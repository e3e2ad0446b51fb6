"""What each training stage optimises: the denoiser (ResShift objective, autoencoder frozen) or the VQ autoencoder.

A stage names its trainable module, computes the loss of a micro-batch, and evaluates held-out images.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from napari_resshift import diffusion
from napari_resshift.model import ResShiftModel, bicubic_up

from . import metrics
from .data import ValItem

CODE_RESTART_EVERY = 25  # micro-batches between moves of unused codebook vectors onto current latents


def to_unit(x: torch.Tensor, *, rgb: bool) -> torch.Tensor:
    """[-1, 1] RGB-replicated -> [0, 1]; gray images keep the mean channel, as the engine returns."""
    x = (x.float().clamp(-1, 1) + 1) / 2
    return x if rgb else x.mean(1, keepdim=True)


def compare(pred: torch.Tensor, item: ValItem, *, border: int) -> tuple[float, float]:
    a, b = to_unit(pred, rgb=item.rgb), to_unit(item.hr, rgb=item.rgb)
    return (float(metrics.psnr(a, b, rgb=item.rgb, border=border)[0]),
            float(metrics.ssim(a, b, rgb=item.rgb, border=border)[0]))


class Stage:
    """Shared plumbing: the compiled submodules are swapped for their originals while evaluating."""

    name = ""
    compiled_parts: tuple[str, ...] = ()

    def __init__(self, model: ResShiftModel, module: torch.nn.Module):
        self.model, self.module = model, module
        self.originals: dict[str, torch.nn.Module] = {}

    def _slot(self, dotted: str):
        parent_name, _, attr = dotted.rpartition(".")
        return (self.model.get_submodule(parent_name) if parent_name else self.model), attr

    def compile(self) -> None:
        for dotted in self.compiled_parts:
            parent, attr = self._slot(dotted)
            self.originals[dotted] = getattr(parent, attr)
            setattr(parent, attr, torch.compile(self.originals[dotted]))

    @contextlib.contextmanager
    def eager(self):
        """Run with the uncompiled modules (evaluation sees new shapes that would trigger recompiles)."""
        swapped = {}
        for dotted, original in self.originals.items():
            parent, attr = self._slot(dotted)
            swapped[dotted] = getattr(parent, attr)
            setattr(parent, attr, original)
        try:
            yield
        finally:
            for dotted, wrapper in swapped.items():
                setattr(*self._slot(dotted), wrapper)

    def uncompile(self) -> None:
        for dotted, original in self.originals.items():
            setattr(*self._slot(dotted), original)
        self.originals = {}

    def train_mode(self) -> None:
        self.model.eval()
        self.module.train()


class DenoiserStage(Stage):
    """x0-prediction MSE (or L1) in latent space (pixel space in pixel mode) at a random step, with random noise;
    with the chain loss, the L1 of the whole sampler's result."""

    name = "denoiser"
    compiled_parts = ("unet",)

    def __init__(self, model: ResShiftModel, *, rollout: float = 0.0, loss: str = "mse"):
        super().__init__(model, model.unet)
        model.requires_grad_(False)
        model.unet.requires_grad_(True)
        self.rollout = rollout  # share of the non-final steps trained on the model's own first estimate
        self.l1 = loss == "l1"
        self.chain = loss == "chain"

    def loss(self, batch: dict, device: torch.device) -> torch.Tensor:
        # t and noise are drawn on the CPU from the batch's seed, so a run is the same on any device.
        gen = torch.Generator().manual_seed(batch["seed"])
        hr, lq = batch["hr"].to(device), batch["lq"].to(device)
        if self.chain:
            shape = self.model.latent_shape(lq)
            draws = [torch.randn(shape, generator=gen).to(device) for _ in range(self.model.schedule.steps)]
            return self.model.chain_loss(hr, lq, draws)
        t = torch.randint(self.model.schedule.steps, (hr.shape[0],), generator=gen).to(device)
        noise = torch.randn(self.model.latent_shape(lq), generator=gen).to(device)
        rollout = prior = None
        if self.rollout:  # drawn only then, so runs without it keep the reference random stream
            prior = torch.randn(noise.shape, generator=gen).to(device)
            chosen = torch.rand(t.shape, generator=gen).to(device) < self.rollout
            rollout = (t < self.model.schedule.steps - 1) & chosen
        return self.model.loss(hr, lq, t, noise, rollout=rollout, prior_noise=prior, l1=self.l1)[0]

    @torch.no_grad()
    def evaluate(self, items: list[ValItem], *, seed: int, device: torch.device):
        """Full sampler with fixed noise vs bicubic on the same LR; returns metrics and grid rows."""
        scores, rows = [], []
        with self.eager():
            for i, item in enumerate(items):
                lq = item.lq.to(device)
                draws = diffusion.generator_noise(
                    self.model.latent_shape(self.model.pad(lq)), generator=torch.Generator().manual_seed(seed + i)
                )
                sr = self.model.super_resolve(lq, noise=lambda k: draws(k).to(device)).cpu()
                bic = bicubic_up(item.lq, self.model.scale).clamp(-1, 1)
                border = self.model.scale
                scores.append((*compare(sr, item, border=border), *compare(bic, item, border=border)))
                lr_big = F.interpolate(item.lq, scale_factor=self.model.scale, mode="nearest")
                rows.append([lr_big[0], bic[0], sr[0], item.hr[0]])
        means = torch.tensor(scores, dtype=torch.float64).mean(0).tolist()
        return dict(zip(("psnr", "ssim", "psnr_bicubic", "ssim_bicubic"), means)), rows


class AutoencoderStage(Stage):
    """L1 + a little MSE reconstruction, codebook and commitment losses through the straight-through quantiser.

    With ``quantize=False`` the decoder learns from the continuous latent (no codebook losses), and the
    configuration records it so that inference decodes without snapping to the codebook.
    """

    name = "autoencoder"
    compiled_parts = ("autoencoder.encoder", "autoencoder.decoder")

    def __init__(self, model: ResShiftModel, *, quantize: bool | None = None, commitment: float = 0.25,
                 mse: float = 0.1):
        super().__init__(model, model.autoencoder)
        model.requires_grad_(False)
        model.autoencoder.requires_grad_(True)
        settings = model.config["autoencoder"]
        self.quantize = bool(settings.get("quantize", True)) if quantize is None else quantize
        settings["quantize"] = self.quantize  # recorded, so inference decodes the way the decoder learnt to
        self.commitment, self.mse = commitment, mse

    def loss(self, batch: dict, device: torch.device) -> torch.Tensor:
        ae = self.module
        x = batch["hr"].to(device)
        z = encoded = ae.encode(x)
        vq = 0.0
        if self.quantize:
            if batch["index"] % CODE_RESTART_EVERY == 0:
                self.restart_unused_codes(encoded.detach(), seed=batch["seed"])
            z, codes_index = ae.quantize_latent(encoded)  # straight-through: decoder gradients reach the encoder
            codes = ae.quantize.embedding(codes_index).permute(0, 3, 1, 2)
            vq = F.mse_loss(codes, encoded.detach().float()) + self.commitment * F.mse_loss(encoded.float(),
                                                                                            codes.detach())
        rec = ae.decode(z, quantize=False)
        return F.l1_loss(rec, x) + self.mse * F.mse_loss(rec, x) + vq

    @torch.no_grad()
    def restart_unused_codes(self, z: torch.Tensor, *, seed: int) -> None:
        """Move codebook vectors no latent of this batch picked onto random latents, so none stays dead."""
        _, used = self.module.quantize_latent(z)
        weight = self.module.quantize.embedding.weight
        unused = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
        unused[used.flatten()] = False
        count = int(unused.sum())
        if count == 0:
            return
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
        pick = torch.randint(flat.shape[0], (count,), generator=torch.Generator().manual_seed(seed))
        weight[unused] = flat[pick.to(flat.device)].to(weight.dtype)

    @torch.no_grad()
    def evaluate(self, items: list[ValItem], *, seed: int, device: torch.device):
        """Reconstruction quality (quantised, as inference decodes, unless trained without); HR | reconstruction."""
        scores, rows = [], []
        with self.eager():
            for item in items:
                z = self.module.encode(item.hr.to(device))
                rec = self.module.decode(z, quantize=self.quantize).clamp(-1, 1).cpu()
                scores.append(compare(rec, item, border=self.model.scale))
                rows.append([item.hr[0], rec[0]])
        means = torch.tensor(scores, dtype=torch.float64).mean(0).tolist()
        return dict(zip(("psnr", "ssim"), means)), rows
