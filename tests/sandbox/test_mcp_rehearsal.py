"""Through MCP: wizard, db-schema, rehearse, create with the rehearsed schemas, sync, and
execute-sql counts that match the rehearsal's; with a secret reference, never the password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sandbox.support import Upstream, agent, call
from tests.support import text_of

pytestmark = pytest.mark.anyio

NAME = "POSTHOG_SECRET_REHEARSED_DB"


async def test_a_rehearsed_import_syncs_what_the_rehearsal_said(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), "
        "updated_at timestamptz NOT NULL);"
        "INSERT INTO orders SELECT g, g * 1.5, now() - g * interval '1 minute' "
        "FROM generate_series(1, 400) g;"
        "CREATE TABLE events (id bigint, at timestamptz);"
        "INSERT INTO events SELECT g % 30, now() FROM generate_series(1, 60) g;"
    )
    creds = upstream.creds
    monkeypatch.setenv(NAME, creds.password)
    monkeypatch.setenv(f"{NAME}_HOSTS", f"{creds.host}:{creds.port}")
    connection = {**creds.job_inputs(), "password": {"env": NAME}}
    async with agent(tmp_path) as (client, _app):
        wizard = await call(client, "external-data-sources-wizard", {"source_type": "Postgres"})
        assert "password" in {f["name"] for f in wizard["Postgres"]["fields"]}
        found = await call(
            client,
            "external-data-sources-db-schema",
            {"source_type": "Postgres", "payload": connection},
        )
        assert {t["table"] for t in found["results"]} == {"orders", "events"}
        tried = [
            {"name": "orders", "should_sync": True, "sync_type": "incremental",
             "incremental_field": "updated_at"},
            {"name": "events", "should_sync": True, "sync_type": "incremental",
             "incremental_field": "at"},
        ]  # fmt: skip
        report = await call(
            client,
            "external-data-sources-rehearse",
            {
                "source_type": "Postgres",
                "prefix": "shop_",
                "payload": {**connection, "schemas": tried},
                "rows": 100_000,
                "seconds": 30,
            },
        )
        tables = {t["name"]: t for t in report["tables"]}
        assert tables["orders"]["warehouse_table"] == "shop_postgres_orders"
        assert tables["orders"]["problems"] == []
        # The bill, estimated from what was measured: no frequency given, so PostHog's 6 hours.
        monthly = tables["orders"]["estimates"]["monthly"]
        assert (monthly["sync_frequency"], monthly["syncs_per_month"]) == ("6hour", 120)
        assert isinstance(monthly["billed_rows_estimate"], int), monthly
        assert tables["orders"]["estimates"]["first_sync"]["billed_rows"] == 0
        assert "free historical meter" in report["billing_rules"]
        # events has no key, and its ids repeat: rehearsal says so, with a fix.
        assert tables["events"]["problems"], tables["events"]
        assert creds.password not in json.dumps(report)
        # The user leaves events out, and creates what the rehearsal proposes for orders.
        schemas = [s for s in report["schemas"] if s["name"] == "orders"]
        created = await call(
            client,
            "external-data-sources-create",
            {
                "source_type": "Postgres",
                "prefix": "shop_",
                "payload": {**connection, "schemas": schemas},
            },
        )
        waited = await call(
            client, "external-data-sources-jobs-wait", {"id": created["id"], "wait_seconds": 60}
        )
        assert [j["status"] for j in waited["results"]] == ["Completed"]
        counted = await call(
            client, "execute-sql", {"query": "SELECT count() FROM shop_postgres_orders"}
        )
        assert counted["results"] == [[tables["orders"]["rows"]["count"]]] == [[400]]
        # Bad input is a clear error, and nothing is synced.
        unknown = await client.call_tool(
            "external-data-sources-rehearse",
            {
                "source_type": "Postgres",
                "payload": {
                    **connection,
                    "schemas": [{"name": "nope", "sync_type": "full_refresh"}],
                },
            },
        )
        assert unknown.is_error is True and "nope" in text_of(unknown)
        assert "nothing was sent" in text_of(unknown)
        elsewhere = await client.call_tool(
            "external-data-sources-rehearse",
            {"source_type": "Stripe", "payload": {"schemas": [{"name": "charges"}]}},
        )
        assert elsewhere.is_error is True and "Stripe" in text_of(elsewhere)
