"""The `Postgres` source: credential check, table discovery and streaming a table out with COPY."""

from __future__ import annotations

import re
import selectors
from typing import TYPE_CHECKING, Any

from ..cloud_rules import REQUIRE_TLS, TLS_REQUIRED
from . import config as form
from .base import (
    Column,
    ConnectionFailed,
    CsvOut,
    Export,
    SourceError,
    Table,
    TableStats,
    Unreachable,
    build_tables,
    check_cancelled,
    quote_ident,
    text_input,
)

if TYPE_CHECKING:
    import psycopg

# PostHog's Postgres setup form (its `get_source_config`), verbatim.
SOURCE_CONFIG = form.source_config(
    "Postgres",
    category="Databases",
    keywords=["postgresql", "sql"],
    caption="Enter your Postgres credentials to automatically pull your Postgres data into the "
    "PostHog Data warehouse",
    icon_path="/static/services/postgres.png",
    docs_url="https://posthog.com/docs/cdp/sources/postgres",
    fields=[
        form.input_field(
            "connection_string",
            "Connection string (optional)",
            "text",
            required=False,
            secret=True,
            placeholder="postgresql://user:password@localhost:5432/database",
        ),
        form.input_field(
            "host",
            "Host",
            "text",
            required=True,
            secret=False,
            placeholder="db.example.com",
            caption="Must be reachable from the public internet. Add PostHog's egress IP "
            "addresses to your firewall allowlist (see the docs above) and use a public host — "
            "`localhost` and private IPs (10.x, 172.16–31.x, 192.168.x) can't be reached. For a "  # noqa: RUF001
            "database that can't be exposed publicly, enable the SSH tunnel below.",
        ),
        *form.login_fields(port="5432", database="postgres", user="postgres", schema="public"),
        form.ssh_tunnel_field(),
    ],
    featured=True,
    supports_column_selection=True,
)
# With the CDC settings PostHog keeps in answers too (none of them is a secret).
CDC_INPUTS = (
    "cdc_enabled",
    "cdc_management_mode",
    "cdc_slot_name",
    "cdc_publication_name",
    "cdc_auto_drop_slot",
    "cdc_lag_warning_threshold_mb",
    "cdc_lag_critical_threshold_mb",
    "cdc_consistent_point",
)
NONSENSITIVE_INPUTS = (*form.nonsensitive_inputs(SOURCE_CONFIG["fields"]), *CDC_INPUTS)

# PostHog's Postgres source turns driver errors into these messages (first match wins).
_CONNECT_ERRORS = {
    "password authentication failed": Unreachable.CREDENTIALS,
    'role "': Unreachable.CREDENTIALS,
    "could not translate host name": Unreachable.HOST,
    "Connection refused": Unreachable.PORT,
    'database "': Unreachable.DATABASE,
    "timeout expired": Unreachable.TIMEOUT,
}
_FALLBACK_ERROR = "Could not connect to Postgres. Please check all connection details are valid."
# Where TLS is not required, a password goes out only as a SCRAM proof: libpq (16 and later)
# refuses a server that asks for it in clear or as md5 (`none`: a server that asks for no
# password gets none).
REQUIRE_AUTH = "scram-sha-256,none"
_LIBPQ_REQUIRE_AUTH = 160000
CLEARTEXT_REFUSED = (
    "The database asked for the password in clear text (or as md5) on a connection without "
    "required TLS; the sandbox sends a password there only as a SCRAM-SHA-256 proof. Give the "
    "user a SCRAM password (password_encryption = scram-sha-256) and a scram-sha-256 line in "
    "pg_hba.conf, or connect with TLS required (--sandbox-cloud-rules)."
)

# An export reports progress (and looks for a cancel) at least every this many rows, and
# waits for the database at most this long before it looks again.
_REPORT_ROWS = 2000
# The first PostgreSQL with `pg_snapshot_xmin` and `xid8`, which xmin syncs need.
_XMIN_MIN_SERVER_VERSION = 130000
_WAIT_SECONDS = 0.5

_INCREMENTAL_TYPES = {
    "smallint": "integer",
    "integer": "integer",
    "bigint": "integer",
    "date": "date",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamp",
}
_DUCK_TYPES = {
    "smallint": "SMALLINT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "real": "FLOAT",
    "double precision": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
    "time without time zone": "TIME",
    "uuid": "UUID",
    "text": "VARCHAR",
    "character varying": "VARCHAR",
    # Unconstrained (or wider than DECIMAL's 38 digits): exact as text, never rounded to a double.
    "numeric": "VARCHAR",
}


