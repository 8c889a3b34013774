"""A small fast PostHog stand-in for the overhead benchmark: answers every GET with one source."""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SOURCE_ID = "0b5e6f1c-3f0a-4c55-9a57-5d4f4a0c2b11"
BODY = json.dumps(
    {
        "id": SOURCE_ID,
        "source_type": "Postgres",
        "prefix": "app_",
        "status": "Completed",
        "latest_error": None,
        "last_run_at": None,
        "schemas": [],
    },
    separators=(",", ":"),
).encode()


async def handle(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/{path:path}", handle)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
