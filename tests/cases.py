"""What the tool table should be, written out by hand rather than derived from it, so that a
wrong row fails a test: the request each tool sends, which tools are destructive, read-only and
never retried, and which toolset each belongs to."""

from __future__ import annotations

from typing import Any, NamedTuple

from mcp import Client

from tests.support import SCHEMA_ID, SOURCE_ID

BASE = "/api/environments/42/"
SRC = f"{BASE}external_data_sources/{SOURCE_ID}/"
SCH = f"{BASE}external_data_schemas/{SCHEMA_ID}/"


# Stands for a plan id that a plan made on the same server gives (with_plan).
PLAN_ID = "<plan_id of external-data-schemas-plan's case>"


class Case(NamedTuple):
    """Valid arguments for a tool, and the request PostHog documents for them."""

    arguments: dict[str, Any]
    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any


def with_inputs(action: str) -> Case:
    """A webhook action on the source that sends the webhook's inputs as given."""
    inputs = {"signing_secret": "whsec_1"}
    return Case(
        {"id": SOURCE_ID, "inputs": inputs}, "POST", f"{SRC}{action}", [], {"inputs": inputs}
    )


PAYLOAD = {
    "host": "db",
    "port": 5432,
    "password": "pw",
    "schemas": [{"name": "orders", "should_sync": True, "sync_type": "full_refresh"}],
}
INCREMENTAL = {
    "id": SCHEMA_ID,
    "should_sync": True,
    "sync_type": "incremental",
    "incremental_field": "updated_at",
    "incremental_field_type": "timestamp",
    "sync_frequency": "1hour",
    "enabled_columns": None,
}

