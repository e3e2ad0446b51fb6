"""A generated low-resolution widefield image of fluorescent cells (nuclei and filaments): the plugin's sample and
the model-zoo package's test input. Generated, not shipped; the same seed gives the same image on every machine.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

SIZE = 128  # LR pixels: the ×4 result (512²) runs in seconds on a CPU with the default model


def cell_image(*, size: int = SIZE, seed: int = 7) -> np.ndarray:
    """uint16 [size, size]: textured nuclei, curved filaments, out-of-focus haze, optical blur and shot noise."""
    rng = np.random.default_rng(seed)
    hr = size * 4
    yy, xx = np.mgrid[0:hr, 0:hr].astype(np.float32)
    scene = np.zeros((hr, hr), np.float32)
    for _ in range(14):
        cy, cx = rng.uniform(0.08, 0.92, 2) * hr
        ry, rx = rng.uniform(0.035, 0.07, 2) * hr
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
        v = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
        scene += rng.uniform(0.6, 1.0) / (1 + np.exp(np.minimum((u * u + v * v - 1) * 12, 60)))  # soft-edged ellipse
    chromatin = ndimage.gaussian_filter(rng.standard_normal((hr, hr)).astype(np.float32), 3)
    scene *= 1 + 1.5 * chromatin / chromatin.std() * 0.15
    for _ in range(40):  # filaments: smooth random walks
        pos, heading = rng.uniform(0, hr, 2), rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.uniform(60, 220))):
            heading += rng.normal(0, 0.08)
            pos = pos + 2 * np.array([np.sin(heading), np.cos(heading)])
            y, x = int(pos[0]), int(pos[1])
            if 0 <= y < hr and 0 <= x < hr:
                scene[y, x] += 0.8
    scene = ndimage.gaussian_filter(scene, 2.5)  # the microscope's point spread
    scene += 0.15 * ndimage.gaussian_filter(scene, 25)  # out-of-focus haze
    lr = scene.reshape(size, 4, size, 4).mean(axis=(1, 3))  # the camera's larger pixels
    photons = rng.poisson(lr / lr.max() * 900 + 60)
    return (photons + rng.normal(100, 4, photons.shape)).clip(0, 65535).astype(np.uint16)
