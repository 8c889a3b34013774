"""Input and output models, named after PostHog's own nouns.

Inputs (``<Noun><Verb>Params``) forbid unknown fields and describe every field: the
descriptions are what the model reads. Outputs accept unknown fields and loose types so a
PostHog release that adds a field or an enum value never fails a call.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol, runtime_checkable
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .json_schema import NULL_MEANS_CLEAR, NULLABLE
from .redact import is_secret_key
from .secrets import PREFIX, is_reference, looks_like_reference

# ---------------------------------------------------------------- enums (stable upstream values)


class SyncType(StrEnum):
    """How a table is synced."""

    full_refresh = "full_refresh"
    incremental = "incremental"
    append = "append"
    webhook = "webhook"
    cdc = "cdc"
    xmin = "xmin"


class IncrementalFieldType(StrEnum):
    """Type of the incremental cursor column."""

    integer = "integer"
    numeric = "numeric"
    datetime = "datetime"
    date = "date"
    timestamp = "timestamp"
    objectid = "objectid"
    xid = "xid"


class SyncFrequency(StrEnum):
    """How often a table syncs (current PostHog refuses ``1min`` and ``never``)."""

    min5 = "5min"
    min15 = "15min"
    min30 = "30min"
    hour1 = "1hour"
    hour6 = "6hour"
    hour12 = "12hour"
    hour24 = "24hour"
    day7 = "7day"
    day30 = "30day"


class CdcTableMode(StrEnum):
    """What a CDC sync writes."""

    consolidated = "consolidated"
    cdc_only = "cdc_only"
    both = "both"


class AccessMethod(StrEnum):
    """Import into the warehouse, or query the source live."""

    warehouse = "warehouse"
    direct = "direct"


# ---------------------------------------------------------------- PostHog's input checks

# What PostHog's checks accept, as patterns the tool schemas advertise too: a prefix starts with
# a letter or underscore and is not only underscores; a time of day is HH:MM:SS.
PREFIX_PATTERN = r"^(_*[A-Za-z]|_+[0-9])[A-Za-z0-9_]*$"
TIME_OF_DAY_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d:[0-5]\d$"
_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEADING_COMMENTS = re.compile(r"^(\s*(--[^\n]*(\n|$)|/\*.*?\*/))*", re.DOTALL)
_TIME_OF_DAY = re.compile(TIME_OF_DAY_PATTERN)
_CURSOR_SYNC_TYPES = ("incremental", "append")


def refuse(message: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``message`` (PostHog's reason)."""
    return PydanticCustomError("posthog_refuses", message)


def check_prefix(value: Any) -> Any:
    """PostHog's ``validate_source_prefix``."""
    if not isinstance(value, str) or not value:
        return value
    if not value.strip("_"):
        raise refuse("Prefix cannot consist of only underscores")
    if not _PREFIX.match(value):
        raise refuse(
            "Prefix must contain only letters, numbers, and underscores, and start with a "
            "letter or underscore"
        )
    return value


def check_sync_frequency(value: Any) -> Any:
    """PostHog's ``sync_frequency`` choices, with its texts for what it refuses."""
    if value == "never":
        raise refuse(
            '"never" is not a sync frequency. To stop syncing this table, set should_sync to false.'
        )
    if isinstance(value, str) and value not in SyncFrequency.__members__.values():
        raise refuse(
            f'"{value}" is not a valid sync frequency. The fastest sync frequency is 5 minutes.'
        )
    return value


def check_time_of_day(value: Any) -> Any:
    """PostHog parses ``sync_time_of_day`` with ``%H:%M:%S``: ``HH:MM`` is refused."""
    if isinstance(value, str) and not _TIME_OF_DAY.match(value):
        raise refuse("Invalid sync time of day: give HH:MM:SS in UTC, e.g. 02:00:00")
    return value


