"""Fixtures, and where the run keeps its scratch files; the helpers the tests share are in
tests/support.py."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The tests' sandboxes (SQLite, DuckDB) and embedded servers create, fsync and delete thousands
# of small files, several times slower on a disk than in memory. Unless TMPDIR says where,
# pytest's tmp_path and every tempfile (in this process, its xdist workers and the servers they
# start) go to /dev/shm when it has room.
MEMORY = Path("/dev/shm")
MEMORY_NEEDED = 2 * 1024**3


def pytest_configure(config: pytest.Config) -> None:
    # xdist's workers must collect the same test ids, and some ids print a set: one hash seed
    # for them all, still a new one each run (see the report header) unless already set.
    if not hasattr(config, "workerinput"):
        os.environ.setdefault("PYTHONHASHSEED", str(random.randint(1, 2**32 - 1)))
    if "TMPDIR" in os.environ or not os.access(MEMORY, os.W_OK | os.X_OK):
        return
    if shutil.disk_usage(MEMORY).free >= MEMORY_NEEDED:
        os.environ["TMPDIR"] = str(MEMORY)
        tempfile.tempdir = None  # gettempdir() looks again
        config.stash[_chosen] = True


def pytest_unconfigure(config: pytest.Config) -> None:
    shared = config.stash.get(_shared, None)
    if shared is not None:
        from tests.sandbox.servers import stop_shared

        stop_shared(shared)
    if config.stash.get(_chosen, False):
        del os.environ["TMPDIR"]
        tempfile.tempdir = None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist's workers share the run's embedded PostgreSQL (tests/sandbox/servers.py): whichever
    needs it first starts it in this folder, and the controller stops it when the run ends."""
    from tests.sandbox.servers import SHARED_SERVERS

    if _shared not in node.config.stash:
        node.config.stash[_shared] = Path(tempfile.mkdtemp(prefix="pytest-servers-"))
    node.workerinput[SHARED_SERVERS] = str(node.config.stash[_shared])


_chosen = pytest.StashKey[bool]()
_shared = pytest.StashKey[Path]()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: the fast set spends about a third of its time waiting (for a sync thread, a
    subprocess, a socket), so it runs one more worker than there are cores; the slow set, whose
    soaks and replicas keep their cores busy, runs one a core."""
    cores = os.cpu_count() or 1
    fast_set = "not slow" in (config.getoption("markexpr") or "")
    return cores + 1 if fast_set else cores


def pytest_report_header() -> str:
    return f"PYTHONHASHSEED={os.environ.get('PYTHONHASHSEED', 'random')}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A few slow tests take half a minute to a minute and a half, the rest seconds. Marked
    # `slow(seconds=...)` (about how long each takes alone), they start first, longest first:
    # xdist's workers take them one each and share out the rest meanwhile, instead of waiting
    # for them at the end; and the two soaks, each busy on more than a core, do not start
    # together.
    items.sort(key=lambda item: -_seconds(item))


def _seconds(item: pytest.Item) -> float:
    slow = item.get_closest_marker("slow")
    return float(slow.kwargs.get("seconds", 0)) if slow is not None else 0.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True, scope="session")
def _schemas_checked_once() -> Iterator[None]:
    """Each tool's output schema is checked against the JSON Schema metaschema once a process.

    The MCP client checks a tool's output schema at its first call in a session: about 15 ms a
    schema with jsonschema's 2020-12 metaschema, and the tests open a thousand sessions on the
    same few dozen schemas (about 7 CPU seconds a run). The check depends on the schema alone:
    one that passed passes again, and one that fails is checked, and fails, every time."""
    from jsonschema import Draft202012Validator

    check = Draft202012Validator.check_schema
    passed: set[str] = set()

    def check_once(schema: Any, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:  # another format checker: not what the client asks
            return check(schema, *args, **kwargs)
        key = json.dumps(schema, sort_keys=True)
        if key not in passed:
            check(schema)
            passed.add(key)
        return None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Draft202012Validator, "check_schema", staticmethod(check_once))
        yield


@pytest.fixture(autouse=True, scope="session")
def _one_default_tls_context() -> Iterator[None]:
    """Every httpx client with the default certificate check shares one TLS context a process.

    httpx reads the CA bundle again for each client it builds (about 40 ms); the tests build
    a client per test, a server per call, and a sign-in's each request, about 80 a run (3 CPU
    seconds). The server does the same (tools/client.py, `tls_context`). A context built for
    anything else (a test CA, a client certificate) is built as before."""
    import httpx._transports.default as transports

    build = transports.create_ssl_context
    shared: list[Any] = []

    def build_once(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert is not None or not trust_env:
            return build(verify=verify, cert=cert, trust_env=trust_env)
        if not shared:
            shared.append(build(verify=True, cert=None, trust_env=True))
        return shared[0]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transports, "create_ssl_context", build_once)
        yield


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers the tests start (in process or as subprocesses) keep their state here, not in
    the home directory."""
    previous = os.environ.get("POSTHOG_STATE_DIR")
    os.environ["POSTHOG_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if previous is None:
        os.environ.pop("POSTHOG_STATE_DIR", None)
    else:
        os.environ["POSTHOG_STATE_DIR"] = previous
