"""CDC and xmin syncs against a real PostgreSQL with wal_level `logical`: the slot and
publication a CDC source creates, its snapshot, the changes applied in commit order in each
`cdc_table_mode`, a lost slot and its repair, and xmin's incremental reads."""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from posthog_warehouse_mcp.sandbox import open_sandbox
from posthog_warehouse_mcp.sandbox.connectors import postgres_cdc
from posthog_warehouse_mcp.sandbox.connectors.postgres_cdc import SLOT_MISSING
from posthog_warehouse_mcp.sandbox.embedded import EmbeddedPostgres
from tests.sandbox.servers import near_wraparound, set_xid_epoch
from tests.sandbox.support import (
    API,
    ROOT,
    Upstream,
    client_for,
    jobs_of,
    log_lines,
    reload_and_wait,
    schema_by_name,
    services_of,
    sync_log,
    wait_for_jobs,
    warehouse_rows,
)
from tests.support import eventually, free_port

pytestmark = pytest.mark.anyio

TABLE_SQL = """
CREATE TABLE orders (id bigint PRIMARY KEY, amount int, note text);
INSERT INTO orders SELECT g, g * 10, 'n' || g FROM generate_series(1, 5) g;
"""
CHANGES_SQL = """
INSERT INTO orders VALUES (6, 60, 'six');
UPDATE orders SET amount = amount + 1 WHERE id IN (1, 6);
DELETE FROM orders WHERE id = 2;
UPDATE orders SET note = NULL WHERE id = 3;
DELETE FROM orders WHERE id = 6;
INSERT INTO orders VALUES (6, 66, 'again');
"""


async def cdc_source(
    client: httpx.AsyncClient, upstream: Upstream, mode: str = "consolidated", **extra: Any
) -> tuple[dict[str, Any], str]:
    """Create a CDC source syncing `orders` in `mode`; wait for its snapshot."""
    schema = {"name": "orders", "should_sync": True, "sync_type": "cdc", "cdc_table_mode": mode}
    response = await client.post(
        f"{API}/external_data_sources/",
        json={
            "source_type": "Postgres",
            "payload": upstream.payload([schema], cdc_enabled=True, **extra),
        },
    )
    assert response.status_code == 201, response.text
    source = (await client.get(f"{API}/external_data_sources/{response.json()['id']}/")).json()
    await wait_for_jobs(client, source["id"], 1)
    return source, schema_by_name(source, "orders")["id"]


async def changes_synced(
    client: httpx.AsyncClient,
    upstream: Upstream,
    changes: str,
    mode: str = "consolidated",
    *,
    setup: str = TABLE_SQL,
) -> tuple[dict[str, Any], str]:
    """Make `orders` (`setup`), snapshot it in a CDC source in `mode`, then make `changes`
    upstream and sync them."""
    upstream.execute(setup)
    source, schema_id = await cdc_source(client, upstream, mode)
    upstream.execute(changes)
    await reload_and_wait(client, source["id"], schema_id, 2)
    return source, schema_id


def upstream_rows(upstream: Upstream) -> list[tuple[Any, ...]]:
    return upstream.execute("SELECT id, amount, note FROM orders ORDER BY id")


def current_rows(app: Starlette) -> list[tuple[Any, ...]]:
    return warehouse_rows(
        app, "SELECT id, amount, note FROM postgres_orders WHERE NOT _ph_deleted ORDER BY id"
    )


def slots(upstream: Upstream) -> list[tuple[Any, ...]]:
    return upstream.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
    )


