"""PostHog's `SourceConfig`: a source type's setup form, as the wizard endpoint renders it.

Each connector module builds its own with these helpers, in one place that both the wizard and
the job-input handling read (a connector's non-secret inputs are derived from its fields, as
PostHog derives them). Keys and their order follow PostHog's pydantic models (`model_dump()`
also emits the keys whose value is None), plus the five keys `build_source_configs` adds.
"""

from __future__ import annotations

from typing import Any

# What `build_source_configs` adds to each entry for a source without API versions.
_UNVERSIONED = "v1"

Field = dict[str, Any]


def input_field(
    name: str,
    label: str,
    type_: str,
    *,
    required: bool,
    secret: bool,
    placeholder: str,
    caption: str | None = None,
) -> Field:
    """`SourceFieldInputConfig`."""
    return {
        "caption": caption,
        "label": label,
        "name": name,
        "placeholder": placeholder,
        "required": required,
        "secret": secret,
        "type": type_,
    }


def select_field(
    name: str,
    label: str,
    *,
    required: bool,
    default: str,
    options: list[tuple[str, str]],
    converter: str | None = None,
) -> Field:
    """`SourceFieldSelectConfig`; `options` are (label, value) pairs without sub-fields."""
    return {
        "caption": None,
        "converter": converter,
        "defaultValue": default,
        "label": label,
        "multiple": None,
        "name": name,
        "options": [{"fields": None, "label": lab, "value": value} for lab, value in options],
        "required": required,
        "type": "select",
    }


def login_fields(*, port: str, database: str, user: str, schema: str) -> list[Field]:
    """The port, database, user, password and schema fields of PostHog's SQL sources, in their
    order, with a source's placeholders (`schema` is optional)."""
    return [
        input_field("port", "Port", "number", required=True, secret=False, placeholder=port),
        input_field(
            "database", "Database", "text", required=True, secret=False, placeholder=database
        ),
        input_field("user", "User", "text", required=True, secret=False, placeholder=user),
        input_field("password", "Password", "password", required=True, secret=True, placeholder=""),
        input_field("schema", "Schema", "text", required=False, secret=False, placeholder=schema),
    ]


def ssh_tunnel_field() -> Field:
    """`SourceFieldSSHTunnelConfig`, as the SQL sources declare it."""
    return {"label": "Use SSH tunnel?", "name": "ssh_tunnel", "type": "ssh-tunnel"}


def nonsensitive_inputs(fields: list[Field]) -> tuple[str, ...]:
    """The job inputs PostHog keeps in answers: the input and select fields not marked secret
    (the SSH tunnel's keys are handled on their own)."""
    return tuple(
        f["name"] for f in fields if f["type"] != "ssh-tunnel" and not f.get("secret", False)
    )


def missing_required(fields: list[Field], job_inputs: dict[str, Any]) -> list[str]:
    """PostHog's `validate_config` messages for the form's required fields the inputs lack."""
    return [
        f"Required field '{f['name']}' is missing"
        for f in fields
        if f.get("required") and f["name"] not in job_inputs
    ]


def source_config(
    name: str,
    *,
    category: str,
    caption: str | None,
    icon_path: str,
    docs_url: str,
    fields: list[Field],
    keywords: list[str] | None = None,
    featured: bool = False,
    supports_column_selection: bool = False,
    unreleased: bool | None = None,
    disabled_reason: str | None = None,
) -> dict[str, Any]:
    """One wizard entry: `SourceConfig.model_dump()` plus what `build_source_configs` adds."""
    return {
        "caption": caption,
        "category": category,
        "disabledReason": disabled_reason,
        "docsUrl": docs_url,
        "existingSource": None,
        "featureFlag": None,
        "featured": featured,
        "fields": fields,
        "iconClassName": None,
        "iconPath": icon_path,
        "keywords": keywords,
        "label": None,
        "name": name,
        "permissionsCaption": None,
        "releaseStatus": None,
        "suggestedTables": [],
        "supportsColumnSelection": supports_column_selection,
        "unreleasedSource": unreleased,
        "webhookFields": None,
        "webhookManualOnly": None,
        "webhookSetupCaption": None,
        "versions": [_UNVERSIONED],
        "defaultVersion": _UNVERSIONED,
        "apiDocsUrl": None,
        "deprecatedVersions": [],
    }


# Source types PostHog imports that the sandbox cannot connect: (type, category, docs slug).
_UNAVAILABLE = (
    ("Stripe", "Payments & billing", "stripe"),
    ("Chargebee", "Payments & billing", "chargebee"),
    ("Hubspot", "CRM", "hubspot"),
    ("Salesforce", "CRM", "salesforce"),
    ("Zendesk", "Customer support", "zendesk"),
    ("Shopify", "E-commerce", "shopify"),
    ("Snowflake", "Databases", "snowflake"),
    ("BigQuery", "Databases", "bigquery"),
    ("Redshift", "Databases", "redshift"),
)


def unavailable_configs(supported: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Entries for the source types the sandbox lists but cannot connect: no fields, and a
    `disabledReason` saying what it can connect instead."""
    reason = (
        "Not available in the local sandbox, which connects only "
        f"{' and '.join(supported)} sources."
    )
    return {
        name: source_config(
            name,
            category=category,
            caption=None,
            icon_path=f"/static/services/{slug}.png",
            docs_url=f"https://posthog.com/docs/cdp/sources/{slug}",
            fields=[],
            unreleased=True,
            disabled_reason=reason,
        )
        for name, category, slug in _UNAVAILABLE
    }
