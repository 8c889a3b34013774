"""Three stateless replicas behind HAProxy, sharing one Redis, against one standalone sandbox
standing in for PostHog: the deployment docs/deploy.md describes, with the balancer
configuration read from that page.

Each test starts its own: the sandbox (``--api-key``), ``redis-server`` on a loopback port with
nothing kept on disk, three servers (``--transport http --stateless --forward-key --confirm
token``, one ``POSTHOG_CONFIRM_SECRET``) each on its own port, and ``haproxy`` (round robin, no
affinity) in front. Skipped, saying what to install, without redis-server or haproxy.

The last test runs the replicas with ``--oauth`` instead (the balancer's URL as the public
URL): the official MCP client signs in with the sandbox's PostHog OAuth through the balancer.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process

from tests.sandbox.support import API, ROOT, Upstream, create_source, sandbox_process
from tests.support import clean_env, eventually, free_port, installed, redis_server, terminate

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEY = "phx_replicasKEY0123456789abcdef"
SECRET = "replicas-confirm-secret-0123456789abcdef"
# A Fernet key (32 bytes, url-safe base64) the OAuth replicas share.
OAUTH_KEY = "cmVwbGljYXMtb2F1dGgta2V5LTAxMjM0NTY3ODlhYmM="
REPLICAS = 3
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


def haproxy_config(port: int, replicas: list[int]) -> str:
    """docs/deploy.md's HAProxy configuration, bound to ``port`` and sending to ``replicas``
    (the only changes: addresses)."""
    page = (ROOT / "docs" / "deploy.md").read_text()
    found = re.search(r"<!-- haproxy\.cfg:.*?-->\n```haproxy\n(.*?)```", page, re.S)
    assert found is not None, "docs/deploy.md has no haproxy.cfg block"
    config, binds = re.subn(r"^(\s*bind )\S+", rf"\g<1>127.0.0.1:{port}", found[1], flags=re.M)
    ports = iter(replicas)
    config, servers = re.subn(
        r"^(\s*server \S+ )\S+", lambda m: f"{m[1]}127.0.0.1:{next(ports)}", config, flags=re.M
    )
    assert (binds, servers) == (1, len(replicas)), "the recipe's bind or servers changed shape"
    return config


@dataclass
class Deployment:
    """The balancer's URL, each replica by its port, and the sandbox's API."""

    url: str
    replicas: dict[int, Process]
    sandbox: httpx.AsyncClient
    logs: Path
    redis_url: str
    killed: list[int] = field(default_factory=list)

    def replica_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def kill(self, port: int) -> None:
        """SIGKILL one replica: no graceful end for the requests it holds."""
        self.replicas[port].send_signal(signal.SIGKILL)
        self.killed.append(port)


async def until_answers(
    url: str, *, process: Process | None = None, within: float = 60, **headers: str
) -> None:
    """Return once ``url`` answers 200."""
    async with httpx.AsyncClient(timeout=5, headers=headers) as probe:

        async def up() -> bool | None:
            if process is not None:
                assert process.returncode is None, f"exited with {process.returncode}"
            try:
                answer = await probe.get(url)
            except httpx.TransportError:
                return None
            return True if answer.status_code == 200 else None

        await eventually(up, within=within, every=0.1)


@asynccontextmanager
async def deployment(
    tmp_path: Path, *, oauth: bool = False, **env: str
) -> AsyncIterator[Deployment]:
    """Start the sandbox, Redis, three replicas and HAProxy; stop them all after the block.

    The replicas take each caller's PostHog key (--forward-key), or, with `oauth`, sign
    people in with the sandbox's PostHog OAuth (--oauth, the balancer's URL as public URL)."""
    haproxy = installed("haproxy", "haproxy")
    installed("redis-server", "redis-server")
    logs = tmp_path / "logs"
    logs.mkdir()
    sandbox_port = free_port()
    async with AsyncExitStack() as stack:
        stack.enter_context(sandbox_process(tmp_path / "sandbox", sandbox_port, "--api-key", KEY))
        upstream = f"http://127.0.0.1:{sandbox_port}"
        sandbox = await stack.enter_async_context(
            httpx.AsyncClient(base_url=upstream, headers={"Authorization": f"Bearer {KEY}"})
        )
        await until_answers(
            f"{upstream}{API}/external_data_sources/?limit=1", Authorization=f"Bearer {KEY}"
        )
        redis_url = await stack.enter_async_context(redis_server(tmp_path / "redis"))
        balancer = free_port()
        url = f"http://127.0.0.1:{balancer}"
        how = ["--oauth", "--public-url", url] if oauth else ["--forward-key"]
        if oauth:
            env = {"POSTHOG_OAUTH_KEYS": OAUTH_KEY, **env}
        replicas: dict[int, Process] = {}
        for n in range(REPLICAS):
            port = free_port()
            argv = [sys.executable, "-m", "posthog_warehouse_mcp", "--transport", "http"]
            argv += ["--stateless", *how, "--confirm", "token", "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--posthog-host", upstream, "--environment-id", "1"]
            variables = clean_env(
                PYTHONPATH=str(ROOT),
                POSTHOG_REDIS_URL=redis_url,
                POSTHOG_CONFIRM_SECRET=SECRET,
                POSTHOG_STATE_DIR=str(tmp_path / f"state-{n}"),
                POSTHOG_LOG_LEVEL="WARNING",
                **env,
            )
            log = stack.enter_context((logs / f"replica-{n}.log").open("wb"))
            process = await anyio.open_process(
                argv, env=variables, stdout=subprocess.DEVNULL, stderr=log
            )
            stack.push_async_callback(terminate, process, within=30)
            replicas[port] = process
        for port, process in replicas.items():
            await until_answers(f"http://127.0.0.1:{port}/health", process=process)
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(balancer, list(replicas)))
        log = stack.enter_context((logs / "haproxy.log").open("wb"))
        proxy = await anyio.open_process(
            [haproxy, "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT
        )
        stack.push_async_callback(terminate, proxy, within=10)
        await until_answers(f"{url}/health", process=proxy)
        yield Deployment(url, replicas, sandbox, logs, redis_url)


async def call(
    http: httpx.AsyncClient, url: str, name: str, args: dict[str, Any], *, key: str = KEY
) -> httpx.Response:
    """One stateless ``tools/call`` POSTed to ``url``."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    body["params"] = {"name": name, "arguments": args}
    return await http.post(
        f"{url}/mcp", json=body, headers={**HEADERS, "Authorization": f"Bearer {key}"}
    )