async def test_consolidated_holds_exactly_the_upstream_rows_and_delete_drops_the_slot(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    app, client = sandbox
    logical_upstream.execute(TABLE_SQL)
    source, schema_id = await cdc_source(client, logical_upstream)
    short = source["id"].replace("-", "")[:12]
    assert slots(logical_upstream) == [(f"posthog_{short}",)]
    assert logical_upstream.execute("SELECT pubname, tablename FROM pg_publication_tables") == [
        (f"posthog_pub_{short}", "orders")
    ]
    assert source["job_inputs"]["cdc_slot_name"] == f"posthog_{short}"
    assert current_rows(app) == upstream_rows(logical_upstream)

    logical_upstream.execute(CHANGES_SQL)
    await reload_and_wait(client, source["id"], schema_id, 2)
    assert current_rows(app) == upstream_rows(logical_upstream)
    # A deleted row stays, flagged, with its last values (PostHog's soft delete).
    assert warehouse_rows(
        app,
        "SELECT amount, _ph_cdc_op, _ph_deleted_at IS NOT NULL FROM postgres_orders "
        "WHERE _ph_deleted",
    ) == [(20, "D", True)]
    jobs = await jobs_of(client, source["id"])
    assert [(j["status"], j["cdc_write_mode"]) for j in jobs] == [
        ("Completed", "incremental_merge")
    ] * 2
    # Nothing new: the next sync changes nothing, and the slot holds back no applied change.
    await reload_and_wait(client, source["id"], schema_id, 3)
    assert current_rows(app) == upstream_rows(logical_upstream)
    assert (await jobs_of(client, source["id"]))[0]["rows_synced"] == 0

    deleted = await client.delete(f"{API}/external_data_sources/{source['id']}/")
    assert deleted.status_code == 204
    assert slots(logical_upstream) == []
    assert logical_upstream.execute("SELECT pubname FROM pg_publication") == []


async def test_incremental_fields_tell_a_cdc_sources_tables_cdc_is_available(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    _, client = sandbox
    logical_upstream.execute(TABLE_SQL)
    source, schema_id = await cdc_source(client, logical_upstream)
    fields = f"{API}/external_data_schemas/{schema_id}/incremental_fields/"
    body = (await client.post(fields)).json()
    assert (body["cdc_available"], body["xmin_available"]) == (True, True)
    await client.delete(f"{API}/external_data_sources/{source['id']}/")


async def test_both_writes_the_current_rows_and_the_change_log_in_posthogs_shape(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    app, client = sandbox
    source, _ = await changes_synced(client, logical_upstream, CHANGES_SQL, "both")
    assert current_rows(app) == upstream_rows(logical_upstream)
    log = warehouse_rows(
        app,
        "SELECT id, _ph_cdc_op, amount, _ph_deleted, valid_to IS NULL FROM postgres_orders_cdc "
        "WHERE id IN (2, 6) ORDER BY id, valid_from, _ph_cdc_seq",
    )
    assert log == [
        (2, "I", 20, False, False),  # the snapshot's row, closed by the delete
        (2, "D", 20, True, True),
        (6, "I", 60, False, False),
        (6, "U", 61, False, False),
        (6, "D", 61, True, False),
        (6, "I", 66, False, True),
    ]
    # Each key has one open version: the current row.
    assert warehouse_rows(
        app,
        "SELECT id, amount, note FROM postgres_orders_cdc WHERE valid_to IS NULL "
        "AND NOT _ph_deleted ORDER BY id",
    ) == upstream_rows(logical_upstream)
    await client.delete(f"{API}/external_data_sources/{source['id']}/")


async def test_cdc_only_keeps_the_log_alone(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    app, client = sandbox
    update = "UPDATE orders SET amount = 0 WHERE id = 1"
    source, _ = await changes_synced(client, logical_upstream, update, "cdc_only")
    tables = warehouse_rows(
        app, "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'postgres_orders%'"
    )
    assert tables == [("postgres_orders_cdc",)]
    assert warehouse_rows(
        app, "SELECT _ph_cdc_op, amount FROM postgres_orders_cdc WHERE id = 1 ORDER BY valid_from"
    ) == [("I", 10), ("U", 0)]
    jobs = await jobs_of(client, source["id"])
    assert {j["cdc_write_mode"] for j in jobs} == {"scd2_append"}
    await client.delete(f"{API}/external_data_sources/{source['id']}/")


async def test_a_lost_slot_fails_clearly_and_repair_cdc_brings_the_table_back(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    app, client = sandbox
    logical_upstream.execute(TABLE_SQL)
    source, schema_id = await cdc_source(client, logical_upstream)
    repair = f"{API}/external_data_sources/{source['id']}/repair_cdc/"
    healthy = await client.post(repair)
    assert healthy.status_code == 400
    assert healthy.json()["message"].startswith("CDC looks healthy on this source")

    (slot,) = slots(logical_upstream)[0]
    logical_upstream.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    logical_upstream.execute("UPDATE orders SET amount = -1 WHERE id = 1")
    await reload_and_wait(client, source["id"], schema_id, 2)
    failed = (await jobs_of(client, source["id"]))[0]
    assert (failed["status"], failed["latest_error"]) == ("Failed", SLOT_MISSING)
    logs = await client.get(
        f"{API}/external_data_schemas/{schema_id}/logs/",
        params={"instance_id": failed["workflow_run_id"], "level": "ERROR"},
    )
    assert any("repair_cdc" in e["message"] for e in logs.json()["results"])

    repaired = await client.post(repair)
    assert (repaired.status_code, repaired.json()) == (200, {"success": True, "schemas_reset": 1})
    await wait_for_jobs(client, source["id"], 3)
    assert slots(logical_upstream) == [(slot,)]
    assert current_rows(app) == upstream_rows(logical_upstream)
    logical_upstream.execute("DELETE FROM orders WHERE id = 5")
    await reload_and_wait(client, source["id"], schema_id, 4)
    assert current_rows(app) == upstream_rows(logical_upstream)
    await client.delete(f"{API}/external_data_sources/{source['id']}/")


async def test_the_sweeper_drops_a_slot_past_its_critical_lag_and_repair_brings_it_back(
    tmp_path: Path, logical_upstream: Upstream
) -> None:
    """The sweeper (every 0.1 s here) leaves a slot under its thresholds and drops it past the
    critical one; the sync fails as for a lost slot and repair-cdc brings it back. Once the
    source is deleted, it drops the slot and publication the delete left."""
    async with (
        open_sandbox(tmp_path / "sandbox", demo=False, cdc_sweep=0.1) as app,
        client_for(app) as client,
    ):
        services = services_of(app)
        logical_upstream.execute(TABLE_SQL)
        source, schema_id = await cdc_source(
            client,
            logical_upstream,
            cdc_lag_warning_threshold_mb=1,
            cdc_lag_critical_threshold_mb=2,
        )
        (slot,) = slots(logical_upstream)[0]
        publications = "SELECT pubname FROM pg_publication"
        [(publication,)] = logical_upstream.execute(publications)
        await anyio.to_thread.run_sync(services.sweep_cdc_slots)
        assert slots(logical_upstream) == [(slot,)]  # under its thresholds: left alone

        # About 4 MB of WAL the slot holds back: any table's writes count.
        logical_upstream.execute(
            "CREATE TABLE filler AS "
            "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 30000) g"
        )
        logical_upstream.execute("UPDATE orders SET amount = -1 WHERE id = 1")

        async def dropped() -> bool | None:
            return True if slots(logical_upstream) == [] else None

        await eventually(dropped)
        assert logical_upstream.execute(publications) == []
        assert services.store.sources[source["id"]].status == "Error"
        await reload_and_wait(client, source["id"], schema_id, 2)
        failed = (await jobs_of(client, source["id"]))[0]
        assert (failed["status"], failed["latest_error"]) == ("Failed", SLOT_MISSING)
        repaired = await client.post(f"{API}/external_data_sources/{source['id']}/repair_cdc/")
        assert repaired.status_code == 200
        assert repaired.json() == {"success": True, "schemas_reset": 1}
        await wait_for_jobs(client, source["id"], 3)
        assert slots(logical_upstream) == [(slot,)]
        assert logical_upstream.execute(publications) == [(publication,)]
        assert current_rows(app) == upstream_rows(logical_upstream)

        # A deleted source's slot and publication that its delete left (as when the database
        # could not be reached) are dropped by a later pass.
        await client.delete(f"{API}/external_data_sources/{source['id']}/")
        assert slots(logical_upstream) == []
        logical_upstream.execute(
            f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');"
            f"CREATE PUBLICATION {publication}"
        )
        await eventually(dropped)
        assert logical_upstream.execute(publications) == []


async def test_cdc_settings_are_checked_at_create_and_not_changed_by_a_patch(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    """A threshold that is no number is refused at create; a PATCH of job_inputs cannot point
    the source at another slot or change its thresholds (the sweeper would act on them)."""
    app, client = sandbox
    logical_upstream.execute(TABLE_SQL)
    schema = {"name": "orders", "should_sync": True, "sync_type": "cdc"}
    bad = await client.post(
        f"{API}/external_data_sources/",
        json={
            "source_type": "Postgres",
            "payload": logical_upstream.payload(
                [schema], cdc_enabled=True, cdc_lag_warning_threshold_mb="lots"
            ),
        },
    )
    assert bad.status_code == 400
    assert "cdc_lag_warning_threshold_mb must be a whole number" in bad.text
    assert slots(logical_upstream) == []
    source, _ = await cdc_source(client, logical_upstream)
    url = f"{API}/external_data_sources/{source['id']}/"
    for change in ({"cdc_slot_name": "someone_elses"}, {"cdc_lag_critical_threshold_mb": "x"}):
        refused = await client.patch(url, json={"job_inputs": change})
        assert refused.status_code == 400, refused.text
        assert "cannot be changed here" in refused.text
    kept = services_of(app).store.sources[source["id"]].job_inputs
    assert kept["cdc_lag_critical_threshold_mb"] == 10240
    assert kept["cdc_slot_name"] == slots(logical_upstream)[0][0]
    await client.delete(url)


async def test_the_sweeper_leaves_a_slot_a_live_source_reuses_and_one_a_sync_holds(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    app, client = sandbox
    services = services_of(app)
    logical_upstream.execute(TABLE_SQL)
    first, _ = await cdc_source(client, logical_upstream, cdc_slot_name="team_slot")
    await client.delete(f"{API}/external_data_sources/{first['id']}/")
    assert slots(logical_upstream) == []
    # A new source takes the name the deleted one had: the deleted one's cleanup leaves it.
    second, _ = await cdc_source(
        client, logical_upstream, cdc_slot_name="team_slot", cdc_lag_critical_threshold_mb=1
    )
    await anyio.to_thread.run_sync(services.sweep_cdc_slots)
    assert slots(logical_upstream) == [("team_slot",)]
    # Past its critical lag, but a sync holds the slot: this pass leaves it, the next drops it.
    logical_upstream.execute(
        "CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 30000) g"
    )
    with services.engine.slot_lock(second["id"]):
        await anyio.to_thread.run_sync(services.sweep_cdc_slots)
    assert slots(logical_upstream) == [("team_slot",)]
    await anyio.to_thread.run_sync(services.sweep_cdc_slots)
    assert slots(logical_upstream) == []
    await client.delete(f"{API}/external_data_sources/{second['id']}/")


async def test_a_sweep_that_cannot_reach_a_database_logs_it_and_goes_on(
    sandbox: tuple[Starlette, httpx.AsyncClient],
    logical_upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, client = sandbox
    services = services_of(app)
    logical_upstream.execute(TABLE_SQL)
    source, _ = await cdc_source(client, logical_upstream, cdc_lag_critical_threshold_mb=1)
    with services.store.lock:
        stored = services.store.sources[source["id"]]
        inputs = {**stored.job_inputs, "port": free_port()}
        services.store.save(replace(stored, job_inputs=inputs))
    with caplog.at_level(logging.WARNING):
        await anyio.to_thread.run_sync(services.sweep_cdc_slots)
    assert f"CDC sweep of source {source['id']} failed" in caplog.text
    assert logical_upstream.creds.password not in caplog.text
    assert services.store.sources[source["id"]].status != "Error"
    assert len(slots(logical_upstream)) == 1  # nothing was dropped
    with services.store.lock:
        services.store.save(
            replace(services.store.sources[source["id"]], job_inputs=stored.job_inputs)
        )
    await client.delete(f"{API}/external_data_sources/{source['id']}/")
    assert slots(logical_upstream) == []


@pytest.mark.parametrize(
    ("mode", "auto_drop", "lag_mb", "action"),
    [
        ("posthog", True, 0.5, "none"),
        ("posthog", True, 1, "warn"),
        ("posthog", True, 2, "drop"),
        ("posthog", False, 3, "warn"),
        ("self_managed", True, 1.5, "warn"),
        ("self_managed", True, 2, "error"),
        ("self_managed", False, 2, "error"),
    ],
)
def test_the_sweeper_acts_on_a_slots_lag_as_posthogs_does(
    mode: postgres_cdc.Mode, auto_drop: bool, lag_mb: float, action: str
) -> None:
    settings = postgres_cdc.CdcSettings(
        mode=mode,
        slot="s",
        publication="p",
        auto_drop_slot=auto_drop,
        lag_warning_mb=1,
        lag_critical_mb=2,
    )
    assert postgres_cdc.sweep(settings, int(lag_mb * 1024 * 1024)) == action


TAGS = "SELECT id, label FROM tags ORDER BY id"


async def xmin_tags(client: httpx.AsyncClient, upstream: Upstream, rows: int) -> tuple[str, str]:
    """Create `tags` (`rows` rows, no cursor column) upstream and a source syncing it by xmin;
    wait for its first sync; the source's id and the table's."""
    upstream.execute(
        "CREATE TABLE tags (id int PRIMARY KEY, label text);"
        f"INSERT INTO tags SELECT g, 't' || g FROM generate_series(1, {rows}) g"
    )
    schema = {"name": "tags", "should_sync": True, "sync_type": "xmin"}
    response = await client.post(
        f"{API}/external_data_sources/",
        json={"source_type": "Postgres", "payload": upstream.payload([schema])},
    )
    assert response.status_code == 201, response.text
    source_id = response.json()["id"]
    await wait_for_jobs(client, source_id, 1)
    source = (await client.get(f"{API}/external_data_sources/{source_id}/")).json()
    return source_id, schema_by_name(source, "tags")["id"]


def tags_of(app: Starlette) -> list[tuple[Any, ...]]:
    """The warehouse's `tags`, as `TAGS` reads them upstream."""
    return warehouse_rows(app, "SELECT id, label FROM postgres_tags ORDER BY id")


async def test_xmin_picks_up_updates_of_a_table_without_a_cursor(
    sandbox: tuple[Starlette, httpx.AsyncClient], upstream: Upstream
) -> None:
    app, client = sandbox
    source_id, schema_id = await xmin_tags(client, upstream, 100)
    upstream.execute(
        "UPDATE tags SET label = 'changed' WHERE id IN (3, 7); INSERT INTO tags VALUES (101, 'new')"
    )
    await reload_and_wait(client, source_id, schema_id, 2)
    assert (await jobs_of(client, source_id))[0]["rows_synced"] == 3
    assert tags_of(app) == upstream.execute(TAGS)


@pytest.mark.slow(seconds=8)
async def test_xmin_reads_across_the_transaction_counters_wraparound(
    tmp_path: Path, sandbox: tuple[Starlette, httpx.AsyncClient]
) -> None:
    """A server of its own, its 32-bit counter moved to 3,000 ids before it wraps: a change made
    before the wrap and one after it are both read, and nothing else; after a jump of two more
    wraparounds (epoch 1 to 3) the sync reads every row, as PostHog's does."""
    app, client = sandbox
    server = EmbeddedPostgres(tmp_path / "wrapping")
    try:
        creds = near_wraparound(server, server.start(), left=3000)
        upstream = Upstream(creds)
        source_id, schema_id = await xmin_tags(client, upstream, 10)
        upstream.execute("UPDATE tags SET label = 'before the wrap' WHERE id = 2")
        # 3,000 transactions, each taking an id: the counter passes 2^32.
        upstream.execute(
            "DO $$ BEGIN FOR i IN 1..3000 LOOP PERFORM pg_current_xact_id(); COMMIT; "
            "END LOOP; END $$"
        )
        assert upstream.execute("SELECT pg_current_xact_id()::text::bigint >> 32") == [(1,)]
        upstream.execute(
            "UPDATE tags SET label = 'after the wrap' WHERE id = 3;"
            "INSERT INTO tags VALUES (11, 'new')"
        )

        await reload_and_wait(client, source_id, schema_id, 2)

        assert (await jobs_of(client, source_id))[0]["rows_synced"] == 3
        assert tags_of(app) == upstream.execute(TAGS)
        messages = [m for _, m in log_lines(await sync_log(client, schema_id))]
        assert any("wrapped around once" in m for m in messages), messages

        upstream = Upstream(set_xid_epoch(server, 3))
        upstream.execute("UPDATE tags SET label = 'epoch 3' WHERE id = 4")
        await reload_and_wait(client, source_id, schema_id, 3)

        assert (await jobs_of(client, source_id))[0]["rows_synced"] == 11
        assert tags_of(app) == upstream.execute(TAGS)
        messages = [m for _, m in log_lines(await sync_log(client, schema_id))]
        assert any("wrapped around 2 times: reading every row" in m for m in messages), messages
    finally:
        server.stop()


# A sandbox process that syncs one table and SIGKILLs itself at a checkpoint of that sync.
KILLER = """
import asyncio, os, signal, sys
from pathlib import Path
from posthog_warehouse_mcp.sandbox import open_sandbox
from tests.sandbox.support import API, client_for, services_of

async def main(directory, schema_id, point):
    async with open_sandbox(Path(directory), demo=False) as app, client_for(app) as client:
        def hook(at):
            if at.point == point:
                os.kill(os.getpid(), signal.SIGKILL)
        services_of(app).engine.hook = hook
        await client.post(f"{API}/external_data_schemas/{schema_id}/reload/")
        await asyncio.sleep(120)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.slow(seconds=20)
async def test_a_sigkill_at_any_point_of_a_cdc_sync_neither_loses_nor_repeats_a_change(
    tmp_path: Path, logical_upstream: Upstream
) -> None:
    directory = tmp_path / "sandbox"
    logical_upstream.execute(TABLE_SQL)
    async with open_sandbox(directory, demo=False) as app, client_for(app) as client:
        source, schema_id = await cdc_source(client, logical_upstream, "both")
    jobs = 1
    for round_, point in enumerate(("publish", "committed", "publish"), start=1):
        logical_upstream.execute(
            "UPDATE orders SET amount = amount + 1;"
            f"INSERT INTO orders VALUES ({100 + round_}, 0, 'r');"
            f"DELETE FROM orders WHERE id = {round_ + 1}"
        )
        killed = await anyio.run_process(
            [sys.executable, "-c", KILLER, str(directory), schema_id, point],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
        jobs += 1
        async with open_sandbox(directory, demo=False) as app, client_for(app) as client:
            await reload_and_wait(client, source["id"], schema_id, jobs + 1)
            jobs += 1
            assert current_rows(app) == upstream_rows(logical_upstream)
            # Every update is in the log once: id 1 was updated once a round.
            log = "FROM postgres_orders_cdc"
            by_op = f"SELECT _ph_cdc_op, count(*) {log} WHERE id = 1 GROUP BY 1 ORDER BY 1"
            assert warehouse_rows(app, by_op) == [("I", 1), ("U", round_)]
            # One open version a key.
            open_twice = f"SELECT id {log} WHERE valid_to IS NULL GROUP BY id HAVING count(*) > 1"
            assert warehouse_rows(app, open_twice) == []
    async with open_sandbox(directory, demo=False) as app, client_for(app) as client:
        await client.delete(f"{API}/external_data_sources/{source['id']}/")
    assert slots(logical_upstream) == []


@pytest.mark.slow(seconds=5)
async def test_self_managed_cdc_reads_through_the_users_publication_and_leaves_it_on_delete(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    app, client = sandbox
    logical_upstream.execute(TABLE_SQL + "CREATE PUBLICATION team_pub FOR TABLE orders;")
    source, schema_id = await cdc_source(
        client,
        logical_upstream,
        cdc_management_mode="self_managed",
        cdc_publication_name="team_pub",
    )
    assert source["job_inputs"]["cdc_management_mode"] == "self_managed"
    assert source["job_inputs"]["cdc_publication_name"] == "team_pub"
    publications = "SELECT pubname, tablename FROM pg_publication_tables ORDER BY 1, 2"
    assert logical_upstream.execute(publications) == [("team_pub", "orders")]
    assert current_rows(app) == upstream_rows(logical_upstream)
    logical_upstream.execute(CHANGES_SQL)
    await reload_and_wait(client, source["id"], schema_id, 2)
    assert current_rows(app) == upstream_rows(logical_upstream)

    await client.delete(f"{API}/external_data_sources/{source['id']}/")
    assert slots(logical_upstream) == []
    # The publication is the user's: PostHog drops only its slot.
    assert logical_upstream.execute(publications) == [("team_pub", "orders")]


@pytest.mark.slow(seconds=5)
async def test_an_unchanged_toasted_value_keeps_its_value_when_another_column_changes(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    app, client = sandbox
    # EXTERNAL: stored out of line without compression, so pgoutput sends it as unchanged ('u').
    toasted = (
        TABLE_SQL + "ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL;"
        "UPDATE orders SET note = repeat(id::text || 'toast', 4000) WHERE id IN (1, 2);"
    )
    updates = (
        "UPDATE orders SET amount = -1 WHERE id = 1;"
        "UPDATE orders SET amount = -2 WHERE id = 2; UPDATE orders SET amount = -3 WHERE id = 2"
    )
    source, _ = await changes_synced(client, logical_upstream, updates, "both", setup=toasted)
    assert current_rows(app) == upstream_rows(logical_upstream)
    assert len(current_rows(app)[0][2]) == len("1toast") * 4000
    # The change log's rows of those updates carry the value too.
    assert warehouse_rows(
        app,
        "SELECT id, amount, md5(note) FROM postgres_orders_cdc WHERE _ph_cdc_op = 'U' "
        "ORDER BY id, _ph_cdc_seq, amount DESC",
    ) == logical_upstream.execute(
        "SELECT o.id, a, md5(note) FROM orders o, (VALUES (1, -1), (2, -2), (2, -3)) v(id, a) "
        "WHERE o.id = v.id ORDER BY o.id, a DESC"
    )
    await client.delete(f"{API}/external_data_sources/{source['id']}/")


@pytest.mark.slow(seconds=5)
async def test_a_new_upstream_column_joins_the_table_filled_by_the_changes_that_carry_it(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    app, client = sandbox
    changes = (
        "ALTER TABLE orders ADD COLUMN region text DEFAULT 'eu';"
        "UPDATE orders SET region = 'us' WHERE id = 1;"
        "INSERT INTO orders VALUES (7, 70, 'n', 'apac')"
    )
    source, _ = await changes_synced(client, logical_upstream, changes, "both")
    assert (await jobs_of(client, source["id"]))[0]["status"] == "Completed"
    # As in PostHog, the column is added to the warehouse tables (its Delta merge evolves the
    # schema); only rows a change has carried since hold a value, the others stay null.
    query = "SELECT id, region FROM {} WHERE {} ORDER BY id"
    expected = [(1, "us"), (2, None), (3, None), (4, None), (5, None), (7, "apac")]
    assert warehouse_rows(app, query.format("postgres_orders", "true")) == expected
    assert warehouse_rows(app, query.format("postgres_orders_cdc", "valid_to IS NULL")) == expected
    await client.delete(f"{API}/external_data_sources/{source['id']}/")


@pytest.mark.slow(seconds=5)
async def test_a_truncate_upstream_takes_a_new_snapshot_of_the_table(
    sandbox: tuple[Starlette, httpx.AsyncClient], logical_upstream: Upstream
) -> None:
    app, client = sandbox
    changes = (
        "UPDATE orders SET amount = 0 WHERE id = 1; TRUNCATE orders;"
        "INSERT INTO orders VALUES (8, 80, 'after')"
    )
    source, schema_id = await changes_synced(client, logical_upstream, changes)
    # PostHog marks a truncated table for a new snapshot; the rows the TRUNCATE removed go.
    assert warehouse_rows(app, "SELECT id, amount, note FROM postgres_orders") == [(8, 80, "after")]
    job = (await jobs_of(client, source["id"]))[0]
    logs = await sync_log(client, schema_id, instance_id=job["workflow_run_id"], level="WARNING")
    assert any("truncated" in message for _, message in log_lines(logs)), logs
    logical_upstream.execute("UPDATE orders SET amount = 81 WHERE id = 8")
    await reload_and_wait(client, source["id"], schema_id, 3)
    assert current_rows(app) == upstream_rows(logical_upstream)
    await client.delete(f"{API}/external_data_sources/{source['id']}/")
