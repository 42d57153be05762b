"""Launcher of the PerX2CT MONAI Label app, run from the repository root::

    python -m bundle.monailabel_app start_server --app bundle/monailabel_app --studies DIR --conf models perx2ct

The same arguments as ``monailabel start_server`` (they go to MONAI Label's own CLI unchanged); the only
difference is :func:`bundle.monailabel_app.lib.compat.install`, which lets MONAI Label 0.8.5 start under
pydicom 3 (see that module). With pydicom < 3 installed, plain ``monailabel start_server`` works too.
"""

from __future__ import annotations

from bundle.monailabel_app.lib import compat


def main() -> None:
    compat.install()
    from monailabel.main import Main

    Main().run()


if __name__ == "__main__":
    main()
