"""Postgres change data capture: whether a database is ready for it (`check_cdc_prerequisites`),
the replication slot and publication a CDC source reads through, and the change stream.

The checks are PostHog's (`validate_cdc_prerequisites`), with its messages verbatim and in its
order, plus one the sandbox adds: in PostHog-managed mode PostHog creates the publication itself
when the source is created, which needs CREATE on the database and ownership of each table; that
fails later, at creation, on Cloud, so the sandbox says so up front.

Slots and publications follow PostHog's `slot_manager.py` and `PostgresCDCAdapter`
(`products/warehouse_sources/backend/temporal/data_imports/sources/postgres/cdc/`): names
`posthog_<source id hex[:12]>` and `posthog_pub_<...>` (`posthog_pub` self-managed), an empty
publication the CDC tables are added to, `pg_logical_slot_peek_binary_changes` with `pgoutput`
protocol 1 to read, `pg_replication_slot_advance` to confirm. Where the sandbox differs: each
snapshot is read in the snapshot a temporary slot exports (`exported_snapshot`), so the first
change after it is known exactly; PostHog reads its snapshot after the slot's consistent point
and lets the merge absorb the overlap.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .base import SourceError
from .pgoutput import Decoder, Transaction, lsn_to_int, lsn_to_text

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


# PostHog's texts for a slot or publication that is gone (`cdc/errors.py`, SLOT_MISSING and
# PUBLICATION_MISSING).
SLOT_MISSING = (
    "The replication slot no longer exists on the source database, so changes can no longer be "
    "read. Disable and re-enable change data capture to recreate it and re-sync."
)
PUBLICATION_MISSING = (
    "The publication used for change data capture no longer exists on the source database. "
    "Recreate it, or disable and re-enable change data capture, then re-sync."
)
# Rows of the change stream fetched at a time, with libpq's chunked rows mode (libpq 17).
_STREAM_CHUNK, _LIBPQ_CHUNKED_ROWS = 1000, 170000
# PostHog's defaults for the lag thresholds (`DEFAULT_LAG_*_THRESHOLD_MB`).
LAG_WARNING_MB, LAG_CRITICAL_MB = 1024, 10240


class SlotLost(SourceError):
    """The source's replication slot or publication is gone: only a repair brings it back."""


@dataclass(frozen=True)
class CdcSettings:
    """A CDC source's stored settings (PostHog's `PostgresCDCConfig`, from its job inputs)."""

    mode: Mode
    slot: str
    publication: str
    auto_drop_slot: bool = True
    lag_warning_mb: int = LAG_WARNING_MB
    lag_critical_mb: int = LAG_CRITICAL_MB


def settings_of(job_inputs: dict[str, Any]) -> CdcSettings | None:
    """The CDC settings of a source, or None when CDC is not enabled on it."""
    if not job_inputs.get("cdc_enabled") or not job_inputs.get("cdc_slot_name"):
        return None
    mode: Mode = (
        "self_managed" if job_inputs.get("cdc_management_mode") == "self_managed" else "posthog"
    )
    return CdcSettings(
        mode=mode,
        slot=str(job_inputs["cdc_slot_name"]),
        publication=str(job_inputs.get("cdc_publication_name") or ""),
        auto_drop_slot=bool(job_inputs.get("cdc_auto_drop_slot", True)),
        lag_warning_mb=_megabytes(job_inputs.get("cdc_lag_warning_threshold_mb"), LAG_WARNING_MB),
        lag_critical_mb=_megabytes(
            job_inputs.get("cdc_lag_critical_threshold_mb"), LAG_CRITICAL_MB
        ),
    )