def column(name: str, data_type: str, nullable: bool) -> Column:
    """A column from its `format_type` name, with its DuckDB type and COPY expression."""
    base = re.sub(r"\(\d+(,\d+)?\)", "", data_type).strip()
    match = re.fullmatch(r"numeric\((\d+)(?:,(\d+))?\)", data_type)
    if match and int(match.group(1)) <= 38:
        duck = f"DECIMAL({match.group(1)},{match.group(2) or 0})"
    else:
        duck = _DUCK_TYPES.get(base, "VARCHAR")
    ident = quote_ident(name)
    if duck == "VARCHAR" and base not in ("text", "character varying"):
        select = f"{ident}::text"  # arrays, json, bytea, intervals...: their text form
    else:
        select = ident
    return Column(name, data_type, nullable, duck, _INCREMENTAL_TYPES.get(base), select)


def _host(job_inputs: dict[str, Any]) -> str:
    """The host field, refused with PostHog's texts when it holds a URL or a port."""
    host = text_input(job_inputs, "host")
    if "://" in host:
        raise SourceError(
            "Enter just the hostname in the host field (for example, db.example.com), not a "
            "full URL or connection string. Remove any scheme (like http:// or postgres://) and "
            "any username, password, port, or path."
        )
    if host.count(":") == 1:
        raise SourceError(
            "Enter just the hostname in the host field (for example, db.example.com). Put the "
            "port number in the port field instead."
        )
    return host


def conninfo(job_inputs: dict[str, Any]) -> dict[str, Any]:
    """libpq connection parameters of a source's job inputs (TLS and password rules applied)."""
    try:
        port = int(job_inputs.get("port") or 5432)
    except (TypeError, ValueError) as exc:
        raise SourceError("Port must be a number") from exc
    password = text_input(job_inputs, "password")
    tls = bool(job_inputs.get(REQUIRE_TLS))
    info: dict[str, Any] = {
        "host": _host(job_inputs),
        "port": port,
        "dbname": text_input(job_inputs, "database"),
        "user": text_input(job_inputs, "user"),
        "password": password,
        "connect_timeout": 5,
        "application_name": "posthog-warehouse-sandbox",
        # PostHog Cloud's rule for new sources (sandbox --cloud-rules); else TLS when offered.
        "sslmode": "require" if tls else "prefer",
    }
    if password and not tls:
        info["require_auth"] = REQUIRE_AUTH
    return info


def connect(job_inputs: dict[str, Any]) -> psycopg.Connection[Any]:
    """Open a connection; raise ConnectionFailed with PostHog's message on failure."""
    import psycopg

    info = conninfo(job_inputs)
    if "require_auth" in info and psycopg.pq.version() < _LIBPQ_REQUIRE_AUTH:
        # Without require_auth, libpq answers a cleartext request: send no password at all.
        raise ConnectionFailed(
            None, f"{CLEARTEXT_REFUSED} (This libpq, {psycopg.pq.version()}, cannot promise it.)"
        )
    try:
        conn = psycopg.connect(**info, autocommit=True)
    except psycopg.OperationalError as exc:
        text = str(exc)
        if job_inputs.get(REQUIRE_TLS) and "SSL" in text:
            raise ConnectionFailed(None, TLS_REQUIRED) from exc
        if "authentication method requirement" in text:
            raise ConnectionFailed(None, CLEARTEXT_REFUSED) from exc
        reason = next((r for needle, r in _CONNECT_ERRORS.items() if needle in text), None)
        raise ConnectionFailed(reason, _FALLBACK_ERROR) from exc
    # Text forms DuckDB parses back exactly: UTC offsets, ISO dates, round-trip floats.
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET DateStyle = 'ISO, YMD'")
    conn.execute("SET IntervalStyle = 'iso_8601'")
    conn.execute("SET extra_float_digits = 3")
    return conn


def cancel(conn: psycopg.Connection[Any], job_inputs: dict[str, Any]) -> None:
    """Cancel the connection's running query (called from another thread)."""
    conn.cancel_safe(timeout=5)


def schema_name(job_inputs: dict[str, Any]) -> str:
    """The upstream schema the source reads (PostHog's `schema` key; `public` if blank)."""
    return text_input(job_inputs, "schema") or "public"


def discover_with(
    conn: psycopg.Connection[Any], namespace: str, only: str | None = None
) -> list[Table]:
    """List the tables (and views) of `namespace` with their columns and primary keys."""
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (namespace,)).fetchone()
    if exists is None:
        raise SourceError(f"Schema {namespace} does not exist")
    rows = conn.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
          AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
          AND (%s::text IS NULL OR c.relname = %s::text)
        ORDER BY c.relname, a.attnum
        """,
        (namespace, only, only),
    ).fetchall()
    keys = conn.execute(
        """
        SELECT c.relname, a.attname
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
        WHERE i.indisprimary AND n.nspname = %s
          AND (%s::text IS NULL OR c.relname = %s::text)
        ORDER BY c.relname, array_position(i.indkey::int2[], a.attnum)
        """,
        (namespace, only, only),
    ).fetchall()
    tables = build_tables(rows, keys, column)
    # xmin needs tuples of the relation's own and a 64-bit snapshot (PostgreSQL 13): tables and
    # materialized views (PostHog's `_xmin_capable_tables_from_conn`).
    heaps: set[str] = set()
    if conn.info.server_version >= _XMIN_MIN_SERVER_VERSION:
        found = conn.execute(
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind IN ('r', 'm')
              AND (%s::text IS NULL OR c.relname = %s::text)
            """,
            (namespace, only, only),
        )
        heaps = {str(name) for (name,) in found.fetchall()}
    for table in tables:
        table.supports_cdc = bool(table.primary_key)
        table.supports_xmin = table.name in heaps
    return tables


