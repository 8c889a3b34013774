"""Whether a Postgres database is ready for change data capture (`check_cdc_prerequisites`).

PostHog's checks (`validate_cdc_prerequisites`), with its messages verbatim and in its order,
plus one the sandbox adds: in PostHog-managed mode PostHog creates the publication itself when
the source is created, which needs CREATE on the database and ownership of each table; that
fails later, at creation, on Cloud, so the sandbox says so up front.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import psycopg

Mode = Literal["posthog", "self_managed"]
MODES: tuple[Mode, ...] = ("posthog", "self_managed")

_ROLE_QUERY = """
    SELECT r.rolsuper OR r.rolreplication OR EXISTS (
        SELECT 1 FROM pg_auth_members m JOIN pg_roles parent ON parent.oid = m.roleid
        WHERE m.member = r.oid AND parent.rolname IN ('rds_replication', 'rds_superuser')
    )
    FROM pg_roles r WHERE r.rolname = current_user
"""


def prerequisite_errors(
    conn: psycopg.Connection[Any],
    *,
    mode: Mode,
    tables: list[str],
    schema: str,
    publication: str | None,
) -> list[str]:
    """What stops CDC on this database, as user-facing messages; empty when it is ready."""
    errors = [
        *_version(conn),
        *_wal_level(conn),
        *_primary_keys(conn, schema, tables),
        *_select(conn, schema, tables),
        *_replication_role(conn),
        *_slot_capacity(conn),
    ]
    if mode == "self_managed" and publication:
        errors += _publication_exists(conn, publication)
    if mode == "posthog":
        errors += _publication_rights(conn, schema, tables)
    return errors


def _one(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query.encode(), args or None).fetchone()
    return None if row is None else row[0]


def _version(conn: psycopg.Connection[Any]) -> list[str]:
    version = _one(conn, "SHOW server_version_num")
    if version is None:
        return ["Could not determine PostgreSQL version."]
    if int(version) < 130000:
        return [
            "PostgreSQL 13 or later is required for CDC. Your server is running version "
            f"{int(version) // 10000}."
        ]
    return []


def _wal_level(conn: psycopg.Connection[Any]) -> list[str]:
    level = _one(conn, "SHOW wal_level")
    if level is None:
        return ["Could not determine wal_level."]
    if level != "logical":
        return [
            f"wal_level must be set to 'logical' (currently '{level}'). This requires a "
            "PostgreSQL server restart after changing the configuration."
        ]
    return []


def _primary_keys(conn: psycopg.Connection[Any], schema: str, tables: list[str]) -> list[str]:
    # pg_catalog, not information_schema: the latter hides keys from a SELECT-only role.
    query = """
        SELECT COUNT(*) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.indisprimary AND n.nspname = %s AND c.relname = %s
    """
    return [
        f"Table '{schema}.{table}' has no primary key. CDC requires a primary key on each table."
        for table in tables
        if not _one(conn, query, schema, table)
    ]


def _select(conn: psycopg.Connection[Any], schema: str, tables: list[str]) -> list[str]:
    import psycopg
    from psycopg import sql

    errors = []
    for table in tables:
        statement = sql.SQL("SELECT 1 FROM {}.{} LIMIT 0").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            errors.append(f"No SELECT permission on table '{schema}.{table}'.")
        except psycopg.errors.UndefinedTable:
            errors.append(f"Table '{schema}.{table}' does not exist.")
    return errors


def _replication_role(conn: psycopg.Connection[Any]) -> list[str]:
    allowed = _one(conn, _ROLE_QUERY)
    if allowed is None:
        return ["Could not determine user roles."]
    if not allowed:
        return [
            "The database user cannot create logical replication slots. Grant one of: "
            "REPLICATION attribute (ALTER USER <username> WITH REPLICATION), superuser, or "
            "membership in rds_replication / rds_superuser on RDS."
        ]
    return []


def _slot_capacity(conn: psycopg.Connection[Any]) -> list[str]:
    most = _one(conn, "SHOW max_replication_slots")
    if most is None:
        return ["Could not determine max_replication_slots."]
    used = _one(conn, "SELECT COUNT(*) FROM pg_replication_slots")
    if used is None:
        return ["Could not count existing replication slots."]
    if int(used) >= int(most):
        return [
            f"No replication slot capacity available ({used}/{most} slots in use). Increase "
            "max_replication_slots in your PostgreSQL configuration."
        ]
    return []


def _publication_exists(conn: psycopg.Connection[Any], name: str) -> list[str]:
    if _one(conn, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s)", name):
        return []
    return [
        f"Publication '{name}' does not exist. Create it with: CREATE PUBLICATION {name} FOR "
        "TABLE ...;"
    ]


def _publication_rights(conn: psycopg.Connection[Any], schema: str, tables: list[str]) -> list[str]:
    """The sandbox's own check: can this role create the publication PostHog would create."""
    if _one(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        return []
    errors = []
    if not _one(conn, "SELECT has_database_privilege(current_database(), 'CREATE')"):
        errors.append(
            "The database user cannot create the publication PostHog manages: it needs CREATE "
            "on the database (GRANT CREATE ON DATABASE <database> TO <username>), or use "
            "self-managed mode with a publication you create."
        )
    owned = """
        SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s
    """
    errors += [
        f"The database user does not own table '{schema}.{table}', so it cannot add it to the "
        "publication PostHog manages. Use the table owner, or self-managed mode with a "
        "publication you create."
        for table in tables
        if _one(conn, owned, schema, table) is False
    ]
    return errors
