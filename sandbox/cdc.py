"""CDC and xmin syncs of a Postgres table: what the engine runs for `sync_type` `cdc` and `xmin`.

A CDC table's first sync (and any sync after its position was lost) reads a consistent snapshot;
each later one applies the changes its source's replication slot holds, in commit order, into
the warehouse, then confirms the slot. The warehouse commit records the table's position (the
first commit it does not hold) with the rows, so a sync killed at any point neither loses nor
repeats a change: before the commit nothing was written and the slot was not confirmed; after
it, the changes below the position are skipped when the slot hands them over again.

PostHog's shape, from `products/warehouse_sources/backend/temporal/data_imports/cdc/`
(`batcher.py`, `load_resolution.py`) and `.../sources/postgres/cdc/`: `cdc_table_mode`
`consolidated` writes the current rows (`incremental_merge`), `cdc_only` the change log
`<table>_cdc` (`scd2_append`), `both` the two; the columns `_ph_cdc_op`, `_ph_cdc_timestamp`,
`_ph_cdc_seq`, `_ph_deleted`, `_ph_deleted_at`, and `valid_from`/`valid_to` on the log.

xmin follows `.../sources/postgres/README.md` and `xmin_cursor.py`: a ceiling
`pg_snapshot_xmin(pg_current_snapshot())` taken before the read, rows whose `xmin` is in
`[previous ceiling, ceiling)` read and merged on the primary key, wraparound handled by the
ceiling's epoch (one wrap reads `>= lower OR < upper`, more re-read the whole table).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .connectors import Column, Export, SourceError, check_cancelled, postgres, postgres_cdc
from .connectors.pgoutput import Transaction, lsn_to_text
from .store import iso, now
from .warehouse import (
    CDC_OP,
    CDC_SEQ,
    CDC_TIMESTAMP,
    OMITTED,
    ORDER,
    CdcTargets,
    Warehouse,
)

# The table modes and the write mode each gives a sync's job (PostHog's `CDCLane`s).
WRITE_MODES = {
    "consolidated": "incremental_merge",
    "cdc_only": "scd2_append",
    "both": "incremental_merge",
}
HISTORY_SUFFIX = "_cdc"
# How many changes' CSV rows are joined into one write, and how many a sync reports at a time.
_LINES_A_WRITE, _REPORT_CHANGES = 5000, 2000
# An xmin ceiling is a 64-bit xid8: its epoch is the high 32 bits.
_EPOCH_BITS = 32
_XID_MASK = (1 << _EPOCH_BITS) - 1


def targets(name: str, table_mode: str) -> CdcTargets:
    """The warehouse tables a CDC table writes in this mode."""
    return CdcTargets(
        current=name if table_mode in ("consolidated", "both") else None,
        history=name + HISTORY_SUFFIX if table_mode in ("cdc_only", "both") else None,
    )


@dataclass
class CdcSync:
    """One CDC sync of one table: what the engine hands over, and its callbacks."""

    warehouse: Warehouse
    job_inputs: dict[str, Any]
    namespace: str
    table: str
    schema_id: str
    columns: list[Column]
    primary_key: list[str]
    targets: CdcTargets
    csv_path: Path
    staging: str
    cancelled: threading.Event
    progress: Callable[[int], None]
    log: Callable[[str, str], None]
    checkpoint: Callable[[str], None]
    # Raises when the schema was deleted meanwhile (called inside the warehouse lock).
    still_wanted: Callable[[], None]
    # The ids of the source's CDC tables whose positions hold the slot back.
    active_schema_ids: Callable[[], list[str]]
    replace: bool = False

    def run(self, conn: Any) -> int:
        """Snapshot or apply the changes; return the rows written.

        Raises:
            SlotLost: the slot or publication is gone.
            SourceError: CDC is off on the source, or the table cannot be read.
        """
        settings = postgres_cdc.settings_of(self.job_inputs)
        if settings is None:
            raise SourceError("CDC is not enabled on this source.")
        confirmed = postgres_cdc.confirmed_position(conn, settings.slot)
        if not settings.publication or not postgres_cdc.publication_exists(
            conn, settings.publication
        ):
            raise postgres_cdc.SlotLost(postgres_cdc.PUBLICATION_MISSING)
        published = postgres_cdc.in_publication(
            conn, settings.publication, self.namespace, self.table
        )
        if not published:
            if settings.mode != "posthog":
                raise SourceError(
                    f"Table {self.namespace}.{self.table} is not in publication "
                    f"'{settings.publication}'. Add it (ALTER PUBLICATION {settings.publication} "
                    f"ADD TABLE {self.namespace}.{self.table}), then sync again."
                )
            postgres_cdc.add_table(conn, settings.publication, self.namespace, self.table)
            self.log(
                "INFO", f"Added {self.namespace}.{self.table} to publication {settings.publication}"
            )
        position = None if self.replace else self.warehouse.cdc_position(self.schema_id)
        missing = [
            t for _, t in self.targets.keyed(self.schema_id) if not self.warehouse.table_exists(t)
        ]
        if position is not None and position < confirmed:
            self.log(
                "WARNING",
                f"The slot is past this table's position ({lsn_to_text(position)} < "
                f"{lsn_to_text(confirmed)}): the changes between are gone, so a new snapshot "
                "replaces the table",
            )
            position = None
        elif position is not None and missing:
            self.log("INFO", f"No table {', '.join(missing)} yet: a new snapshot fills it")
            position = None
        if position is None or not published:
            rows = self._snapshot()
        else:
            rows = self._changes(conn, settings, position)
        self._confirm(conn, settings)
        return rows

    def _snapshot(self) -> int:
        """Read the table in a snapshot exported with its slot position; publish it."""
        self.log("INFO", "Snapshot: reading every row in a consistent snapshot")
        export = Export(
            self.namespace,
            self.table,
            self.columns,
            cursor_column=None,
            cursor_value=None,
            inclusive=False,
            path=self.csv_path,
            cancelled=self.cancelled,
            progress=self.progress,
        )
        with (
            postgres_cdc.exported_snapshot(self.job_inputs) as (point, snapshot),
            postgres.connect(self.job_inputs) as reader,
        ):
            reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            reader.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'".encode())
            rows = postgres.export(reader, export)
            reader.execute("COMMIT")
        self.log("INFO", f"Snapshot at {lsn_to_text(point)}: read {_rows(rows)}")
        self._publish(self.columns, rows, point, snapshot_at=iso(now()))
        return rows

    def _publish(
        self, columns: list[Column], rows: int, position: int, *, snapshot_at: str | None = None
    ) -> None:
        """Load the CSV and publish it with the new position, in one warehouse transaction."""
        self.checkpoint("publish")
        with self.warehouse.locked() as cur:
            if rows:
                self.warehouse.load_staging(
                    cur, self.csv_path, self.staging, columns, self.cancelled
                )
            else:
                self.warehouse.create_staging(cur, self.staging, columns)
            self.csv_path.unlink(missing_ok=True)
            check_cancelled(self.cancelled)
            self.still_wanted()
            self.warehouse.publish_cdc(
                cur,
                schema_id=self.schema_id,
                staging=self.staging,
                targets=self.targets,
                primary_key=self.primary_key,
                position=position,
                snapshot_at=snapshot_at,
            )
        self.checkpoint("committed")

    def _changes(self, conn: Any, settings: postgres_cdc.CdcSettings, position: int) -> int:
        """Apply the changes committed since `position`, up to the WAL's end now."""
        upto = postgres_cdc.current_position(conn)
        self.log("DEBUG", f"Reading changes from {lsn_to_text(position)} to {lsn_to_text(upto)}")
        written = skipped = 0
        reported = 0
        truncated_at: int | None = None
        with self.csv_path.open("w", encoding="utf-8", newline="") as out:
            batch = _Batch(self.columns, self.primary_key, out)
            for transaction in postgres_cdc.changes(conn, settings, upto):
                if transaction.commit_lsn < position:
                    skipped += len(transaction.changes)
                    continue
                if truncated_at is None and any(
                    r.namespace == self.namespace and r.name == self.table
                    for r in transaction.truncated
                ):
                    truncated_at = transaction.commit_lsn
                written += batch.add(transaction, self.namespace, self.table)
                if written - reported >= _REPORT_CHANGES:
                    reported = written
                    self.progress(written)
        check_cancelled(self.cancelled)
        if truncated_at is not None:
            # PostHog's decoder reports a TRUNCATE and the extraction marks the table for a new
            # snapshot; rows deleted by it would otherwise stay in the warehouse.
            self.log(
                "WARNING",
                f"{self.namespace}.{self.table} was truncated at {lsn_to_text(truncated_at)}: "
                "a new snapshot replaces the table",
            )
            return self._snapshot()
        if skipped:
            self.log("INFO", f"Skipped {skipped} changes the warehouse already holds")
        self.log("INFO", f"Read {_rows(written, 'change')} of {self.namespace}.{self.table}")
        self._publish([*self.columns, *_META], written, max(position, upto))
        return written

    def _confirm(self, conn: Any, settings: postgres_cdc.CdcSettings) -> None:
        """Confirm the slot up to the lowest position of the source's active CDC tables: the
        WAL none of them needs any more."""
        positions = self.warehouse.cdc_positions(self.active_schema_ids())
        if not positions:
            return
        lowest = min(positions.values())
        postgres_cdc.advance(conn, settings.slot, lowest)
        self.log("DEBUG", f"Confirmed slot {settings.slot} up to {lsn_to_text(lowest)}")