def result(answer: httpx.Response) -> dict[str, Any]:
    """The tool result of an HTTP answer that must be 200."""
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["result"]
    return found


def text(found: dict[str, Any]) -> str:
    return str(found["content"][0]["text"])


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def test_a_token_replayed_on_every_replica_acts_once(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    async with deployment(tmp_path) as hosted, httpx.AsyncClient(timeout=60) as http:
        source = await create_source(hosted.sandbox, upstream, [{"name": "orders"}])
        tool, args = "external-data-sources-destroy", {"id": source["id"]}
        asked = result(await call(http, hosted.url, tool, args))["structuredContent"]
        assert asked["confirmation_required"] is True
        confirmed = {**args, "confirmation_token": asked["confirmation_token"]}
        # The same token at once on every replica, bypassing the balancer, then through it.
        answers: dict[int, dict[str, Any]] = {}

        async def replay(port: int) -> None:
            answers[port] = result(await call(http, hosted.replica_url(port), tool, confirmed))

        async with anyio.create_task_group() as tg:
            for port in hosted.replicas:
                tg.start_soon(replay, port)
        again = result(await call(http, hosted.url, tool, confirmed))
        gone = await hosted.sandbox.get(f"{API}/external_data_sources/{source['id']}/")
    acted = [port for port, found in answers.items() if not found["isError"]]
    assert len(acted) == 1, answers
    refused = [text(found) for found in [*answers.values(), again] if found["isError"]]
    assert len(refused) == REPLICAS
    assert all("used already" in reason for reason in refused), refused
    assert gone.status_code == 404


async def test_a_rate_limit_holds_across_replicas(tmp_path: Path) -> None:
    limit = 30
    # 45 requests round robin are 15 a replica: a replica counting alone never refuses one.
    count = limit + 15
    async with (
        deployment(tmp_path, POSTHOG_MCP_RATE_LIMIT_PER_MINUTE=str(limit)) as hosted,
        httpx.AsyncClient(timeout=60) as http,
    ):
        # Start well inside a minute's window (a precondition: the count resets at its end).
        while time.time() % 60 > 40:  # noqa: ASYNC110 (waiting for the clock is the point)
            await anyio.sleep(1)
        args = {"limit": 1}
        statuses = []
        with anyio.fail_after(60):
            for _ in range(count):
                answer = await call(http, hosted.url, "external-data-sources-list", args)
                statuses.append(answer.status_code)
                if answer.status_code == 429:
                    refused = answer
        other = await call(http, hosted.url, "external-data-sources-list", args, key="phx_other1")
    assert statuses == [200] * limit + [429] * (count - limit)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "30 requests a minute" in refused.json()["error"]["message"]
    # Another caller is counted apart (its key is unknown upstream: a tool error, not a 429).
    assert other.status_code == 200


async def test_a_client_keeps_working_while_a_replica_is_killed(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    workers, each, kill_after = 4, 40, 50
    payload = upstream.payload([{"name": "orders", "should_sync": False}])
    outcomes: list[tuple[str, str]] = []  # (prefix, "ok" or what failed)
    async with deployment(tmp_path) as hosted, httpx.AsyncClient(timeout=60) as http:
        victim = list(hosted.replicas)[1]

        async def worker(w: int) -> None:
            for n in range(each):
                prefix = f"w{w}n{n}_"
                args = {"source_type": "Postgres", "payload": payload, "prefix": prefix}
                try:
                    answer = await call(http, hosted.url, "external-data-sources-create", args)
                except httpx.TransportError as exc:
                    outcomes.append((prefix, type(exc).__name__))
                    continue
                if answer.status_code != 200:
                    outcomes.append((prefix, f"HTTP {answer.status_code}"))
                elif answer.json()["result"]["isError"]:
                    outcomes.append((prefix, text(answer.json()["result"])))
                else:
                    outcomes.append((prefix, "ok"))
                if len(outcomes) == kill_after:
                    hosted.kill(victim)

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                for w in range(workers):
                    tg.start_soon(worker, w)
        listed = await hosted.sandbox.get(f"{API}/external_data_sources/", params={"limit": 1000})
        prefixes = [s["prefix"] for s in listed.json()["results"]]
    assert hosted.killed == [victim]
    failed = [(prefix, why) for prefix, why in outcomes if why != "ok"]
    print(f"{len(outcomes)} calls, a replica killed after {kill_after}: {len(failed)} failed")
    # At most the calls in flight on the killed replica fail: the balancer answers 502, or
    # closes the connection without an answer (the call's outcome is then unknown to the client).
    assert len(failed) <= workers, failed
    assert all(why in ("HTTP 502", "RemoteProtocolError") for _, why in failed), failed
    assert (
        sum(why == "ok" for _, why in outcomes[kill_after:]) >= len(outcomes[kill_after:]) - workers
    )
    # Nothing was applied twice: no prefix exists twice; every answered call's source exists.
    assert len(prefixes) == len(set(prefixes))
    assert {prefix for prefix, why in outcomes if why == "ok"} <= set(prefixes)


async def test_ten_thousand_calls_through_the_balancer_leave_every_replica_flat(
    tmp_path: Path,
) -> None:
    calls, warm_up, workers, growth_limit_mb = 10_000, 1_500, 8, 15.0
    no_limits = {"POSTHOG_MCP_RATE_LIMIT_PER_MINUTE": "0", "POSTHOG_MCP_RATE_LIMIT_PER_HOUR": "0"}
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "external-data-sources-list", "arguments": {"limit": 1}},
        }
    ).encode()
    headers = {**HEADERS, "Authorization": f"Bearer {KEY}"}
    async with deployment(tmp_path, **no_limits) as hosted:
        port = int(hosted.url.rsplit(":", 1)[1])

        def share(count: int) -> list[str]:
            """``count`` calls on one keep-alive connection; the unexpected answers."""
            errors = []
            http = HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                for _ in range(count):
                    try:
                        http.request("POST", "/mcp", body=body, headers=headers)
                        answer = http.getresponse()
                        raw = answer.read()
                    except (OSError, HTTPException) as exc:
                        errors.append(type(exc).__name__)
                        http.close()
                        http = HTTPConnection("127.0.0.1", port, timeout=60)
                        continue
                    if answer.status != 200 or json.loads(raw)["result"]["isError"]:
                        errors.append(f"{answer.status}: {raw[:200]!r}")
            finally:
                http.close()
            return errors

        async def run(count: int) -> list[str]:
            found: list[str] = []

            async def one(n: int) -> None:
                found.extend(await anyio.to_thread.run_sync(share, (count + n) // workers))

            with anyio.fail_after(600):
                async with anyio.create_task_group() as tg:
                    for n in range(workers):
                        tg.start_soon(one, n)
            return found

        assert await run(warm_up) == []
        pids = {port: process.pid for port, process in hosted.replicas.items()}
        before = {port: rss_mb(pid) for port, pid in pids.items()}
        started = time.monotonic()
        errors = await run(calls)
        seconds = time.monotonic() - started
        after = {port: rss_mb(pid) for port, pid in pids.items()}
    figures = ", ".join(f"{before[p]:.1f} -> {after[p]:.1f} MB" for p in pids)
    print(f"{calls} calls in {seconds:.0f} s, {len(errors)} errors; replicas {figures}")
    assert errors == []
    for p in pids:
        assert after[p] - before[p] < growth_limit_mb, figures


async def test_people_sign_in_with_posthog_through_the_balancer_and_call_as_themselves(
    tmp_path: Path,
) -> None:
    from posthog_warehouse_mcp.server.oauth.vault import Cipher, Vault
    from posthog_warehouse_mcp.server.shared import RedisStore
    from tests.signin import Person, Storage, call_tool, oauth_client, revoke

    async with (
        deployment(tmp_path, oauth=True) as hosted,
        httpx.AsyncClient(timeout=60) as http,
    ):
        sandbox_url = str(hosted.sandbox.base_url).rstrip("/")
        person, storage = Person(sandbox_url), Storage()
        auth = oauth_client(hosted.url, person, storage)
        listed = await call_tool(hosted.url, auth, "external-data-sources-list", {})
        assert storage.tokens is not None and storage.client is not None
        token = storage.tokens.access_token
        # Every replica takes the token (round robin: each of these reaches another one).
        spread = [await call(http, hosted.url, "external-data-sources-list", {}, key=token)]
        spread += [await call(http, hosted.url, "external-data-sources-list", {}, key=token)]
        spread += [await call(http, hosted.url, "external-data-sources-list", {}, key=token)]
        store = RedisStore(hosted.redis_url)
        vault = Vault(store, Cipher([OAUTH_KEY]))
        async with store.running():
            record = await vault.get("access", token)
            assert record is not None
            grant = await vault.get("grant", record["grant"])
            assert grant is not None
            # PostHog's token for this person is not this server's token (no passthrough).
            posthog_token = str(grant["access_token"])
            passthrough = await call(
                http, hosted.url, "external-data-sources-list", {}, key=posthog_token
            )
            # The person's PostHog token is about to expire: calls at once on every replica
            # refresh it once (a second refresh would use a spent refresh token, and PostHog
            # would end the sign-in).
            await vault.put("grant", grant["id"], {**grant, "expires_at": time.time()}, 600)
            async with anyio.create_task_group() as tg:
                answers: list[httpx.Response] = []

                async def listing() -> None:
                    answers.append(
                        await call(http, hosted.url, "external-data-sources-list", {}, key=token)
                    )

                for _ in range(6):
                    tg.start_soon(listing)
            refreshed = await vault.get("grant", grant["id"])
            # Tokens for another audience, and expired ones, are refused by every replica.
            other = {**record, "resource": "https://elsewhere.example/mcp"}
            await vault.put("access", "another-audience-token", other, 600)
            expired = {**record, "expires_at": int(time.time()) - 5}
            await vault.put("access", "an-expired-token", expired, 600)
            wrong_audience = [
                await call(
                    http, hosted.url, "external-data-sources-list", {}, key="another-audience-token"
                )
                for _ in range(REPLICAS)
            ]
            too_old = [
                await call(
                    http, hosted.url, "external-data-sources-list", {}, key="an-expired-token"
                )
                for _ in range(REPLICAS)
            ]
        revoked = await revoke(http, hosted.url, storage, token)
        after = [
            await call(http, hosted.url, "external-data-sources-list", {}, key=token)
            for _ in range(REPLICAS)
        ]
        at_posthog = await http.get(
            f"{sandbox_url}{API}/external_data_sources/",
            headers={"Authorization": f"Bearer {posthog_token}"},
        )
    assert "results" in listed
    assert [a.status_code for a in spread] == [200] * 3
    assert all(not result(a)["isError"] for a in spread)
    assert passthrough.status_code == 401
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert all(not result(a)["isError"] for a in answers)
    assert refreshed is not None and refreshed["access_token"] != posthog_token
    assert revoked.status_code == 200
    for refused in [*wrong_audience, *too_old, *after]:
        assert refused.status_code == 401
        assert "resource_metadata=" in refused.headers["www-authenticate"]
    # Revoking here ended the sign-in at PostHog too.
    assert at_posthog.status_code == 401