def check_create_schemas(payload: dict[str, Any]) -> None:
    """PostHog's checks of a create payload's ``schemas`` (tables it lists)."""
    schemas = payload.get("schemas")
    if schemas is None:
        return
    if not isinstance(schemas, list):
        raise refuse("The 'schemas' field must be a list of the tables to sync.")
    for schema in schemas:
        if not isinstance(schema, dict) or not schema.get("should_sync"):
            continue
        if schema.get("sync_type") not in _CURSOR_SYNC_TYPES:
            continue
        if not schema.get("incremental_field"):
            raise refuse("Incremental schemas given do not have an incremental field set")
        if not schema.get("incremental_field_type"):
            raise refuse("Incremental schemas given do not have an incremental field type set")


# ---------------------------------------------------------------- connection fields

# Caps on connection fields (payload, job_inputs, webhook inputs): far above any real value, far
# below what would burden PostHog or the sandbox (a 10 MB `host` once went upstream).
MAX_FIELD_CHARS = 4_096
MAX_LONG_FIELD_CHARS = 100_000  # a Custom source's manifest, a private key, a certificate
MAX_FIELD_KEYS = 200
MAX_KEY_CHARS = 200
MAX_LIST_ITEMS = 10_000  # `schemas`: one per table
MAX_FIELD_DEPTH = 8
_LONG_FIELD = re.compile(r"manifest|private_key|certificate|(^|_)ca$|key_file")
_KINDS = {bool: "boolean", int: "number", float: "number", list: "list", dict: "object"}