def table_stats(conn: psycopg.Connection[Any], namespace: str) -> dict[str, TableStats]:
    """`reltuples` (-1 until a table is first analysed or vacuumed; views have none), SELECT
    privilege, and row-level security that applies to this role: enabled on the table, the role
    neither superuser nor BYPASSRLS, and not the owner unless the table forces it."""
    rows = conn.execute(
        """
        SELECT c.relname,
               CASE WHEN c.relkind IN ('r', 'm', 'p') AND c.reltuples >= 0
                    THEN c.reltuples::bigint END,
               has_table_privilege(c.oid, 'SELECT'),
               c.relrowsecurity AND NOT r.rolsuper AND NOT r.rolbypassrls
                 AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_roles r ON r.rolname = current_user
        WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition
        """,
        (namespace,),
    ).fetchall()
    return {name: TableStats(count, readable, rls) for name, count, readable, rls in rows}


def copy_statement(export: Export) -> str:
    """The COPY statement streaming the selected columns as CSV, past the cursor if given."""
    from psycopg import sql

    select = ", ".join(c.select_expr for c in export.columns)
    query = f"SELECT {select} FROM {quote_ident(export.namespace)}.{quote_ident(export.table)}"
    conditions = []
    if export.past_cursor is not None:
        column, value = export.past_cursor
        op = ">=" if export.inclusive else ">"
        conditions.append(f"{quote_ident(column)} {op} {sql.Literal(value).as_string()}")
    for row_filter in export.row_filters:
        if row_filter.multi:
            values = ", ".join(sql.Literal(v).as_string() for v in row_filter.value)
            literal = f"({values})"
        else:
            literal = sql.Literal(row_filter.value).as_string()
        conditions.append(f"{quote_ident(row_filter.column)} {row_filter.operator} {literal}")
    if export.where:
        conditions.append(export.where)
    if conditions:
        query += " WHERE " + " AND ".join(conditions)
    if export.limit is not None:
        query += f" LIMIT {int(export.limit)}"
    return f"COPY ({query}) TO STDOUT WITH (FORMAT csv)"


def export(conn: psycopg.Connection[Any], export: Export) -> int:
    """Stream the rows into the CSV with COPY; return the rows written.

    psycopg's `Copy` sends the statement and, if anything here raises, cancels it and reads
    what is left; the rows themselves are taken from libpq one C call each and written as they
    came. Iterating the `Copy` costs about twice that per row, and a large table's export runs
    at this loop's speed: the database formats the CSV, and nothing here looks inside a row.
    """
    with CsvOut(export) as out, conn.cursor().copy(copy_statement(export)):
        rows = _copy_out(conn.pgconn, out, export, conn.info.encoding)
    check_cancelled(export.cancelled)
    return rows


def _copy_out(pgconn: psycopg.pq.abc.PGconn, out: CsvOut, export: Export, encoding: str) -> int:
    """Write each row COPY sends; at the end, take COPY's final result (raising its error)."""
    import psycopg

    take, write = pgconn.get_copy_data, out.file.write
    rows = 0
    reported = 0
    with selectors.DefaultSelector() as waiting:
        waiting.register(pgconn.socket, selectors.EVENT_READ)
        while True:
            size, data = take(1)  # 1: never blocks; 0 when no whole row is buffered yet
            if size > 0:
                write(data)
                rows += 1
                continue
            if size < 0:
                break
            # No whole row is buffered: a moment between rows, at least once a buffer's worth.
            if rows - reported >= _REPORT_ROWS:
                reported = rows
                check_cancelled(export.cancelled)
                export.progress(rows)
            if out.row_boundary():
                write = out.file.write
            # A timeout, so a cancel is seen even while the database sends nothing.
            if not waiting.select(_WAIT_SECONDS):
                check_cancelled(export.cancelled)
            pgconn.consume_input()
        if size == -2:
            raise psycopg.OperationalError(pgconn.get_error_message(encoding))
        # COPY's end: its result (an error if the query failed or was cancelled), then none.
        # They follow the last row at once; until they are read the connection is not free.
        results = []
        while True:
            while pgconn.is_busy():
                waiting.select(_WAIT_SECONDS)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            results.append(result)
    failed = next((r for r in results if r.status != psycopg.pq.ExecStatus.COMMAND_OK), None)
    if failed is not None:
        raise psycopg.errors.error_from_result(failed, encoding=encoding)
    return rows