_META = [
    Column(CDC_OP, "text", True, "VARCHAR", None, ""),
    Column(CDC_TIMESTAMP, "timestamptz", True, "TIMESTAMPTZ", None, ""),
    Column(CDC_SEQ, "bigint", True, "BIGINT", None, ""),
    Column(OMITTED, "text", True, "VARCHAR", None, ""),
    Column(ORDER, "bigint", True, "BIGINT", None, ""),
]


class _Batch:
    """Writes a table's changes as CSV rows for the warehouse, filling what the stream left out
    from the key's earlier change in the batch when there is one (the rest is filled from the
    warehouse's current row at publication, as PostHog's `enrich_toast_omitted_rows` and
    `enrich_delete_rows` do)."""

    def __init__(self, columns: list[Column], primary_key: list[str], out: Any) -> None:
        self._names = [c.name for c in columns]
        self._key = primary_key
        self._out = out
        self._known: dict[tuple[str | None, ...], dict[str, str | None]] = {}
        self._order = 0

    def add(self, transaction: Transaction, namespace: str, table: str) -> int:
        stamp, position = iso(transaction.committed_at), str(transaction.commit_lsn)
        names, key_columns, known_rows = self._names, self._key, self._known
        lines: list[str] = []
        written = 0
        for change in transaction.changes:
            relation = change.relation
            if relation.namespace != namespace or relation.name != table:
                continue
            values = change.values
            key = tuple(values.get(k) for k in key_columns)
            known = known_rows.get(key)
            omitted: list[str] = []
            if change.omitted:
                values = dict(values)
                for name in change.omitted:
                    if known is not None and name in known:
                        values[name] = known[name]
                    else:
                        omitted.append(name)
            if change.op != "D":
                known_rows[key] = values if known is None else {**known, **values}
            self._order += 1
            row = [values.get(n) for n in names]
            row += (change.op, stamp, position, "\x1f".join(omitted) or None, str(self._order))
            lines.append(",".join([_csv(v) for v in row]))
            if len(lines) == _LINES_A_WRITE:
                written += self._write(lines)
        return written + self._write(lines)

    def _write(self, lines: list[str]) -> int:
        """Write the lines as CSV rows, empty the list; how many there were."""
        count = len(lines)
        if count:
            self._out.write("\n".join(lines) + "\n")
            lines.clear()
        return count


