"""The napari front-end: the dock widget, the layers it reads and adds, its sample data; named in ``napari.yaml``.

It imports the core (``napari_resshift``); the core imports nothing from here.
"""