def _megabytes(value: Any, default: int) -> int:
    """A stored lag threshold; PostHog's default where it is not a whole number of at least 1
    (a create checks it: `threshold_error`)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return number if number >= 1 and not isinstance(value, bool) else default


def threshold_error(payload: dict[str, Any]) -> str | None:
    """Why a create payload's lag thresholds cannot be kept, or None."""
    for key in ("cdc_lag_warning_threshold_mb", "cdc_lag_critical_threshold_mb"):
        value = payload.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | str) or _megabytes(value, 0) < 1:
            return f"{key} must be a whole number of megabytes, at least 1 (got {value!r})."
    return None


def setup_resources(
    conn: psycopg.Connection[Any], source_id: str, payload: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """Create the slot (and, PostHog-managed, the empty publication) of a new CDC source; the
    job-input fields to store, or PostHog's error text (`PostgresCDCAdapter.setup_resources`).

    What this call created is dropped again if a later step fails.
    """
    import psycopg

    mode: Mode = (
        "self_managed" if payload.get("cdc_management_mode") == "self_managed" else "posthog"
    )
    refused = threshold_error(payload)
    if refused is not None:
        return {}, refused
    short = source_id.replace("-", "")[:12]
    slot = payload.get("cdc_slot_name") or f"posthog_{short}"
    publication = payload.get("cdc_publication_name") or (
        "posthog_pub" if mode == "self_managed" else f"posthog_pub_{short}"
    )
    fields: dict[str, Any] = {
        "cdc_enabled": True,
        "cdc_management_mode": mode,
        "cdc_slot_name": slot,
        "cdc_publication_name": publication,
        "cdc_auto_drop_slot": bool(payload.get("cdc_auto_drop_slot", True)),
        "cdc_lag_warning_threshold_mb": _megabytes(
            payload.get("cdc_lag_warning_threshold_mb"), LAG_WARNING_MB
        ),
        "cdc_lag_critical_threshold_mb": _megabytes(
            payload.get("cdc_lag_critical_threshold_mb"), LAG_CRITICAL_MB
        ),
    }
    if slot_exists(conn, slot):
        return {}, f"A replication slot named '{slot}' already exists on your database."
    created_publication = False
    try:
        if mode == "posthog":
            if publication_exists(conn, publication):
                return {}, f"A publication named '{publication}' already exists on your database."
            conn.execute(f"CREATE PUBLICATION {_ident(publication)}".encode())
            created_publication = True
        elif not publication_exists(conn, publication):
            return {}, (
                f"Publication '{publication}' does not exist. Run the CREATE PUBLICATION "
                "statement we showed you, then retry."
            )
        fields["cdc_consistent_point"] = create_slot(conn, slot)
    except psycopg.Error as exc:
        if created_publication:
            drop_publication(conn, publication)
        return {}, _setup_error(exc)
    return fields, None


def _setup_error(exc: Exception) -> str:
    """PostHog's `_slot_setup_error_message`."""
    import psycopg

    text = str(exc).strip()
    lowered = text.lower()
    if isinstance(exc, psycopg.errors.InsufficientPrivilege) or (
        "permission denied" in lowered or "must be superuser" in lowered
    ):
        return (
            f"Failed to create replication slot: {text} The database user lacks permission to "
            "create logical replication slots. Either grant it replication access, or switch "
            "these tables to Incremental sync instead of CDC. Incremental needs only SELECT "
            "permission."
        )
    return f"Failed to create replication slot: {text}"


def create_slot(conn: psycopg.Connection[Any], slot: str) -> str:
    """Create the source's logical slot (`pgoutput`); its consistent point."""
    row = conn.execute(
        "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
    ).fetchone()
    return str(row[0]) if row else ""


def drop_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    """Drop the slot if it exists."""
    conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )


def drop_publication(conn: psycopg.Connection[Any], publication: str) -> None:
    """Drop the publication if it exists."""
    conn.execute(f"DROP PUBLICATION IF EXISTS {_ident(publication)}".encode())


def cleanup_resources(conn: psycopg.Connection[Any], settings: CdcSettings) -> None:
    """What deleting a CDC source drops (`cleanup_resources`): its slot, and the publication
    when PostHog manages it (a self-managed one is the user's)."""
    drop_slot(conn, settings.slot)
    if settings.mode == "posthog" and settings.publication:
        drop_publication(conn, settings.publication)


