"""MCP prompts for the workflows agents most often get wrong, each naming its tools in order."""

from __future__ import annotations

from dataclasses import dataclass

import mcp_types as types


@dataclass(frozen=True)
class Prompt:
    """A workflow prompt: arguments it takes and the text it renders."""

    name: str
    title: str
    description: str
    arguments: tuple[types.PromptArgument, ...]
    template: str

    def definition(self) -> types.Prompt:
        """The MCP ``prompts/list`` entry."""
        return types.Prompt(
            name=self.name,
            title=self.title,
            description=self.description,
            arguments=list(self.arguments),
        )

    def missing(self, arguments: dict[str, str]) -> list[str]:
        """The required arguments that are absent or empty."""
        return [a.name for a in self.arguments if a.required and not arguments.get(a.name)]

    def render(self, arguments: dict[str, str]) -> str:
        """The prompt text with arguments filled in (missing optional ones say so)."""
        values = {a.name: arguments.get(a.name) or f"(no {a.name} given)" for a in self.arguments}
        return self.template.format(**values)


def _arg(name: str, description: str, *, required: bool = False) -> types.PromptArgument:
    return types.PromptArgument(name=name, description=description, required=required)


PROMPTS: tuple[Prompt, ...] = (
    Prompt(
        "connect-postgres",
        "Connect a Postgres database",
        "Connect a Postgres database and choose a sync type for each table.",
        (
            _arg("host", "Database host", required=True),
            _arg("database", "Database name", required=True),
            _arg("prefix", "Table-name prefix in PostHog, e.g. app_"),
        ),
        """Connect the Postgres database {database} on {host} to PostHog's data warehouse \
(prefix {prefix}) and choose how each table syncs.
1. Ask the user for the port, user, password and schema; never guess credentials, and never \
repeat the password back.
2. external-data-sources-create with source_type "Postgres", the prefix, and payload {{host, \
port, database, user, password, schema, schemas: []}} with every table should_sync false. \
Note the returned id.
3. external-data-sources-retrieve with that id to see the discovered tables (schemas).
4. For each table the user wants: external-data-schemas-incremental-fields-create to see its \
cursor columns. Choose: incremental (a reliably increasing updated_at or id, plus a primary \
key) for large tables that change; append for insert-only logs/events; full_refresh for small \
tables or when no cursor exists.
5. external-data-sources-bulk-update-schemas-partial-update to set should_sync, sync_type, \
incremental_field, incremental_field_type, primary_key_columns and sync_frequency in one call.
6. external-data-sources-reload, then external-data-sources-jobs until every job is Completed \
or Failed; report rows_synced and any latest_error.""",
    ),
    Prompt(
        "diagnose-failing-sync",
        "Diagnose a failing sync",
        "Find why a source's table fails to sync and propose a fix.",
        (_arg("source", "Source id, prefix or type", required=True), _arg("table", "Table name")),
        """Find out why the sync of {table} in source {source} fails, and propose a fix.
1. external-data-sources-list (search by type or prefix) to find the source id; \
external-data-sources-retrieve for its status, latest_error and each schema's status.
2. external-data-sources-jobs with schemas=[the table] for the recent runs: status, \
rows_synced, latest_error, and when failures started.
3. external-data-schemas-retrieve for the table's sync settings.
4. If the error mentions the cursor or merge key: \
external-data-schemas-incremental-fields-create to check the incremental field still exists \
and has the type configured.
5. Explain the cause in one paragraph. Propose the fix (credentials: \
external-data-sources-partial-update; settings: external-data-schemas-partial-update) and ask \
before changing anything. After a fix, external-data-schemas-reload and watch \
external-data-sources-jobs.""",
    ),
    Prompt(
        "switch-to-incremental",
        "Switch a table to incremental sync",
        "Move a table from full refresh to incremental sync without losing or duplicating rows.",
        (_arg("schema_id", "Schema id of the table", required=True),),
        """Switch table schema {schema_id} to incremental sync safely.
1. external-data-schemas-retrieve: note sync_type, status, primary_key_columns. If a sync is \
Running, wait (external-data-sources-jobs) or ask before external-data-schemas-cancel.
2. external-data-schemas-incremental-fields-create: if incremental_available is false, stop \
and explain (suggest append for insert-only tables). Pick a cursor that only increases when a \
row changes (updated_at over created_at; an integer id only for insert-only tables).
3. Confirm the primary key with the user: rows merge on it, and it cannot be changed after \
data has synced without deleting the data first.
4. external-data-schemas-partial-update with sync_type "incremental", incremental_field, \
incremental_field_type and primary_key_columns.
5. external-data-schemas-reload, then external-data-sources-jobs until it is Completed. Only \
if the data is wrong, suggest external-data-schemas-resync (it deletes and re-imports).""",
    ),
    Prompt(
        "remove-source",
        "Remove a source safely",
        "Stop or remove a source without deleting synced data unexpectedly.",
        (_arg("source", "Source id, prefix or type", required=True),),
        """Help the user stop or remove source {source} without losing data they still need.
1. external-data-sources-list / external-data-sources-retrieve: list its tables, which sync, \
and their warehouse table names.
2. Ask what the user wants: (a) stop syncing but keep the data; (b) drop some tables' data; \
(c) delete the source and all its data.
3. (a) external-data-sources-bulk-update-schemas-partial-update with should_sync false for \
every table: data stays queryable, nothing is deleted.
   (b) external-data-schemas-delete-data per table (keeps the schema and settings), or \
external-data-schemas-destroy to remove the table from the source too.
   (c) Say plainly that external-data-sources-destroy deletes every synced table of the source \
and cannot be undone, get an explicit yes, then call it.
4. Confirm the result with external-data-sources-list.""",
    ),
)

PROMPTS_BY_NAME = {p.name: p for p in PROMPTS}