CASES: dict[str, Case] = {
    "external-data-sources-list": Case(
        {"limit": 10, "offset": 20, "search": "Stripe"},
        "GET",
        f"{BASE}external_data_sources/",
        [("limit", "10"), ("offset", "20"), ("search", "Stripe")],
        None,
    ),
    "external-data-sources-create": Case(
        {"source_type": "Postgres", "prefix": "app_", "payload": PAYLOAD},
        "POST",
        f"{BASE}external_data_sources/",
        [],
        {"source_type": "Postgres", "prefix": "app_", "created_via": "mcp", "payload": PAYLOAD},
    ),
    "external-data-sources-retrieve": Case({"id": SOURCE_ID}, "GET", SRC, [], None),
    "external-data-sources-partial-update": Case(
        {"id": SOURCE_ID, "description": "prod replica"},
        "PATCH",
        SRC,
        [],
        {"description": "prod replica"},
    ),
    "external-data-sources-destroy": Case({"id": SOURCE_ID}, "DELETE", SRC, [], None),
    "external-data-sources-bulk-update-schemas-partial-update": Case(
        {"id": SOURCE_ID, "schemas": [INCREMENTAL]},
        "PATCH",
        f"{SRC}bulk_update_schemas/",
        [],
        {"schemas": [INCREMENTAL]},
    ),
    "external-data-sources-create-webhook-create": with_inputs("create_webhook/"),
    "external-data-sources-delete-webhook-create": Case(
        {"id": SOURCE_ID},
        "POST",
        f"{SRC}delete_webhook/",
        [],
        {},
    ),
    "external-data-sources-repair-cdc-create": Case(
        {"id": SOURCE_ID},
        "POST",
        f"{SRC}repair_cdc/",
        [],
        {},
    ),
    "external-data-sources-jobs": Case(
        {"id": SOURCE_ID, "after": "2026-01-01T00:00:00Z", "schemas": ["orders", "users"]},
        "GET",
        f"{SRC}jobs/",
        [("after", "2026-01-01T00:00:00Z"), ("schemas", "orders"), ("schemas", "users")],
        None,
    ),
    "external-data-sources-refresh-schemas": Case(
        {"id": SOURCE_ID},
        "POST",
        f"{SRC}refresh_schemas/",
        [],
        {},
    ),
    "external-data-sources-reload": Case({"id": SOURCE_ID}, "POST", f"{SRC}reload/", [], {}),
    "external-data-sources-revenue-analytics-config-partial-update": Case(
        {"id": SOURCE_ID, "enabled": True},
        "PATCH",
        f"{SRC}revenue_analytics_config/",
        [],
        {"enabled": True},
    ),
    "external-data-schemas-list": Case(
        {"search": "orders", "limit": 5},
        "GET",
        f"{BASE}external_data_schemas/",
        [("search", "orders"), ("limit", "5")],
        None,
    ),
    "external-data-schemas-retrieve": Case({"id": SCHEMA_ID}, "GET", SCH, [], None),
    "external-data-schemas-partial-update": Case(
        {"id": SCHEMA_ID, "should_sync": False, "sync_time_of_day": "03:00:00"},
        "PATCH",
        SCH,
        [],
        {"should_sync": False, "sync_time_of_day": "03:00:00"},
    ),
    "external-data-schemas-destroy": Case({"id": SCHEMA_ID}, "DELETE", SCH, [], None),
    "external-data-schemas-cancel": Case({"id": SCHEMA_ID}, "POST", f"{SCH}cancel/", [], {}),
    "external-data-schemas-delete-data": Case(
        {"id": SCHEMA_ID},
        "DELETE",
        f"{SCH}delete_data/",
        [],
        None,
    ),
    "external-data-schemas-incremental-fields-create": Case(
        {"id": SCHEMA_ID},
        "POST",
        f"{SCH}incremental_fields/",
        [],
        {},
    ),
    "external-data-schemas-reload": Case({"id": SCHEMA_ID}, "POST", f"{SCH}reload/", [], {}),
    "external-data-schemas-resync": Case({"id": SCHEMA_ID}, "POST", f"{SCH}resync/", [], {}),
    "external-data-sources-wizard": Case(
        {"source_type": "Postgres"},
        "GET",
        f"{BASE}external_data_sources/wizard/",
        [("source_type", "Postgres")],
        None,
    ),
    "external-data-sources-webhook-info-retrieve": Case(
        {"id": SOURCE_ID}, "GET", f"{SRC}webhook_info/", [], None
    ),
    "external-data-sources-connections-list": Case(
        {}, "GET", f"{BASE}external_data_sources/connections/", [], None
    ),
    # PostHog's tool spreads the connection fields flat beside source_type.
    "external-data-sources-db-schema": Case(
        {"source_type": "Postgres", "payload": {"host": "db", "port": 5432, "password": "pw"}},
        "POST",
        f"{BASE}external_data_sources/database_schema/",
        [],
        {"host": "db", "port": 5432, "password": "pw", "source_type": "Postgres"},
    ),
    "data-warehouse-source-setup": Case(
        {"source_type": "Postgres", "payload": {"host": "db"}, "prefix": "app"},
        "POST",
        f"{BASE}external_data_sources/setup/",
        [],
        {"source_type": "Postgres", "payload": {"host": "db"}, "prefix": "app"},
    ),
    "external-data-sources-update-webhook-inputs-create": with_inputs("update_webhook_inputs/"),
    "external-data-sources-preview-resource": Case(
        {"source_type": "Custom", "payload": {"manifest_json": "{}"}, "resource_name": "users"},
        "POST",
        f"{BASE}external_data_sources/preview_resource/",
        [],
        {"source_type": "Custom", "payload": {"manifest_json": "{}"}, "resource_name": "users"},
    ),
    # The connection fields go flat beside source_type and the check's own fields.
    "external-data-sources-check-cdc-prerequisites-create": Case(
        {
            "source_type": "Postgres",
            "payload": {"host": "db", "password": "pw"},
            "tables": ["orders"],
            "cdc_management_mode": "self_managed",
            "cdc_publication_name": "posthog_pub",
        },
        "POST",
        f"{BASE}external_data_sources/check_cdc_prerequisites/",
        [],
        {
            "host": "db",
            "password": "pw",
            "source_type": "Postgres",
            "tables": ["orders"],
            "cdc_management_mode": "self_managed",
            "cdc_publication_name": "posthog_pub",
        },
    ),
    "data-warehouse-data-health-issues-retrieve": Case(
        {}, "GET", f"{BASE}data_warehouse/data_health_issues/", [], None
    ),
    "external-data-sources-jobs-wait": Case(
        {"id": SOURCE_ID, "schemas": ["orders"], "wait_seconds": 5},
        "GET",
        f"{SRC}jobs/",
        [("schemas", "orders")],
        None,
    ),
    # The audit starts from the sources list; its other reads depend on what that shows.
    "external-data-sources-audit": Case(
        {}, "GET", f"{BASE}external_data_sources/", [("limit", "100")], None
    ),
    # Answered on this machine: nothing reaches PostHog (LOCAL). The case's database is not
    # there, so the answer is the connector's refusal; the sandbox tests rehearse for real.
    "external-data-sources-rehearse": Case(
        {
            "source_type": "Postgres",
            "payload": {
                "host": "127.0.0.1",
                "port": 9,
                "database": "app",
                "user": "app",
                "password": "pw-not-used-0123",
                "schemas": [{"name": "orders", "should_sync": True, "sync_type": "full_refresh"}],
            },
            "rows": 10,
            "seconds": 5,
        },
        "LOCAL",
        "(this machine)",
        [],
        None,
    ),
    # A plan reads the source (then its jobs); applying one reads the source, then sends the
    # plan's changes. Its plan id comes from a plan made in the same test (PLAN_ID).
    "external-data-schemas-plan": Case(
        {
            "id": SOURCE_ID,
            "changes": [
                {"id": SCHEMA_ID, "set": {"sync_type": "full_refresh", "sync_frequency": "1hour"}}
            ],
        },
        "GET",
        SRC,
        [],
        None,
    ),
    "external-data-schemas-apply-plan": Case(
        {"id": SOURCE_ID, "plan_id": PLAN_ID}, "GET", SRC, [], None
    ),
    "data-warehouse-source-connect-link": Case(
        {"source_type": "Postgres"},
        "GET",
        f"{BASE}external_data_sources/connect_link/",
        [("source_type", "Postgres")],
        None,
    ),
    "data-warehouse-stored-credentials-list": Case(
        {"source_type": "Postgres"},
        "GET",
        f"{BASE}external_data_sources/stored_credentials/",
        [("source_type", "Postgres")],
        None,
    ),
    # The query goes inside an outer SELECT asking one row more than the caller's limit.
    "execute-sql": Case(
        {"query": "SELECT count() FROM postgres.app.orders;", "limit": 20},
        "POST",
        f"{BASE}query/",
        [],
        {
            "query": {
                "kind": "HogQLQuery",
                "query": "SELECT * FROM (\nSELECT count() FROM postgres.app.orders\n) LIMIT 21",
            },
            "name": "execute-sql",
        },
    ),
    "read-data-warehouse-schema": Case(
        {"search": "orders"},
        "POST",
        f"{BASE}query/",
        [],
        {"query": {"kind": "DatabaseSchemaQuery"}},
    ),
    # PostHog's tool turns a minimum level into the list from it up and a job id into
    # instance_id, and always sends its own limit.
    "external-data-sync-logs": Case(
        {"schema_id": SCHEMA_ID, "job_id": "wf-7", "level": "WARNING", "search": "timeout"},
        "GET",
        f"{SCH}logs/",
        [
            ("limit", "100"),
            ("level", "WARNING,ERROR"),
            ("instance_id", "wf-7"),
            ("search", "timeout"),
        ],
        None,
    ),
}

