"""The plugin's sample-data contribution: the generated cells of ``napari_resshift.samples``."""
from __future__ import annotations

import numpy as np

from ..samples import cell_image


def cells():
    """napari sample-data contribution."""
    data = cell_image()
    low, high = np.percentile(data, (0.5, 99.8))
    return [(data, {"name": "cells", "colormap": "green", "contrast_limits": (float(low), float(high))}, "image")]
