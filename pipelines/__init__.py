"""Batch front-ends over the core: ``python -m pipelines.upscale_zarr`` upscales huge mosaics out of core with dask.

Modules: readers (lazy inputs), ome (OME-Zarr output per spec version), execute (local and distributed runs), example.
"""
