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
SCHEMA_ID = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
# A source with one embedded table schema, as PostHog answers a retrieve: about 1.2 KB.
BODY = json.dumps(
    {
        "id": SOURCE_ID,
        "created_at": "2026-11-02T09:14:03.512Z",
        "created_by": "ada@example.com",
        "status": "Completed",
        "source_type": "Postgres",
        "latest_error": None,
        "prefix": "app_",
        "description": "Production orders database (read replica)",
        "last_run_at": "2026-12-01T23:00:04.118Z",
        "job_inputs": {
            "host": "db.internal.example.com",
            "port": "5432",
            "database": "shop",
            "user": "posthog_reader",
            "schema": "public",
            "ssh_tunnel": {"enabled": False},
        },
        "revenue_analytics_config": {"enabled": False, "include_invoiceless_charges": True},
        "user_access_level": "editor",
        "schemas": [
            {
                "id": SCHEMA_ID,
                "name": "orders",
                "should_sync": True,
                "incremental": True,
                "sync_type": "incremental",
                "incremental_field": "updated_at",
                "incremental_field_type": "timestamp",
                "sync_frequency": "6hour",
                "sync_time_of_day": "00:00:00",
                "status": "Completed",
                "latest_error": None,
                "last_synced_at": "2026-12-01T23:00:31.904Z",
                "primary_key_columns": ["id"],
                "table": {
                    "id": "3f9a1c52-8d3e-4b7a-9f21-6c0e5d4b2a18",
                    "name": "app_postgres_orders",
                    "row_count": 20000,
                    "columns": [
                        {"key": "id", "name": "id", "type": "integer", "schema_valid": True},
                        {
                            "key": "customer_id",
                            "name": "customer_id",
                            "type": "integer",
                            "schema_valid": True,
                        },
                        {"key": "amount", "name": "amount", "type": "float", "schema_valid": True},
                        {
                            "key": "updated_at",
                            "name": "updated_at",
                            "type": "datetime",
                            "schema_valid": True,
                        },
                    ],
                },
            }
        ],
    },
    separators=(",", ":"),
).encode()


async def handle(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/{path:path}", handle)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