DESTRUCTIVE = {
    "external-data-schemas-apply-plan",
    "external-data-sources-destroy",
    "external-data-sources-delete-webhook-create",
    "external-data-sources-repair-cdc-create",
    "external-data-schemas-destroy",
    "external-data-schemas-delete-data",
    "external-data-schemas-resync",
}
# The tools a read-scoped key can call; every other needs external_data_source:write (PostHog's
# MCP tool YAML).
READ_SCOPED = {
    "external-data-sources-wizard",
    "external-data-sources-webhook-info-retrieve",
    "external-data-sources-connections-list",
    "external-data-sync-logs",
    "external-data-sources-list",
    "external-data-sources-retrieve",
    "external-data-sources-jobs",
    "external-data-schemas-list",
    "external-data-schemas-retrieve",
    "data-warehouse-data-health-issues-retrieve",
    "execute-sql",
    "read-data-warehouse-schema",
    "data-warehouse-source-connect-link",
    "data-warehouse-stored-credentials-list",
    "external-data-sources-jobs-wait",
    "external-data-sources-audit",
    "external-data-schemas-plan",
    "external-data-sources-rehearse",
}
# Annotated read-only: those, and four that change nothing yet need write.
READ_ONLY = READ_SCOPED | {
    "external-data-schemas-incremental-fields-create",
    "external-data-sources-db-schema",
    "external-data-sources-preview-resource",
    "external-data-sources-check-cdc-prerequisites-create",
}
# Posts that are not idempotent: one that may have reached PostHog is never sent again.
NEVER_RETRIED = {
    "data-warehouse-source-setup",
    "external-data-sources-create",
    "external-data-sources-create-webhook-create",
    "external-data-sources-reload",
    "external-data-schemas-reload",
    "external-data-schemas-resync",
}