def check_connection_fields(value: Any, path: str = "", depth: int = 0) -> None:
    """Caps on connection fields (each text capped, named by its path), and credentials as
    text or an exact secret reference, never another kind of value to be stringified."""
    where = path or "the fields"
    if depth > MAX_FIELD_DEPTH:
        raise refuse(f"{where} is nested more than {MAX_FIELD_DEPTH} levels deep.")
    if looks_like_reference(value) and not is_reference(value):
        raise refuse(
            f'{where} is not a secret reference, which is exactly {{"env": "{PREFIX}<NAME>"}} '
            "(one key, a variable name as text)."
        )
    if isinstance(value, str):
        cap = MAX_LONG_FIELD_CHARS if _LONG_FIELD.search(path.lower()) else MAX_FIELD_CHARS
        if len(value) > cap:
            raise refuse(
                f"{where} has {len(value):,} characters; a connection field takes at most {cap:,}."
            )
    elif isinstance(value, dict) and not is_reference(value):
        if len(value) > MAX_FIELD_KEYS:
            raise refuse(f"{where} has {len(value):,} keys; at most {MAX_FIELD_KEYS:,}.")
        for key, item in value.items():
            if len(key) > MAX_KEY_CHARS:
                raise refuse(f"{where} has a key of {len(key):,} characters; at most 200.")
            inner = f"{path}.{key}" if path else key
            if is_secret_key(key) and not (item is None or isinstance(item, str | dict)):
                kind = _KINDS.get(type(item), type(item).__name__)
                raise refuse(
                    f"{inner} is a credential, given as text or as "
                    f'{{"env": "{PREFIX}<NAME>"}}, never as a {kind}.'
                )
            check_connection_fields(item, inner, depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise refuse(f"{where} has {len(value):,} items; at most {MAX_LIST_ITEMS:,}.")
        for i, item in enumerate(value):
            check_connection_fields(item, f"{path}[{i}]", depth + 1)


def _connection_fields(value: dict[str, Any]) -> dict[str, Any]:
    check_connection_fields(value)
    return value


# A tool's connection fields (payload, job_inputs): checked, never echoed in the error.
ConnectionFields = Annotated[dict[str, Any], AfterValidator(_connection_fields)]
WebhookInputs = Annotated[dict[str, str], AfterValidator(_connection_fields)]


# ---------------------------------------------------------------- inputs


class Params(BaseModel):
    """Base of every tool's arguments."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    @model_validator(mode="before")
    @classmethod
    def _null_only_where_meaningful(cls, data: Any) -> Any:
        # The schema offers null only where it clears a setting; elsewhere omit the argument.
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                extra = field.json_schema_extra if field is not None else None
                if (
                    value is None
                    and field is not None
                    and not (isinstance(extra, dict) and extra.get(NULLABLE))
                ):
                    raise ValueError(f"{name} cannot be null; leave it out instead")
        return data


class IdParams(Params):
    """A single object addressed by id."""

    id: UUID = Field(description="Id (UUID) from a list call.")


class SyncParams(IdParams):
    """Start a sync, optionally waiting for it."""

    wait_seconds: int = Field(
        0,
        ge=0,
        le=600,
        exclude=True,  # handled by the server, never sent to PostHog
        description="Seconds to wait for the sync (capped); 0 = none.",
    )


CONFIRMATION = Field(
    None,
    max_length=1000,
    exclude=True,  # checked by the server, never sent
    description="From the first call's answer, once the user agreed.",
)


@runtime_checkable
class CarriesConfirmation(Protocol):
    """Arguments that may carry a confirmation token (the rows that ask first)."""

    confirmation_token: str | None


class ConfirmedIdParams(IdParams):
    """A destructive call on one object, confirmed by the person first."""

    confirmation_token: str | None = CONFIRMATION


class ConfirmedSyncParams(SyncParams):
    """A destructive sync (resync), confirmed by the person first."""

    confirmation_token: str | None = CONFIRMATION


class ListParams(Params):
    """Page through a list."""

    limit: int | None = Field(None, ge=1, le=1000, description="Page size (default 100).")
    offset: int | None = Field(None, ge=0, description="Items to skip.")


class ExternalDataSourceListParams(ListParams):
    """Arguments of external-data-sources-list."""

    search: str | None = Field(
        None, max_length=200, description="Match on source_type or prefix, e.g. 'Stripe'."
    )


class ExternalDataSourceCreateParams(Params):
    """Arguments of external-data-sources-create."""

    source_type: str = Field(
        min_length=1, max_length=100, description="Source type as PostHog spells it: 'Postgres'."
    )
    payload: ConnectionFields = Field(
        description=(
            "Connection fields (wizard) plus schemas: [{name, should_sync, sync_type, "
            "incremental_field, incremental_field_type, primary_key_columns}]. Postgres: public "
            "host, TLS; blank schema = all schemas, tables named schema.table."
        )
    )
    prefix: str | None = Field(
        None,
        max_length=100,
        pattern=PREFIX_PATTERN,
        description="Table-name prefix; needed if the type exists already.",
    )
    description: str | None = Field(None, max_length=400, description="Free text.")
    access_method: AccessMethod | None = Field(
        None, description="warehouse (import, default) or direct (live query)."
    )

    _prefix = field_validator("prefix", mode="before")(check_prefix)

    @field_validator("payload")
    @classmethod
    def _schemas(cls, payload: dict[str, Any]) -> dict[str, Any]:
        check_create_schemas(payload)
        return payload


class ExternalDataSourcePartialUpdateParams(IdParams):
    """Arguments of external-data-sources-partial-update."""

    description: str | None = Field(None, max_length=400, description="Free text.")
    prefix: str | None = Field(
        None, max_length=100, description="New name; only direct-query sources can rename."
    )
    job_inputs: ConnectionFields | None = Field(
        None, description="Connection settings to merge in; omitted secrets are kept."
    )
    auto_sync_new_schemas: bool | None = Field(
        None, description="Enable tables found later (refresh-schemas) with defaults."
    )
    auto_sync_schema_patterns: list[str] | None = Field(
        None,
        max_length=100,
        description="Globs limiting which new tables auto-sync, e.g. raw_*; null = all.",
        json_schema_extra=NULL_MEANS_CLEAR,
    )


class RowFilter(Params):
    """One predicate ANDed onto the table's source query."""

    column: str
    operator: Literal[">", ">=", "<", "<=", "=", "!=", "IN", "NOT IN"]
    value: Any = Field(
        description="Of the column's type; a list for IN.",
        json_schema_extra={
            "anyOf": [
                {"type": "string"},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "number"}]}},
            ]
        },
    )

    @field_validator("value")
    @classmethod
    def _scalar_or_list(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        scalars = (str, int, float) if isinstance(value, list) else (str, int, float, bool)
        if not all(isinstance(v, scalars) for v in items) or any(
            isinstance(v, bool) for v in items if isinstance(value, list)
        ):
            raise refuse("value must be a string, number or boolean, or a list of strings/numbers")
        return value


class SchemaSettings(Params):
    """Sync settings of one table."""

    should_sync: bool | None = Field(None, description="Sync this table on schedule.")
    sync_type: SyncType | None = Field(None, description="How to sync.")
    incremental_field: str | None = Field(
        None,
        description="Cursor column, e.g. updated_at; null clears.",
        json_schema_extra=NULL_MEANS_CLEAR,
    )
    incremental_field_type: IncrementalFieldType | None = Field(
        None, description="Type of incremental_field."
    )
    sync_frequency: SyncFrequency | None = Field(
        None, description="To stop, set should_sync false."
    )
    sync_time_of_day: str | None = Field(
        None,
        pattern=TIME_OF_DAY_PATTERN,
        description="UTC HH:MM:SS; null clears.",
        json_schema_extra=NULL_MEANS_CLEAR,
    )
    primary_key_columns: list[str] | None = Field(
        None,
        description="Merge key; fixed once synced.",
        json_schema_extra=NULL_MEANS_CLEAR,
    )
    cdc_table_mode: CdcTableMode | None = Field(None, description="CDC output tables.")
    enabled_columns: list[str] | None = Field(
        None, description="Columns to sync; null = all.", json_schema_extra=NULL_MEANS_CLEAR
    )
    row_filters: list[RowFilter] | None = Field(
        None,
        max_length=20,
        description="Only matching rows; null = all.",
        json_schema_extra=NULL_MEANS_CLEAR,
    )

    _frequency = field_validator("sync_frequency", mode="before")(check_sync_frequency)
    _time_of_day = field_validator("sync_time_of_day", mode="before")(check_time_of_day)


class SchemaUpdate(SchemaSettings):
    """One schema's changes in a bulk update (PostHog's bulk endpoint takes no lookback)."""

    id: UUID = Field(description="Schema id.")
    apply_sync_defaults: bool | None = Field(
        None, description="Fill PostHog's default sync method if none is set."
    )


class ExternalDataSchemaPartialUpdateParams(SchemaSettings):
    """Arguments of external-data-schemas-partial-update."""

    id: UUID = Field(description="Schema id from a list call.")
    incremental_field_lookback_seconds: int | None = Field(
        None,
        ge=0,
        le=5_184_000,
        description="Incremental only: re-read this many seconds before the cursor (late rows).",
        json_schema_extra=NULL_MEANS_CLEAR,
    )
    confirmation_token: str | None = CONFIRMATION


_SCHEMA_ITEMS = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "properties": {"id": {"type": "string", "format": "uuid"}},
        "required": ["id"],
    },
}


