"""What the list tools leave out of PostHog's answer, as PostHog's own tool definitions do
(`response.exclude`): every column of every table, which the retrieve tools still give."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mcp import Client
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from posthog_warehouse_mcp.server.app import create_server
from tests.support import MODES, SCHEMA, SCHEMA_ID, SOURCE, Recorder, Seen, settings

pytestmark = pytest.mark.anyio

COLUMNS = [{"name": "id", "type": "integer"}, {"name": "email", "type": "string"}]
TABLE_SCHEMA = {
    **SCHEMA,
    "table": {"id": "t1", "name": "app_postgres_orders", "columns": COLUMNS},
    "available_columns": COLUMNS,
}


def posthog(request: Request, seen: Seen) -> Response:
    page: dict[str, Any] = {"count": 1, "next": None, "previous": None}
    if request.url.path.endswith("/external_data_sources/"):
        return JSONResponse({**page, "results": [{**SOURCE, "schemas": [TABLE_SCHEMA]}]})
    if request.url.path.endswith("/external_data_schemas/"):
        return JSONResponse({**page, "results": [TABLE_SCHEMA]})
    return JSONResponse(TABLE_SCHEMA)


@MODES
async def test_lists_leave_out_table_columns_and_retrieve_keeps_them(mode: str) -> None:
    server = create_server(
        settings(), transport=httpx.ASGITransport(app=Recorder(respond=posthog).app())
    )
    async with Client(server, mode=mode) as client:
        sources = (await client.call_tool("external-data-sources-list", {})).structured_content
        schemas = (await client.call_tool("external-data-schemas-list", {})).structured_content
        one = await client.call_tool("external-data-schemas-retrieve", {"id": SCHEMA_ID})
    assert sources is not None and schemas is not None
    listed = sources["results"][0]["schemas"][0]
    assert listed["table"] == {"id": "t1", "name": "app_postgres_orders"}
    assert "available_columns" not in listed
    assert schemas["results"][0]["table"] == {"id": "t1", "name": "app_postgres_orders"}
    assert "available_columns" not in schemas["results"][0]
    assert (one.structured_content or {})["table"]["columns"] == COLUMNS
    assert (one.structured_content or {})["available_columns"] == COLUMNS