# What --toolsets selects: each toolset's tools.
TOOLSET_TOOLS = {
    "sources": {
        "external-data-sources-list",
        "external-data-sources-create",
        "external-data-sources-retrieve",
        "external-data-sources-partial-update",
        "external-data-sources-destroy",
        "external-data-sources-connections-list",
    },
    "schemas": {
        "external-data-sources-bulk-update-schemas-partial-update",
        "external-data-schemas-list",
        "external-data-schemas-retrieve",
        "external-data-schemas-partial-update",
        "external-data-schemas-destroy",
        "external-data-schemas-delete-data",
        "external-data-schemas-incremental-fields-create",
        "external-data-schemas-plan",
        "external-data-schemas-apply-plan",
    },
    "sync": {
        "external-data-sources-repair-cdc-create",
        "external-data-sources-jobs",
        "external-data-sources-jobs-wait",
        "external-data-sources-refresh-schemas",
        "external-data-sources-reload",
        "external-data-schemas-cancel",
        "external-data-schemas-reload",
        "external-data-schemas-resync",
    },
    "webhooks": {
        "external-data-sources-create-webhook-create",
        "external-data-sources-delete-webhook-create",
        "external-data-sources-webhook-info-retrieve",
        "external-data-sources-update-webhook-inputs-create",
    },
    "revenue": {"external-data-sources-revenue-analytics-config-partial-update"},
    "setup": {
        "external-data-sources-wizard",
        "external-data-sources-db-schema",
        "data-warehouse-source-setup",
        "external-data-sources-preview-resource",
        "external-data-sources-check-cdc-prerequisites-create",
        "data-warehouse-source-connect-link",
        "data-warehouse-stored-credentials-list",
        "external-data-sources-rehearse",
    },
    "diagnose": {
        "external-data-sync-logs",
        "data-warehouse-data-health-issues-retrieve",
        "external-data-sources-audit",
    },
    "query": {"execute-sql", "read-data-warehouse-schema"},
}


# Tools that read more than once (all GETs): the first request is the documented one.
SEVERAL_READS = {"external-data-sources-audit", "external-data-schemas-plan"}
# Tools answered on this machine, which send nothing to PostHog.
LOCAL = {"external-data-sources-rehearse"}
# Tools whose documented read is followed by the changes they carry (a plan's PATCHes).
READ_THEN_WRITE = {"external-data-schemas-apply-plan"}


def arguments(tool: str) -> dict[str, Any]:
    """Valid arguments for ``tool``: a copy of its case's, free to change."""
    return dict(CASES[tool].arguments)


async def with_plan(client: Client, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with PLAN_ID replaced by a plan id from the plan tool's own case, made on the
    server ``client`` talks to (a plan id is signed with that server's key)."""
    if args.get("plan_id") != PLAN_ID:
        return args
    planned = await client.call_tool(
        "external-data-schemas-plan", CASES["external-data-schemas-plan"].arguments
    )
    assert isinstance(planned.structured_content, dict), planned.content
    plan_id = planned.structured_content["plan_id"]
    assert isinstance(plan_id, str), planned.structured_content
    return {**args, "plan_id": plan_id}