class ExternalDataSourceBulkUpdateSchemasParams(IdParams):
    """Arguments of external-data-sources-bulk-update-schemas-partial-update."""

    # Each item takes external-data-schemas-partial-update's fields, checked here in full;
    # the schema names only the id, so the tool list states those fields once.
    schemas: Annotated[list[SchemaUpdate], WithJsonSchema(_SCHEMA_ITEMS)] = Field(
        min_length=1,
        description="Per table: id and fields as in external-data-schemas-partial-update "
        "(not the lookback; apply_sync_defaults fills PostHog's default method); ids unique, "
        "all of this source.",
    )
    confirmation_token: str | None = CONFIRMATION


def _schema_settings(value: Any) -> Any:
    """A change of a plan: exactly the fields external-data-schemas-partial-update takes."""
    if not isinstance(value, dict):
        return value
    try:
        SchemaSettings.model_validate(value)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"])
            unknown = error["type"] == "extra_forbidden"
            problems.append(f"{where}: {'not a schema setting' if unknown else error['msg']}")
        raise refuse("; ".join(problems)) from None
    return value


class SchemaChange(Params):
    """One table's change in a plan."""

    id: UUID = Field(description="Schema id.")
    set: dict[str, Any] = Field(description="Fields of external-data-schemas-partial-update.")

    _settings = field_validator("set")(_schema_settings)