def slot_exists(conn: psycopg.Connection[Any], slot: str) -> bool:
    """Whether a replication slot of this name exists."""
    found = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    return found.fetchone() is not None


def publication_exists(conn: psycopg.Connection[Any], publication: str) -> bool:
    """Whether a publication of this name exists."""
    found = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
    return found.fetchone() is not None


@dataclass(frozen=True)
class SlotStatus:
    """What the source database says of a CDC source's slot (PostHog's `get_status`)."""

    slot_exists: bool
    publication_exists: bool
    # WAL the slot holds back: from its confirmed position to the current one.
    lag_bytes: int | None


def status(conn: psycopg.Connection[Any], settings: CdcSettings) -> SlotStatus:
    """The slot's and publication's existence and the slot's lag."""
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (settings.slot,),
    ).fetchone()
    return SlotStatus(
        slot_exists=row is not None,
        publication_exists=bool(settings.publication)
        and publication_exists(conn, settings.publication),
        lag_bytes=None if row is None or row[0] is None else int(row[0]),
    )


Sweep = Literal["drop", "error", "warn", "none"]


def sweep(settings: CdcSettings, lag_bytes: int) -> Sweep:
    """What PostHog's sweeper (`cleanup_orphan_slots_activity`) does about a live source's slot
    holding back `lag_bytes` of WAL: at `cdc_lag_critical_threshold_mb`, drop a PostHog-managed
    slot and its publication when `cdc_auto_drop_slot` allows (`drop`), else mark a self-managed
    source `Error` and leave its slot (`error`); at the warning threshold, log (`warn`). A
    PostHog-managed slot without auto-drop past the critical threshold is only logged."""
    lag_mb = lag_bytes / (1024 * 1024)
    if lag_mb >= settings.lag_critical_mb:
        if settings.mode == "posthog":
            return "drop" if settings.auto_drop_slot else "warn"
        return "error"
    return "warn" if lag_mb >= settings.lag_warning_mb else "none"


def add_table(conn: psycopg.Connection[Any], publication: str, schema: str, table: str) -> None:
    """Add a table to the PostHog-managed publication; nothing if it is already in it."""
    import psycopg

    try:
        target = f"{_ident(schema)}.{_ident(table)}"
        conn.execute(f"ALTER PUBLICATION {_ident(publication)} ADD TABLE {target}".encode())
    except psycopg.errors.DuplicateObject:
        pass
    except psycopg.errors.UndefinedObject as exc:
        raise SlotLost(PUBLICATION_MISSING) from exc


def in_publication(
    conn: psycopg.Connection[Any], publication: str, schema: str, table: str
) -> bool:
    """Whether the publication publishes this table."""
    found = conn.execute(
        "SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s "
        "AND tablename = %s",
        (publication, schema, table),
    )
    return found.fetchone() is not None


def recreate(
    conn: psycopg.Connection[Any], settings: CdcSettings, tables: list[tuple[str, str]]
) -> str:
    """PostHog's `recreate_slot`: drop what is left of the slot, recreate the publication when
    PostHog manages it and it is gone, and create a new slot; its consistent point.

    Raises:
        SourceError: a self-managed publication is gone (the user must recreate it).
    """
    drop_slot(conn, settings.slot)
    if settings.publication and not publication_exists(conn, settings.publication):
        if settings.mode != "posthog":
            raise SourceError(
                f"Publication '{settings.publication}' does not exist on the source database. "
                "Recreate it (see the CDC setup instructions), then resync the source."
            )
        conn.execute(f"CREATE PUBLICATION {_ident(settings.publication)}".encode())
        for schema, table in tables:
            add_table(conn, settings.publication, schema, table)
    return create_slot(conn, settings.slot)


