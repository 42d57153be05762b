"""The app's study page ``/perx2ct/`` (``bundle/monailabel_app/viewer``): how it is added to a FastAPI app.

Fast checks of :func:`viewer.install` on a FastAPI app of its own; the page itself is clicked in a real browser, with
the MONAI Label server and Orthanc, by ``tests/test_ohif_reconstruct.py``.
"""

from __future__ import annotations

import re
import sys

import pytest

from bundle.monailabel_app import viewer


@pytest.fixture
def client_app():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    return app, TestClient(app)


def test_install_serves_the_page_once(client_app):
    app, client = client_app
    assert viewer.install(app) and viewer.install(app)
    assert [getattr(r, "path", None) for r in app.router.routes].count(viewer.PAGE_PATH) == 1
    r = client.get(viewer.PAGE_PATH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text == viewer.PAGE_FILE.read_text()
    r = client.get(viewer.PAGE_PATH.rstrip("/"), follow_redirects=False)  # Starlette's redirect_slashes
    assert r.status_code == 307 and r.headers["location"].endswith(viewer.PAGE_PATH)


def test_install_without_a_server_adds_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "monailabel.app", raising=False)
    assert viewer.install() is False


def test_page_calls_the_served_model_and_opens_ohif():
    html = viewer.PAGE_FILE.read_text()
    assert re.search(r'const MODEL = "perx2ct";', html), "the page must call the app's infer task, perx2ct"
    # the result JSON's key (issue 20's interface) and OHIF 3's viewer parameters
    assert "result.series_instance_uid" in html
    assert 'new URL("ohif/viewer", ROOT)' in html and '"initialSeriesInstanceUID"' in html