class ExternalDataSchemasPlanParams(Params):
    """Arguments of external-data-schemas-plan."""

    id: UUID = Field(description="Source id.")
    changes: list[SchemaChange] | None = Field(
        None, max_length=500, description="Per table, in the order to apply."
    )
    match: str | None = Field(
        None, max_length=200, description="With set: table names matching (* ?); default all."
    )
    set: dict[str, Any] | None = Field(
        None, description="A change for each matching table, after changes."
    )

    _settings = field_validator("set")(_schema_settings)


class ExternalDataSchemasApplyPlanParams(Params):
    """Arguments of external-data-schemas-apply-plan."""

    id: UUID = Field(description="Source id the plan is for.")
    plan_id: str = Field(min_length=1, max_length=60_000, description="From the plan.")
    confirmation_token: str | None = CONFIRMATION


class ExternalDataSourceCreateWebhookParams(IdParams):
    """Arguments of external-data-sources-create-webhook-create."""

    inputs: WebhookInputs | None = Field(
        None, description="Extra webhook fields the source asks for (pending_inputs)."
    )


class ExternalDataSourceJobsParams(IdParams):
    """Arguments of external-data-sources-jobs."""

    after: str | None = Field(None, max_length=40, description="ISO time; jobs created after it.")
    before: str | None = Field(None, max_length=40, description="ISO time; jobs created before it.")
    schemas: list[str] | None = Field(None, description="Only these table names.")


class ExternalDataSourceJobsWaitParams(IdParams):
    """Arguments of external-data-sources-jobs-wait."""

    schemas: list[str] | None = Field(None, description="Tables to follow; default: those running.")
    wait_seconds: int = Field(
        45, ge=0, le=600, exclude=True, description="At most (capped); 0 = as they are now."
    )


class ExternalDataSourceRevenueAnalyticsConfigParams(IdParams):
    """Arguments of external-data-sources-revenue-analytics-config-partial-update."""

    enabled: bool | None = Field(None, description="Use this source in revenue analytics.")
    include_invoiceless_charges: bool | None = Field(
        None, description="Count charges without an invoice."
    )


class ExternalDataSchemaListParams(ListParams):
    """Arguments of external-data-schemas-list."""

    search: str | None = Field(None, max_length=200, description="Match on table name.")


class NoParams(Params):
    """A tool that takes no arguments."""


class ExternalDataSourcesWizardParams(Params):
    """Arguments of external-data-sources-wizard."""

    source_type: str = Field(
        min_length=1,
        max_length=200,
        description="The source type whose connection fields you need, exactly as PostHog spells "
        "it (e.g. Postgres, MySQL, Stripe); several comma-separated.",
    )


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]  # least severe first


class ExternalDataSyncLogsParams(Params):
    """Arguments of external-data-sync-logs."""

    schema_id: UUID = Field(description="Schema (table) id.")
    job_id: str | None = Field(
        None,
        max_length=100,
        description="Only this sync: a job's workflow_run_id (sources-jobs).",
    )
    level: LogLevel = Field("INFO", description="Minimum level.")
    search: str | None = Field(None, max_length=200, description="Text to find.")
    limit: int = Field(100, ge=1, le=500, description="Newest first.")


SOURCE_TYPE = Field(
    min_length=1, max_length=100, description="Source type as PostHog spells it: 'Postgres'."
)
CONNECTION = "Connection fields as the wizard lists them (Postgres: host, port, database, user, "


class ExternalDataSourcesDbSchemaParams(Params):
    """Arguments of external-data-sources-db-schema."""

    source_type: str = SOURCE_TYPE
    payload: ConnectionFields = Field(
        description=CONNECTION + "password, schema; Stripe: auth_method {selection: 'api_key', "
        "stripe_secret_key})."
    )


