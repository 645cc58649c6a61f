"""``/docs`` and ``/redoc`` work without internet access: every script, stylesheet and icon the
pages load is served by the host itself from assets installed with the package."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from host.api.app import create_app
from host.platform import Host


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_each_docs_page_loads_only_local_assets(host: Host, page: str) -> None:
    with TestClient(create_app(host)) as client:
        html = client.get(page)
        assert html.status_code == 200
        assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
        assets += re.findall(r"""(?:url|spec-url)\s*:\s*['"]([^'"]+)['"]""", html.text)
        assert assets, html.text
        assert not [a for a in assets if "//" in a], "no asset from another origin"
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200, asset
            assert len(response.content) > 0, asset
        scripts = [a for a in assets if a.endswith(".js")]
        assert scripts, "the page runs a bundled script"
        assert all(len(client.get(s).content) > 100_000 for s in scripts)