def confirmed_position(conn: psycopg.Connection[Any], slot: str) -> int:
    """The slot's confirmed position: it decodes only transactions committing at or after it.

    Raises:
        SlotLost: the slot is gone, or Postgres invalidated it.
    """
    row = conn.execute(
        "SELECT confirmed_flush_lsn::text, wal_status FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None or row[1] == "lost" or row[0] is None:
        raise SlotLost(SLOT_MISSING)
    return lsn_to_int(str(row[0]))


def current_position(conn: psycopg.Connection[Any]) -> int:
    """The end of the WAL now."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return lsn_to_int(str(row[0])) if row else 0


def changes(
    conn: psycopg.Connection[Any], settings: CdcSettings, upto: int
) -> Iterator[Transaction]:
    """The transactions the slot holds that commit before `upto`, in commit order, without
    consuming them (`pg_logical_slot_peek_binary_changes`, as PostHog's stream reader reads).

    Raises:
        SlotLost: the slot or the publication is gone.
    """
    import psycopg

    decoder = Decoder()
    query = (
        "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, "
        "'proto_version', '1', 'publication_names', %s)"
    )
    # Rows in chunks where libpq can (17+): one at a time costs a Python round a row.
    chunk = _STREAM_CHUNK if psycopg.pq.version() >= _LIBPQ_CHUNKED_ROWS else 1
    try:
        for (data,) in conn.cursor().stream(
            query, (settings.slot, lsn_to_text(upto), _ident(settings.publication)), size=chunk
        ):
            done = decoder.feed(bytes(data))
            if done is not None:
                yield done
    except psycopg.errors.UndefinedObject as exc:
        text = str(exc)
        if "publication" in text:
            raise SlotLost(PUBLICATION_MISSING) from exc
        raise SlotLost(SLOT_MISSING) from exc
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:
        if "replication slot" in str(exc):
            raise SlotLost(SLOT_MISSING) from exc
        raise


def advance(conn: psycopg.Connection[Any], slot: str, position: int) -> None:
    """Confirm the slot up to `position` (never backwards): WAL before it may be recycled.

    Raises:
        SlotLost: the slot is gone.
    """
    import psycopg

    try:
        conn.execute(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn_to_text(position))
        )
    except psycopg.errors.UndefinedObject as exc:
        raise SlotLost(SLOT_MISSING) from exc
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:
        # "cannot advance replication slot to X, minimum is Y": it is already past X.
        if "minimum is" not in str(exc):
            raise


@contextlib.contextmanager
def exported_snapshot(job_inputs: dict[str, Any]) -> Iterator[tuple[int, str]]:
    """A temporary logical slot, created on a replication connection with `SNAPSHOT 'export'`:
    yields its consistent point and the snapshot's name, which another connection imports
    (`SET TRANSACTION SNAPSHOT`) while the block runs.

    A transaction that committed before the consistent point is in the snapshot; one that
    commits at or after it is not, and the source's slot decodes it (the slot is older). The
    temporary slot goes with the connection.

    Raises:
        SourceError: the slot could not be created (Postgres's message).
    """
    import psycopg
    from psycopg import pq

    from .postgres import conninfo

    pgconn = pq.PGconn.connect(
        psycopg.conninfo.make_conninfo("", **conninfo(job_inputs), replication="database").encode()
    )
    try:
        if pgconn.status != pq.ConnStatus.OK:
            raise SourceError(pgconn.get_error_message().strip())
        name = f"posthog_snapshot_{uuid.uuid4().hex[:16]}"
        command = f"CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
        result = pgconn.exec_(command.encode())
        if result.status != pq.ExecStatus.TUPLES_OK:
            message = (result.error_message or b"").decode(errors="replace").strip()
            raise SourceError(f"Could not take a consistent snapshot: {message}")
        point = (result.get_value(0, 1) or b"").decode()
        snapshot = (result.get_value(0, 2) or b"").decode()
        yield lsn_to_int(point), snapshot
    finally:
        pgconn.finish()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