class ExternalDataSourcesRehearseParams(Params):
    """Arguments of external-data-sources-rehearse."""

    source_type: str = SOURCE_TYPE
    payload: ConnectionFields = Field(
        description="As for create: connection fields (secret references welcome) and the "
        "schemas to try."
    )
    prefix: str | None = Field(
        None, max_length=100, pattern=PREFIX_PATTERN, description="Table-name prefix."
    )
    rows: int = Field(10_000, ge=1, le=10_000_000, description="Rows synced here per table.")
    seconds: int = Field(30, ge=1, le=3600, description="For everything; at most the wait cap.")


class DataWarehouseSourceSetupParams(Params):
    """Arguments of data-warehouse-source-setup."""

    source_type: str = SOURCE_TYPE
    payload: ConnectionFields | None = Field(
        None, description=CONNECTION + "password, schema); no 'schemas' needed."
    )
    prefix: str | None = Field(
        None,
        max_length=100,
        pattern=PREFIX_PATTERN,
        description="Table-name prefix; needed if the type exists already.",
    )
    description: str | None = Field(None, max_length=400, description="Free text.")

    _prefix = field_validator("prefix", mode="before")(check_prefix)


class ExternalDataSourceUpdateWebhookInputsParams(IdParams):
    """Arguments of external-data-sources-update-webhook-inputs-create."""

    inputs: WebhookInputs = Field(
        description="Webhook fields of the source type to set, e.g. {signing_secret: ...}."
    )


class ExternalDataSourcePreviewResourceParams(Params):
    """Arguments of external-data-sources-preview-resource."""

    source_type: str = SOURCE_TYPE
    payload: ConnectionFields = Field(
        description="manifest_json plus the credential its auth type needs (auth_token...)."
    )
    resource_name: str = Field(
        min_length=1, max_length=200, description="The manifest resource to sample."
    )
    limit: int | None = Field(None, ge=1, le=50, description="Sample rows (default 10).")


class ExternalDataSourcesCheckCdcPrerequisitesParams(ExternalDataSourcesDbSchemaParams):
    """Arguments of external-data-sources-check-cdc-prerequisites-create.

    PostHog's endpoint also reads ``cdc_slot_name``, but no check uses it.
    """

    payload: ConnectionFields = Field(description="Connection fields, as for db-schema.")
    tables: list[str] | None = Field(
        None, max_length=500, description="Tables to check for a primary key and SELECT."
    )
    cdc_management_mode: Literal["posthog", "self_managed"] | None = Field(
        None, description="Default posthog."
    )
    cdc_publication_name: str | None = Field(
        None, max_length=63, description="self_managed: the publication, checked to exist."
    )


class ExecuteSqlParams(Params):
    """Arguments of execute-sql."""

    query: str = Field(
        min_length=1,
        max_length=20_000,
        pattern=r"^[ \t\r\n(]*([Ss][Ee][Ll][Ee][Cc][Tt]|[Ww][Ii][Tt][Hh])[ \t\r\n]",
        description="One HogQL (ClickHouse SQL) SELECT; tables named as read-data-warehouse-schema "
        "lists them.",
    )
    limit: int = Field(100, ge=1, le=500, description="Rows at most (up to 500).")

    @field_validator("query", mode="before")
    @classmethod
    def _one_select(cls, query: Any) -> Any:
        if not isinstance(query, str):
            return query
        words = _LEADING_COMMENTS.sub("", query).lstrip("( \t\r\n").split(None, 1)
        first = words[0].upper() if words else ""
        if first not in ("SELECT", "WITH"):
            raise refuse(
                f"execute-sql runs one read-only SELECT (or WITH ... SELECT); this query starts "
                f"with {first or 'nothing'}."
            )
        return query


class ReadDataWarehouseSchemaParams(Params):
    """Arguments of read-data-warehouse-schema."""

    search: str | None = Field(None, max_length=200, description="Only tables whose name has this.")
    source: str | None = Field(
        None, max_length=200, description="Only this source: id, prefix or type (e.g. Stripe)."
    )
    details: bool = Field(False, description="Add row count, source, table status, last sync.")


class DataWarehouseSourceConnectLinkParams(Params):
    """Arguments of data-warehouse-source-connect-link."""

    source_type: str = SOURCE_TYPE


