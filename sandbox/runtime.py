"""Start and stop a sandbox: metadata store, warehouse, sync engine, scheduler and demo database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from starlette.applications import Starlette

from .api import build_app
from .cloud_rules import CloudRules
from .demo import DemoDatabase, register_demo_source, start_demo_database
from .engine import SyncEngine
from .query_pool import QueryLimits
from .services import Services
from .store import Store, now
from .warehouse import Warehouse

logger = logging.getLogger(__name__)

SCHEDULER_TICK_SECONDS = 15.0
# How often the CDC slot sweeper runs (PostHog runs its sweeper on a schedule of its own).
CDC_SWEEP_SECONDS = 300.0
DEMO_UNDER_CLOUD_RULES = (
    "cloud rules on: new sources must have a public host and, for Postgres, TLS. The demo "
    "database (127.0.0.1, no TLS) is already registered; a create with its credentials is "
    "refused, as PostHog Cloud would refuse it."
)


@asynccontextmanager
async def open_sandbox(
    directory: Path,
    *,
    api_key: str | None = None,
    demo: bool = True,
    scheduler_tick: float = SCHEDULER_TICK_SECONDS,
    cdc_sweep: float = CDC_SWEEP_SECONDS,
    cloud_rules: CloudRules | None = None,
    query_limits: QueryLimits | None = None,
) -> AsyncIterator[Starlette]:
    """Start a sandbox in `directory` and yield its ASGI app; stop everything on exit.

    `api_key=None` accepts any bearer (or none). The app's `state.services` holds the store,
    warehouse and engine. `cloud_rules` makes new sources meet PostHog Cloud's host and TLS
    rules (the demo database, on loopback without TLS, would not). `query_limits` changes what
    a query may take (time, turns, memory). `cdc_sweep`: seconds between passes of the CDC slot
    sweeper (`Services.sweep_cdc_slots`).

    Raises:
        DirectoryInUse: another process serves `directory`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    store = Store(directory / "metadata.sqlite3")
    try:
        warehouse = await anyio.to_thread.run_sync(
            lambda: Warehouse(directory / "warehouse.duckdb", staging_dir=directory / "staging")
        )
    except BaseException:
        store.close()
        raise
    demo_server = None
    engine: SyncEngine | None = None
    try:
        if demo:
            demo_server, database = await anyio.to_thread.run_sync(
                lambda: start_demo_database(directory)
            )
            await anyio.to_thread.run_sync(
                lambda: register_demo_source(store, database, demo_server.moved_from)
            )
        else:
            database = DemoDatabase.recorded(directory)
        engine = SyncEngine(store, warehouse, directory / "staging", demo=database)
        await anyio.to_thread.run_sync(engine.recover)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_schedule, engine, scheduler_tick)
            services = Services(
                store,
                warehouse,
                engine,
                cloud_rules=cloud_rules,
                query_limits=query_limits,
                demo=database,
            )
            tg.start_soon(_sweep_cdc_slots, services, cdc_sweep)
            try:
                if cloud_rules is not None and demo:
                    logger.info(DEMO_UNDER_CLOUD_RULES)
                yield build_app(services, api_key=api_key)
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await services.queries.aclose()
    finally:
        with anyio.CancelScope(shield=True):
            if engine is not None:
                await anyio.to_thread.run_sync(engine.shutdown)
            await anyio.to_thread.run_sync(warehouse.close)
            store.close()
            if demo_server is not None:
                await anyio.to_thread.run_sync(demo_server.stop)


async def _schedule(engine: SyncEngine, tick: float) -> None:
    """Start the syncs that schedules say are due, every `tick` seconds."""
    while True:
        await anyio.sleep(tick)
        for schema in engine.due(now()):
            logger.info("scheduled sync of %s", schema.name)
            engine.start(schema.id)


async def _sweep_cdc_slots(services: Services, interval: float) -> None:
    """Run the CDC slot sweeper every `interval` seconds; a pass that fails is logged, and the
    next one runs all the same."""
    while True:
        await anyio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(services.sweep_cdc_slots)
        except Exception:
            logger.warning("the CDC slot sweep failed", exc_info=True)
