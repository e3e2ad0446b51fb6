"""Writes a parity kit in the reference kit's layout from THIS implementation, for another configuration.

It does not prove agreement with the reference (only ../shared/parity does); it proves that the parity tests read
everything from the kit they are pointed at: ``python scripts/make_parity_kit.py /tmp/kit2`` then
``RESSHIFT_PARITY_DIRS=/tmp/kit2 python -m pytest -k parity`` (other widths, window 4, 15 steps, kappa 0.5).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from napari_resshift import diffusion
from napari_resshift.loading import save_official
from napari_resshift.model import ResShiftModel, bicubic_up
from napari_resshift.nets.unet import shifted_window_mask, timestep_embedding
from napari_resshift.registry import architecture, diffusion_params
from napari_resshift.tiling import plan_tiles

CHOP, STRIDE = 16, 12


def config() -> dict:
    cfg = architecture("tiny")
    cfg["model"]["params"] |= {"model_channels": 64, "swin_embed_dim": 64, "num_head_channels": 32, "window_size": 4}
    cfg["diffusion"]["params"] = diffusion_params(steps=15, min_noise_level=0.04, kappa=0.5)
    cfg["autoencoder"]["params"]["n_embed"] = 32
    cfg["autoencoder"]["params"]["ddconfig"]["ch"] = 64
    cfg["model"]["ckpt_path"] = "unet.pth"
    cfg["autoencoder"]["ckpt_path"] = "autoencoder.pth"
    return cfg


def arrays(d: dict) -> dict:
    return {k: (v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in d.items()}


def margins(model, z):
    e = model.autoencoder.quantize.embedding.weight
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    dist = (flat**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * flat @ e.T
    two = dist.topk(2, largest=False).values
    return (two[:, 1] - two[:, 0]).reshape(z.shape[0], *z.shape[2:])


def main(out: str) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    cfg = config()
    model = ResShiftModel(cfg).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    save_official(model, out, overwrite=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "meta.json").write_text(json.dumps({"kind": "generated", "chop": {"chop_size": CHOP, "chop_stride": STRIDE}}))
    params = cfg["diffusion"]["params"]
    (out / "schedule_params.json").write_text(json.dumps({"gen": params}))
    sched = model.schedule
    names = ["sqrt_etas", "etas", "etas_prev", "alpha", "posterior_variance", "posterior_variance_clipped",
             "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "weight_loss_mse"]
    np.savez(out / "schedules.npz", **{f"f64_gen__{n}": getattr(sched, n) for n in names},
             gen__timestep_map=sched.timestep_map)
    T, lq_size = sched.steps, cfg["model"]["params"]["lq_size"]
    mc, w = cfg["model"]["params"]["model_channels"], cfg["model"]["params"]["window_size"]
    with torch.no_grad():
        uf = {}
        for k, (h, wd) in enumerate([(lq_size, lq_size), (lq_size * 3 // 2, lq_size)]):
            x, lq, t = torch.randn(2, 3, h, wd), torch.rand(2, 3, h, wd) * 2 - 1, torch.tensor([0, T - 1])
            sin = timestep_embedding(t, mc)
            uf |= {f"case{k}_x": x, f"case{k}_t": t, f"case{k}_lq": lq, f"case{k}_out": model.unet(x, t, lq),
                   f"case{k}_temb_sin": sin, f"case{k}_temb": model.unet.time_embed(sin)}
            uf[f"mask_h{h}_w{wd}_ws{w}_sh{w // 2}"] = shifted_window_mask(h, wd, w, w // 2)
        np.savez(out / "unet_forward.npz", **arrays(uf))
        x, y = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
        z = model.autoencoder.encode(x)
        z_q, idx = model.autoencoder.quantize_latent(z)
        y_up = bicubic_up(y, 4)
        np.savez(out / "autoencoder.npz", **arrays({
            "x": x, "z": z, "z_q": z_q, "code_idx": idx, "code_margin": margins(model, z),
            "dec_quant": model.autoencoder.decode(z), "dec_noquant": model.autoencoder.decode(z, quantize=False),
            "y": y, "y_up": y_up, "z_y": model.autoencoder.encode(y_up),
            "decode_first_stage_of_z": model.autoencoder.decode(z)}))
        b = 4
        hr, lq = torch.rand(b, 3, 4 * lq_size, 4 * lq_size) * 2 - 1, torch.rand(b, 3, lq_size, lq_size) * 2 - 1
        t = torch.tensor([T - 1, T // 2, 1, 0])
        z0, zy, noise = model.encode(hr), model.condition(lq), torch.randn(b, 3, lq_size, lq_size)
        xt = diffusion.q_sample(sched, z0, zy, t, noise)
        si = diffusion.scale_input(sched, xt, t)
        mo = model.denoiser(lq)(si, t)
        mean, var, logvar = diffusion.p_mean_variance(sched, xt, t, mo)
        psn, pn = torch.randn_like(xt), torch.randn_like(xt)
        cmean, _, _ = diffusion.p_mean_variance(sched, xt, t, mo.clamp(-1, 1))
        np.savez(out / "diffusion_ops.npz", **arrays({
            "hr": hr, "lq": lq, "z_start": z0, "z_y": zy, "t": t, "noise": noise, "q_sample": xt, "scale_input": si,
            "pmv_model_output": mo, "pmv_pred_xstart": mo, "pmv_mean": mean, "pmv_variance": var,
            "pmv_log_variance": logvar, "p_sample_noise": psn, "p_sample_out": diffusion.p_sample(mean, logvar, t, psn),
            "prior_noise": pn, "prior_sample": diffusion.prior_sample(sched, zy, pn),
            "pmv_clip_pred_xstart": mo.clamp(-1, 1), "pmv_clip_mean": cmean}))
        full = {}
        for k, (h, wd) in enumerate([(lq_size, lq_size), (lq_size + 4, lq_size - 4)]):
            y0 = torch.rand(1, 3, h, wd) * 2 - 1
            padded = model.pad(y0)
            shape = model.latent_shape(padded)
            draws = [torch.randn(shape) for _ in range(T + 1)]
            steps = []
            o = model.super_resolve(y0, noise=diffusion.recorded_noise(draws), callback=steps.append)
            zf = steps[-1]["x"]
            zq, ci = model.autoencoder.quantize_latent(zf)
            full |= {f"case{k}_{n}": v for n, v in {
                "y0": y0, "noise_prior": draws[0], "noise_steps": torch.stack(draws[1:]), "out": o,
                "y0_padded": padded, "y0_up": bicubic_up(padded, 4), "z_y": model.condition(padded),
                "pred_xstart": torch.stack([s["pred_x0"] for s in steps]),
                "post_mean": torch.stack([s["mean"] for s in steps]),
                "z_samples": torch.stack([s["x"] for s in steps]), "z_final": zf, "code_idx": ci,
                "code_margin": margins(model, zf), "z_q": zq, "decoded": model.decode(zf)}.items()}
        np.savez(out / "sample_full.npz", **arrays(full))
        y0 = torch.rand(1, 3, 28, 20) * 2 - 1
        tiles = plan_tiles(28, 20, tile=CHOP, overlap=CHOP - STRIDE)
        n = len(tiles)
        prior, steps_noise = torch.randn(n, 3, CHOP, CHOP), torch.randn(T, n, 3, CHOP, CHOP)
        acc, count, outs = torch.zeros(1, 3, 112, 80), torch.zeros(112, 80, dtype=torch.long), []
        for i, tl in enumerate(tiles):
            draws = [prior[i:i + 1]] + [s[i:i + 1] for s in steps_noise]
            o = model.super_resolve(y0[..., tl.y0:tl.y0 + CHOP, tl.x0:tl.x0 + CHOP],
                                    noise=diffusion.recorded_noise(draws))
            outs.append(o[0])
            acc[..., 4 * tl.y0:4 * (tl.y0 + CHOP), 4 * tl.x0:4 * (tl.x0 + CHOP)] += o
            count[4 * tl.y0:4 * (tl.y0 + CHOP), 4 * tl.x0:4 * (tl.x0 + CHOP)] += 1
        np.savez(out / "chopped.npz", **arrays({
            "y0": y0, "patch_starts_lq": torch.tensor([(tl.y0, tl.x0) for tl in tiles]), "pixel_count": count,
            "noise_prior": prior, "noise_steps": steps_noise, "patch_out": torch.stack(outs),
            "bs1_out": acc / count, "bs4_out": acc / count}))
    x0, y, t, noise = torch.rand(3, 3, 4 * lq_size, 4 * lq_size) * 2 - 1, torch.rand(3, 3, lq_size, lq_size) * 2 - 1, \
        torch.tensor([0, 1, T - 1]), torch.randn(3, 3, lq_size, lq_size)
    model.train()
    loss, mse, pred, zt, zs = model.loss(x0, y, t, noise)
    loss.backward()
    grads = {f"grad__{n}": p.grad for n, p in model.unet.named_parameters()
             if n in ("out.2.weight", "input_blocks.0.0.weight", "time_embed.0.weight")}
    with torch.no_grad():
        np.savez(out / "training_losses.npz", **arrays({
            "x0": x0, "y": y, "t": t, "noise": noise, "mse": mse, "loss": loss, "z_t": zt, "pred_zstart": pred,
            "z_start": zs, "z_y": model.condition(y), "x0_pred_decoded": model.decode(pred),
            "pred_zstart_code_margin": margins(model, pred), **grads}))
    print(f"wrote a generated parity kit to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