class DataWarehouseStoredCredentialsListParams(Params):
    """Arguments of data-warehouse-stored-credentials-list."""

    source_type: str | None = Field(None, max_length=100, description="Only this type.")


# ---------------------------------------------------------------- outputs

# Any JSON value, spelled with a type keyword (a bare {} is not portable across clients).
ANY: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array"},
        {"type": "object"},
    ]
}


class Response(BaseModel):
    """Base of every result: unknown upstream fields pass through."""

    model_config = ConfigDict(extra="allow")


class Table(Response):
    """The warehouse table a schema writes to."""

    id: str | int | None = None
    name: str | None = None


class ExternalDataSchema(Response):
    """A table of a source and its sync settings."""

    id: str
    name: str | None = None
    should_sync: bool | None = None
    sync_type: str | None = None
    status: str | None = None
    table: Table | None = None
    last_synced_at: str | None = None
    latest_error: str | None = None


class ExternalDataSource(Response):
    """A connected source and its schemas."""

    id: str
    source_type: str | None = None
    prefix: str | None = None
    status: str | None = None
    latest_error: str | None = None
    last_run_at: str | None = None
    schemas: list[ExternalDataSchema] | None = None


class ExternalDataJob(Response):
    """One sync run."""

    id: str
    status: str | None = None
    rows_synced: int | None = None
    latest_error: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    # Whether the run's rows count towards the bill (a repair PostHog caused does not).
    billable: bool | None = None
    cdc_write_mode: str | None = None
    destination_ids: list[str] | None = None


class Page(Response):
    """A page of a list; follow ``next`` or raise ``offset``."""

    count: int | None = None
    next: str | None = None
    previous: str | None = None


class PaginatedExternalDataSourceList(Page):
    """A page of sources."""

    results: list[ExternalDataSource]


class PaginatedExternalDataSchemaList(Page):
    """A page of schemas."""

    results: list[ExternalDataSchema]


class ExternalDataJobList(Response):
    """A source's jobs, newest first (at most 50)."""

    results: list[ExternalDataJob]


class ExternalDataSchemaList(Response):
    """Schemas as updated."""

    results: list[ExternalDataSchema]


class ExternalDataSourceCreated(Response):
    """Id of the new source."""

    id: str


class RefreshSchemasResult(Response):
    """Tables found by schema discovery."""

    added: int | None = None
    deleted: int | None = None
    total_tables_seen: int | None = None


class Confirmable(Response):
    """A destructive call's answer, or, before the person confirmed, what it would do."""

    confirmation_required: bool | None = None
    confirmation_token: str | None = None
    confirmed: bool | None = None
    preview: dict[str, Any] | None = None


class WebhookResult(Confirmable):
    """Outcome of a webhook change; ``success`` false carries ``error``."""

    success: bool | None = None
    error: str | None = None


class RepairCdcResult(Confirmable):
    """Outcome of a CDC repair: how many CDC tables will now re-sync in full."""

    success: bool | None = None
    schemas_reset: int | None = None


class IncrementalFieldsResult(Response):
    """Columns usable as incremental cursors, and which sync types the table allows."""

    incremental_fields: list[dict[str, Any]] | None = None
    incremental_available: bool | None = None
    append_available: bool | None = None


class SourceTypeConfig(Response):
    """What connecting one source type takes: its fields, and whether it can be connected."""

    name: str | None = None
    label: str | None = None
    caption: str | None = None
    docsUrl: str | None = None
    unreleasedSource: bool | None = None
    disabledReason: str | None = None
    fields: list[dict[str, Any]] | None = None


class SourceTypeConfigs(RootModel[dict[str, SourceTypeConfig]]):
    """Connection requirements by source type."""


class WebhookInfo(Response):
    """A source's webhook: whether its type supports one, whether it exists, and its state."""

    supports_webhooks: bool | None = None
    exists: bool | None = None
    webhook_url: str | None = None
    schema_mapping: dict[str, Any] | None = None
    external_status: dict[str, Any] | None = None
    missing_events: list[str] | None = None


