"""The PerX2CT study page: a "Reconstruct CT" button beside each DICOMweb study, then the CT opened in OHIF.

The MONAI Label server serves it at ``/perx2ct/`` (added to MONAI Label's own FastAPI app by :func:`install`,
which :meth:`main.PerX2CTApp.on_init_complete` calls), beside the OHIF viewer MONAI Label already serves at
``/ohif/``. The page (``index.html``, one static file, no build step) talks to the same server only:

* it lists the studies of the PACS through MONAI Label's DICOMweb proxy (``GET /proxy/dicom/qido/studies``, then
  ``/studies/<uid>/series`` for each; ``monailabel/endpoints/proxy.py``), the same route OHIF's study list uses;
* "Reconstruct CT" sends ``POST /infer/perx2ct?image=<StudyInstanceUID>&output=json``; the app stores the CT series
  into that study (STOW-RS) and answers with its ``series_instance_uid``;
* "Open CT in OHIF" goes to ``/ohif/viewer?StudyInstanceUIDs=<study>&initialSeriesInstanceUID=<CT series>``: the
  bundled OHIF (3.10 beta, ``monailabel/endpoints/static/ohif``) opens the study in its basic viewer with the CT in the
  viewport (``initialSeriesInstanceUID``: OHIF's hanging protocol, ``getSplitParam('initialseriesinstanceuid')`` in
  its ``app.bundle.*.js``).

Why a page and not a button inside OHIF: the OHIF in the monailabel wheel is a prebuilt bundle; its MONAI Label mode
accepts CT/MR studies only and never lists models of type ``others``, and changing that means rebuilding OHIF from
source (a Node build of the whole viewer). See ``docs/monailabel.md``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

from fastapi import Depends
from fastapi.responses import FileResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User

logger = logging.getLogger(__name__)

__all__ = ["PAGE_PATH", "PAGE_FILE", "install"]

#: where the server serves the page
PAGE_PATH = "/perx2ct/"
#: the page itself (HTML, CSS and script in one file)
PAGE_FILE = Path(__file__).resolve().parent / "index.html"


# the same role check as MONAI Label's /ohif/ route (monailabel/endpoints/ohif.py)
_USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))


async def _page(user: User = _USER) -> FileResponse:
    return FileResponse(PAGE_FILE, media_type="text/html", headers={"Cache-Control": "no-store"})


def install(app: Optional[Any] = None) -> bool:
    """Add ``GET /perx2ct/`` (the page) to MONAI Label's FastAPI app (``/perx2ct`` is redirected to it by Starlette's
    ``redirect_slashes``).

    ``app``: the FastAPI application; by default the one the server runs, ``monailabel.app:app`` (``monailabel
    start_server`` runs uvicorn on that module: ``--uvicorn_app`` default, ``monailabel/main.py`` line 57). Returns False,
    adding nothing, when no server app is loaded (the app used from the command line or a notebook). Calling it twice
    adds the routes once. Routes added after start-up are served: Starlette's router reads its route list per request.
    """
    if app is None:
        module = sys.modules.get("monailabel.app")
        if module is None:
            return False
        app = module.app
    if any(getattr(route, "path", None) == PAGE_PATH for route in app.router.routes):
        return True
    app.add_api_route(PAGE_PATH, _page, methods=["GET"], include_in_schema=False)
    logger.info("PerX2CT study page: %s (opens the CT series in /ohif/)", PAGE_PATH)
    return True