def _csv(value: str | None) -> str:
    """A value as COPY's CSV writes it: NULL empty, any text quoted."""
    if value is None:
        return ""
    return '"' + value.replace('"', '""') + '"'


def xmin_ceiling(conn: Any) -> int:
    """The xmin ceiling now: the oldest transaction still running, as a 64-bit xid8."""
    row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
    return int(row[0]) if row else 0


def xmin_condition(previous: int | None, ceiling: int) -> tuple[str | None, str]:
    """The rows an xmin sync reads between the previous ceiling and this one, as a condition on
    `xmin` (None: every row), and why, for the log."""
    if previous is None:
        return None, "no saved ceiling: reading every row"
    low, high = previous & _XID_MASK, ceiling & _XID_MASK
    wraps = (ceiling >> _EPOCH_BITS) - (previous >> _EPOCH_BITS)
    xid = "xmin::text::bigint"
    if wraps == 0:
        return f"{xid} >= {low} AND {xid} < {high}", f"xmin in [{low}, {high})"
    if wraps == 1:
        return (
            f"({xid} >= {low} OR {xid} < {high})",
            f"xmin >= {low} or < {high} (the counter wrapped around once)",
        )
    return None, f"the counter wrapped around {wraps} times: reading every row"


def _rows(count: int, noun: str = "row") -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
