"""The `MySQL` source (MySQL and MariaDB): credential check, discovery, streaming export."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
    text_input,
)

if TYPE_CHECKING:
    from pymysql.connections import Connection
    from pymysql.cursors import SSCursor

# PostHog's MySQL setup form (its `get_source_config`), verbatim.
SOURCE_CONFIG = form.source_config(
    "MySQL",
    category="Databases",
    featured=True,
    keywords=["sql", "mariadb"],
    caption="Enter your MySQL/MariaDB credentials to automatically pull your MySQL data into the "
    "PostHog Data warehouse.",
    icon_path="/static/services/mysql.png",
    docs_url="https://posthog.com/docs/cdp/sources/mysql",
    fields=[
        form.input_field(
            "host", "Host", "text", required=True, secret=False, placeholder="localhost"
        ),
        *form.login_fields(
            port="3306",
            database="mysql",
            user="mysql",
            schema="Leave blank to include all databases",
        ),
        form.select_field(
            "using_ssl",
            "Use SSL?",
            required=True,
            default="true",
            converter="str_to_bool",
            options=[("Yes", "true"), ("No", "false")],
        ),
        form.ssh_tunnel_field(),
    ],
    supports_column_selection=True,
)
NONSENSITIVE_INPUTS = form.nonsensitive_inputs(SOURCE_CONFIG["fields"])

# PostHog's MySQL source shows these messages for driver error codes.
_CONNECT_ERRORS = {
    1045: Unreachable.CREDENTIALS,
    1044: Unreachable.CREDENTIALS,
    1049: Unreachable.DATABASE,
    2003: Unreachable.PORT,
    2005: Unreachable.HOST,
}
_FALLBACK_ERROR = "Could not connect to MySQL. Please check all connection details are valid."
CLEARTEXT_REFUSED = (
    "The database asked for the password in clear text (the mysql_clear_password or dialog "
    "authentication plugin) on a connection without TLS, and the sandbox never sends it so. "
    "Enable TLS on the server, or give the user an authentication plugin that does not send "
    "the password (caching_sha2_password, mysql_native_password)."
)

_INTEGERS = {"tinyint": "SMALLINT", "smallint": "SMALLINT", "mediumint": "INTEGER"}
_BINARY = ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit")
_INCREMENTAL_TYPES = {
    "tinyint": "integer",
    "smallint": "integer",
    "mediumint": "integer",
    "int": "integer",
    "bigint": "integer",
    "date": "date",
    "datetime": "timestamp",
    "timestamp": "timestamp",
}


def quote(name: str) -> str:
    """Quote a MySQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def column(name: str, data_type: str, nullable: bool) -> Column:
    """A column from its COLUMN_TYPE (`int(11) unsigned`, `decimal(10,2)`, `datetime(6)`...)."""
    lowered = data_type.lower()
    base = re.split(r"[ (]", lowered, maxsplit=1)[0]
    unsigned = "unsigned" in lowered
    decimal = re.fullmatch(r"decimal\((\d+),(\d+)\).*", lowered)
    if base in _INTEGERS:
        duck = _INTEGERS[base]
    elif base == "int":
        duck = "BIGINT" if unsigned else "INTEGER"
    elif base == "bigint":
        duck = "UBIGINT" if unsigned else "BIGINT"
    elif decimal and int(decimal.group(1)) <= 38:
        duck = f"DECIMAL({decimal.group(1)},{decimal.group(2)})"
    elif base in ("decimal", "double", "real"):
        duck = "DOUBLE"
    elif base == "float":
        duck = "FLOAT"
    elif base == "date":
        duck = "DATE"
    elif base in ("datetime", "timestamp"):
        duck = "TIMESTAMP"
    elif base == "year":
        duck = "INTEGER"
    else:
        duck = "VARCHAR"
    select = f"HEX({quote(name)})" if base in _BINARY else quote(name)
    return Column(name, data_type, nullable, duck, _INCREMENTAL_TYPES.get(base), select)


def schema_name(job_inputs: dict[str, Any]) -> str:
    """The database the source reads (PostHog's `schema` key, else `database`)."""
    return text_input(job_inputs, "schema") or text_input(job_inputs, "database")


def connect(job_inputs: dict[str, Any]) -> Connection[Any]:
    """Open a connection that returns every value as MySQL's text; raise ConnectionFailed with
    PostHog's message on failure."""
    import pymysql
    from pymysql.converters import conversions

    try:
        port = int(job_inputs.get("port") or 3306)
    except (TypeError, ValueError) as exc:
        raise SourceError("Port must be a number") from exc
    # Encoders only: values come back as MySQL's own text, which DuckDB parses exactly.
    encoders: dict[int | type[Any], Callable[..., Any]] = {
        k: v for k, v in conversions.items() if not isinstance(k, int)
    }
    using_ssl = str(job_inputs.get("using_ssl", True)).lower() not in ("false", "0", "")
    host, user = text_input(job_inputs, "host"), text_input(job_inputs, "user")
    password, database = text_input(job_inputs, "password"), text_input(job_inputs, "database")
    try:
        return pymysql.connect(
            host=host,
            port=port,
            user=user,
            password=password,
            database=database or None,
            connect_timeout=5,
            charset="utf8mb4",
            conv=encoders,
            autocommit=True,
            init_command="SET time_zone = '+00:00'",
            # A TLS context makes TLS required (PyMySQL); without one, PyMySQL still upgrades
            # when the server offers it.
            ssl=_tls_context() if using_ssl else None,
            # The plugins that send the password as it is: only inside TLS.
            auth_plugin_map={"mysql_clear_password": _ClearPassword, "dialog": _Dialog},
        )
    except CleartextRefused as exc:
        raise ConnectionFailed(None, CLEARTEXT_REFUSED) from exc
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        raise ConnectionFailed(_CONNECT_ERRORS.get(code), _FALLBACK_ERROR) from exc


