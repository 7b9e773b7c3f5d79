"""The OpenAPI document declares the content types the operator API really sends."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from streams.api.openapi import document
from streams.api.web import ROUTES, bound_port, build_api, serve
from streams.app import Worker
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from tests.harness import isolated_settings
from tests.integration.conftest import stop_or_explain


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path)


async def test_static_files_are_declared_with_the_type_they_are_served_with(
    worker: Worker,
) -> None:
    paths = document()["paths"]
    runner = await serve(build_api(worker), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            for route in ROUTES:
                if route.role is not None or route.method != "GET":
                    continue
                url = f"http://127.0.0.1:{bound_port(runner)}{route.path}"
                async with http.get(url) as response:
                    served = response.content_type
                declared = paths[route.path]["get"]["responses"][str(response.status)]
                assert list(declared["content"]) == [served], route.path
    finally:
        await stop_or_explain(runner.cleanup(), "the API to stop")
