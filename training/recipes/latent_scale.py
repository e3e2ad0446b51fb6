"""The denoiser configuration for a trained continuous autoencoder: ``scale_factor`` = 1 / std of its latents.

``python -m training.recipes.latent_scale AE.safetensors DATA_DIR OUT.json`` (the ``small`` architecture).
"""
import json
import sys
from pathlib import Path

import torch

from napari_resshift.loading import load_project_model
from napari_resshift.registry import architecture
from training.data import check_source, find_images, open_source

SIDE = 64  # pixels of each sampled crop


def latent_std(autoencoder, folders: list[Path], *, every: int = 4, limit: int = 60) -> float:
    files = [f for folder in folders for f in find_images(folder)[::every]][:limit]
    latents = []
    with torch.no_grad():
        for f in files:
            source = check_source(open_source(f), min_size=SIDE, norm="auto")
            x = torch.from_numpy(source.normalised(0, source.groups[0], 0, 0, SIDE, SIDE))[None]
            latents.append(autoencoder.encode(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x))
    return torch.cat(latents).std().item()


def main(argv=None) -> int:
    ae_path, data, out = (Path(a) for a in (argv or sys.argv[1:]))
    model, _ = load_project_model(ae_path)
    std = latent_std(model.autoencoder, sorted(p for p in data.iterdir() if p.is_dir()))
    config = architecture("small")
    config["diffusion"]["params"]["scale_factor"] = round(1 / std, 4)
    out.write_text(json.dumps(config, indent=2))
    print(f"latent std {std:.4f}: scale_factor {1 / std:.4f} written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