class DirectConnection(Response):
    """A source usable as a live-query connection."""

    id: str
    prefix: str | None = None
    engine: str | None = None
    source_type: str | None = None
    access_method: str | None = None
    supports_hogql: bool | None = None


class DirectConnectionList(Response):
    """Sources that can be queried live."""

    results: list[DirectConnection]


class SyncLogEntry(Response):
    """One line of a sync's log; ``instance_id`` is the job's workflow_run_id."""

    timestamp: str | None = None
    level: str | None = None
    message: str | None = None
    instance_id: str | None = None


class PaginatedSyncLogList(Page):
    """Sync log entries, newest first."""

    results: list[SyncLogEntry]


class DiscoveredTable(Response):
    """A source table before import: columns, keys, cursor candidates, size and warnings."""

    table: str
    incremental_fields: list[dict[str, Any]] | None = None
    incremental_available: bool | None = None
    append_available: bool | None = None
    rows: int | None = None
    available_columns: list[dict[str, Any]] | None = None
    detected_primary_keys: list[str] | None = None
    permission_error: str | None = None
    rls_warning: str | None = None


class DiscoveredTableList(Response):
    """The tables a source would import."""

    results: list[DiscoveredTable]


class SourceSetupResult(Response):
    """The new source's id; ``webhook`` where its type registers one."""

    id: str
    webhook: dict[str, Any] | None = None


class ResourcePreview(Response):
    """Sample rows of a Custom REST resource; ``error`` when the live read failed."""

    rows: list[dict[str, Any]] | None = None
    row_count: int | None = None
    columns: list[dict[str, Any]] | None = None
    error: str | None = None


class CdcPrerequisites(Response):
    """Whether a Postgres database is ready for CDC; ``errors`` says what to change."""

    valid: bool
    errors: list[str]


class DataHealthIssue(Response):
    """One failed or degraded item of the data pipeline."""

    id: str | int | None = None
    name: str | None = None
    type: str | None = None
    status: str | None = None
    error: str | None = None
    failed_at: str | None = None
    url: str | None = None


class DataHealthIssueList(Response):
    """PostHog's data-health answer, newest failure first."""

    results: list[DataHealthIssue]
    count: int | None = None


class QueryResult(Response):
    """A HogQL query's answer: columns, [name, type] pairs and rows (arrays)."""

    columns: list[str]
    types: list[list[str]] | None = None
    results: list[list[Any]] = Field(json_schema_extra={"items": {"type": "array", "items": ANY}})
    truncated: bool | None = None


class WarehouseSchema(Response):
    """The warehouse's tables by the name to use in SQL."""

    tables: dict[str, dict[str, Any]]


class ConnectLink(Response):
    """A page where the person types the credentials; the model never sees them."""

    source_type: str | None = None
    auth_method: str | None = None
    connect_url: str
    instructions: str | None = None


class StoredCredentialList(Response):
    """Stored credentials awaiting setup: ids and times, never values."""

    results: list[dict[str, Any]]


class AuditReport(Response):
    """What the audit found: each finding's kind, where, cause, what it affects, next step."""

    findings: list[dict[str, Any]]
    checked: dict[str, Any]


class RehearsalReport(Response):
    """A rehearsed import: per table its name, rows, checks, problems and estimates; the
    schemas to pass to create; what the rehearsal cannot prove."""

    tables: list[dict[str, Any]]
    schemas: list[dict[str, Any]]


class SchemaPlan(Response):
    """What a batch of schema changes would do, per table and in total, with its plan id."""

    plan_id: str | None = None
    expires_at: str | None = None
    tables: list[dict[str, Any]]
    totals: dict[str, Any]
    refused: list[dict[str, Any]]


class PlanApplied(Confirmable):
    """What applying a plan changed, and what it did not reach."""

    applied: list[dict[str, Any]] | None = None
    failed: dict[str, Any] | None = None
    not_applied: list[dict[str, Any]] | None = None


class Ack(Confirmable):
    """An accepted action that PostHog answers without a body."""

    ok: bool = True
    status_code: int | None = None
    detail: str | None = None
