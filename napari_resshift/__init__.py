"""ResShift diffusion super-resolution for napari, dask pipelines and fine-tuning.

The core (diffusion maths, networks, loader, engine, tiler) lives here; the napari front-end in ``_napari``.
"""
from .engine import Upscaler, pick_device
from .errors import ResShiftError
from .loading import load_model, save_model, save_official

__all__ = ["ResShiftError", "Upscaler", "load_model", "pick_device", "save_model", "save_official"]
__version__ = "0.1.0"