class CleartextRefused(Exception):
    """The server asked for the password in clear text on a connection without TLS."""


class _ClearTextGuard:
    """A PyMySQL authentication handler for a plugin that sends the password as it is: made
    only on a secure connection (TLS, or a local socket), refused before anything is sent
    otherwise. PyMySQL builds it when the server names or switches to the plugin."""

    def __init__(self, conn: Any) -> None:
        if not getattr(conn, "_secure", False):
            raise CleartextRefused
        self.conn = conn


class _ClearPassword(_ClearTextGuard):
    """`mysql_clear_password` inside TLS: the password, as PyMySQL's own handling sends it."""

    def authenticate(self, pkt: Any) -> Any:
        """Send the password and return the server's answer."""
        self.conn.write_packet(self.conn.password + b"\0")
        answer = self.conn._read_packet()
        answer.check_error()
        return answer


class _Dialog(_ClearTextGuard):
    """PAM's `dialog` inside TLS: no `authenticate`, so PyMySQL runs its own exchange."""


def _tls_context() -> ssl.SSLContext:
    """TLS without certificate checks, as PostHog's MySQL source connects with `using_ssl`."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def cancel(conn: Connection[Any], job_inputs: dict[str, Any]) -> None:
    """Kill the connection's running query from a second connection (MySQL has no cancel key)."""
    thread_id = conn.thread_id()  # type: ignore[no-untyped-call]  # unannotated in types-PyMySQL
    with connect(job_inputs) as killer, killer.cursor() as cur:
        cur.execute(f"KILL QUERY {int(thread_id)}")


def discover_with(conn: Connection[Any], namespace: str, only: str | None = None) -> list[Table]:
    """List the tables of `namespace` with their columns and primary keys."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (namespace,)
        )
        if cur.fetchone() is None:
            raise SourceError(f"Schema {namespace} does not exist")
        cur.execute(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
            "AND (%s IS NULL OR TABLE_NAME = %s) ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (namespace, only, only),
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = %s AND CONSTRAINT_NAME = 'PRIMARY' "
            "AND (%s IS NULL OR TABLE_NAME = %s) ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (namespace, only, only),
        )
        keys = cur.fetchall()
    columns = [
        (table, name, data_type, nullable == "YES") for table, name, data_type, nullable in rows
    ]
    return build_tables(columns, keys, column)


def table_stats(conn: Connection[Any], namespace: str) -> dict[str, TableStats]:
    """`TABLE_ROWS` (InnoDB's estimate; NULL for views). `information_schema` lists only the
    tables the user has some privilege on, and MySQL has no row-level security."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
            (namespace,),
        )
        rows = cur.fetchall()
    return {name: TableStats(rows=None if count is None else int(count)) for name, count in rows}


def _csv_field(value: str | bytes | None) -> str:
    # By hand: csv.QUOTE_NOTNULL does exactly this, but only from Python 3.12 on.
    if value is None:
        return ""  # unquoted empty: NULL (quoted empty strings stay strings)
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return '"' + text.replace('"', '""') + '"'


def export(conn: Connection[Any], export: Export) -> int:
    """Stream the rows into the CSV file; return the rows written."""
    import pymysql.cursors

    select = ", ".join(c.select_expr for c in export.columns)
    query = f"SELECT {select} FROM {quote(export.namespace)}.{quote(export.table)}"
    conditions: list[str] = []
    params: list[Any] = []
    if export.past_cursor is not None:
        column, value = export.past_cursor
        conditions.append(f"{quote(column)} {'>=' if export.inclusive else '>'} %s")
        params.append(value)
    for row_filter in export.row_filters:
        values = row_filter.value if row_filter.multi else [row_filter.value]
        placeholders = ", ".join(["%s"] * len(values))
        rhs = f"({placeholders})" if row_filter.multi else placeholders
        conditions.append(f"{quote(row_filter.column)} {row_filter.operator} {rhs}")
        params.extend(values)
    if conditions:
        query += " WHERE " + " AND ".join(conditions)
    if export.limit is not None:
        query += f" LIMIT {int(export.limit)}"
    rows = 0
    # Unbuffered: rows stream from the server instead of being held in memory.
    cur = conn.cursor(pymysql.cursors.SSCursor)
    try:
        cur.execute(query, tuple(params))
        with CsvOut(export) as out:
            while batch := cur.fetchmany(2000):
                chunk = "".join(",".join(map(_csv_field, row)) + "\n" for row in batch)
                out.file.write(chunk.encode())
                rows += len(batch)
                check_cancelled(export.cancelled)
                export.progress(rows)
                out.row_boundary()
    except BaseException:
        _abandon(cur)
        raise
    cur.close()
    check_cancelled(export.cancelled)
    return rows


def _abandon(cur: SSCursor) -> None:
    """Drop an unfinished streaming result without reading the rest of it.

    PyMySQL drains an open unbuffered result on close (and again when it is collected); after a
    cancel that would read the whole table, or fail on a closed socket. The connection is closed
    right after, so its unread bytes do not matter.
    """
    result = getattr(cur, "_result", None)
    if result is not None:
        result.unbuffered_active = False
    # Private PyMySQL state (so not in types-PyMySQL); see the docstring for why.
    cur.connection._result = None  # type: ignore[attr-defined]
