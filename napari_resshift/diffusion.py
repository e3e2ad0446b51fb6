"""Residual-shifting diffusion maths: schedule, forward process, posterior, sampling loop, training loss.

Pure tensor code: the denoiser is any callable ``(x_scaled, t) -> predicted x_0``; no network is imported here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseSource = Callable[[int], torch.Tensor]


@dataclass(frozen=True)
class Schedule:
    """Float64 arrays of the exponential eta schedule, indexed by step t = 0 (least noisy) .. T-1."""

    kappa: float
    sqrt_etas: np.ndarray

    @classmethod
    def exponential(cls, *, steps: int, kappa: float, power: float, min_noise_level: float, etas_end: float):
        """sqrt(eta_t) grows geometrically in (t/(T-1))^power from min(min_noise_level/kappa, min_noise_level)."""
        if steps < 2:
            raise ValueError(f"a ResShift schedule needs at least 2 steps, got {steps}")
        start = min(min_noise_level / kappa, min_noise_level)
        base = np.exp(np.log(etas_end / start) / (steps - 1))
        exponent = np.linspace(0, 1, steps) ** power * (steps - 1)
        return cls(kappa=float(kappa), sqrt_etas=start * base**exponent)

    @classmethod
    def from_config(cls, params: dict) -> "Schedule":
        """Build from the official ``diffusion.params`` layout."""
        if params.get("schedule_name", "exponential") != "exponential":
            raise ValueError(f"only the exponential schedule is supported, not {params['schedule_name']!r}")
        if params.get("predict_type", "xstart") != "xstart":
            raise ValueError(f"only x0 prediction is supported, not {params['predict_type']!r}")
        if params.get("timestep_respacing") not in (None, params["steps"]):
            raise ValueError("timestep respacing is not supported")
        return cls.exponential(
            steps=int(params["steps"]),
            kappa=float(params["kappa"]),
            power=float(params.get("schedule_kwargs", {}).get("power", 0.3)),
            min_noise_level=float(params["min_noise_level"]),
            etas_end=float(params["etas_end"]),
        )

    @property
    def steps(self) -> int:
        return len(self.sqrt_etas)

    @property
    def etas(self) -> np.ndarray:
        return self.sqrt_etas**2

    @property
    def etas_prev(self) -> np.ndarray:
        return np.append(0.0, self.etas[:-1])

    @property
    def alpha(self) -> np.ndarray:
        return self.etas - self.etas_prev

    @property
    def posterior_variance(self) -> np.ndarray:
        return self.kappa**2 * self.etas_prev / self.etas * self.alpha

    @property
    def posterior_variance_clipped(self) -> np.ndarray:
        var = self.posterior_variance
        return np.append(var[1], var[1:])

    @property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        return np.log(self.posterior_variance_clipped)

    @property
    def posterior_mean_coef1(self) -> np.ndarray:
        return self.etas_prev / self.etas

    @property
    def posterior_mean_coef2(self) -> np.ndarray:
        return self.alpha / self.etas

    @property
    def weight_loss_mse(self) -> np.ndarray:
        return 0.5 / self.posterior_variance_clipped * (self.alpha / self.etas) ** 2

    @property
    def noise_scale(self) -> np.ndarray:
        """kappa * sqrt(eta_t): the standard deviation of the forward process."""
        return self.kappa * self.sqrt_etas

    @property
    def timestep_map(self) -> np.ndarray:
        return np.arange(self.steps, dtype=np.int64)


def gather(array: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample coefficient: index the float64 array at t, then cast, shaped to broadcast against ``like``."""
    values = torch.from_numpy(array).to(t.device)[t].to(like.dtype)
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def q_sample(sched: Schedule, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = x_0 + eta_t (y - x_0) + kappa sqrt(eta_t) noise."""
    return gather(sched.etas, t, x0) * (y - x0) + x0 + gather(sched.noise_scale, t, x0) * noise


def prior_sample(sched: Schedule, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_T = y + kappa sqrt(eta_T) noise."""
    t = torch.full((y.shape[0],), sched.steps - 1, dtype=torch.long, device=y.device)
    return torch.addcmul(y, gather(sched.noise_scale, t, y), noise)


def scale_input(sched: Schedule, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Normalise x_t to roughly unit variance before the network: x_t / sqrt(eta_t kappa^2 + 1)."""
    return x_t / torch.sqrt(gather(sched.etas, t, x_t) * sched.kappa**2 + 1)


def p_mean_variance(sched: Schedule, x_t: torch.Tensor, t: torch.Tensor, pred_x0: torch.Tensor):
    """Posterior q(x_{t-1} | x_t, x_0 = pred_x0): mean, variance and clipped log-variance.

    The mean has x_t's shape; the two variances are per sample, [B, 1, ...], broadcastable to x_t.
    """
    mean = torch.addcmul(gather(sched.posterior_mean_coef1, t, x_t) * x_t, gather(sched.posterior_mean_coef2, t, x_t),
                         pred_x0)
    return mean, gather(sched.posterior_variance, t, x_t), gather(sched.posterior_log_variance_clipped, t, x_t)


def p_sample(mean: torch.Tensor, log_variance: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One reverse step: the posterior mean plus noise, except at t = 0."""
    nonzero = (t != 0).to(mean.dtype).reshape(-1, *([1] * (mean.dim() - 1)))
    return torch.addcmul(mean, nonzero * torch.exp(0.5 * log_variance), noise)


def generator_noise(shape, *, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> NoiseSource:
    """Draws from one RNG stream in call order: prior first, then one per reverse step (the reference order)."""
    return lambda index: torch.randn(shape, generator=generator, device=device, dtype=dtype)


def recorded_noise(draws: Sequence[torch.Tensor]) -> NoiseSource:
    """Replays explicit draws: ``draws[0]`` for the prior, ``draws[k + 1]`` for reverse step k (t = T-1-k)."""
    return lambda index: draws[index]


def sample(
    denoise: Denoiser,
    y: torch.Tensor,
    sched: Schedule,
    *,
    noise: NoiseSource,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Run the reverse chain from x_T = y + kappa sqrt(eta_T) eps to x_0, predicting x_0 at every step.

    ``callback`` receives ``{"i", "t", "x", "pred_x0", "mean"}`` after each step; raising from it cancels.
    """
    x = prior_sample(sched, y, noise(0))
    for i, step in enumerate(reversed(range(sched.steps))):
        t = torch.full((y.shape[0],), step, dtype=torch.long, device=y.device)
        pred_x0 = denoise(scale_input(sched, x, t), t)
        mean, _, log_variance = p_mean_variance(sched, x, t, pred_x0)
        x = mean if step == 0 else p_sample(mean, log_variance, t, noise(i + 1))  # no draw for the noiseless last step
        if callback is not None:
            callback({"i": i, "t": step, "x": x, "pred_x0": pred_x0, "mean": mean})
    return x


def training_loss(
    sched: Schedule,
    denoise: Denoiser,
    x0: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    *,
    weighted: bool = False,
    source: torch.Tensor | None = None,
    l1: bool = False,
):
    """x_0-prediction MSE (mean absolute error with ``l1``) at steps t; returns (loss, per-sample error, prediction,
    x_t).

    x_t is built from ``source`` where given (e.g. the model's own earlier estimate of x_0), else from x_0.
    """
    x_t = q_sample(sched, x0 if source is None else source, y, t, noise)
    pred = denoise(scale_input(sched, x_t, t), t)
    error = (x0 - pred).abs() if l1 else (x0 - pred) ** 2
    per_sample = error.mean(dim=tuple(range(1, x0.dim())))
    weight = gather(sched.weight_loss_mse, t, per_sample) if weighted else 1.0
    return (weight * per_sample).mean(), per_sample, pred, x_t
