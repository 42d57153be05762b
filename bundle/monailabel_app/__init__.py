"""The PerX2CT MONAI Label app (``main.py`` + ``lib/``); ``python -m bundle.monailabel_app`` starts it.

MONAI Label loads ``main.py`` from this folder by path; this ``__init__`` only exists so the launcher
in ``__main__.py`` can be run with ``-m``.
"""
