"""Server overhead against the SDK floor, over stdio with the 2025-11-25 handshake.

The floor is ``benchmarks/floor_server.py`` (one no-op tool) plus raw httpx requests to the
same local upstream (``benchmarks/upstream.py``) that our server calls. The reference is
``benchmarks/floor_httpx_server.py``: a minimal low-level server whose one tool makes the same
GET (a source with one embedded schema, about 1.3 KB) and returns the body as it came. Runs
interleave the servers, every figure is the median of ``--runs`` runs, and each is a ratio
against a baseline measured in the same invocation.

    python -m benchmarks.overhead [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import Process

from benchmarks.upstream import SOURCE_ID

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SEQUENTIAL = int(os.environ.get("BENCH_SEQ", "200"))
CONCURRENT = 100


class Session:
    """A bare JSON-RPC client on a server's stdio: as little client overhead as possible."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.next_id = 0
        self.buffer = b""

    async def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(message).encode() + b"\n")
        return self.next_id

    async def notify(self, method: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(
            json.dumps({"jsonrpc": "2.0", "method": method}).encode() + b"\n"
        )

    async def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self.buffer:
            self.buffer += await self.process.stdout.receive()
        line, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        if "id" not in message:  # a notification
            return await self.receive()
        return message

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.send(method, params)
        reply = await self.receive()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    async def handshake(self) -> None:
        await self.call(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"},
            },
        )
        await self.notify("notifications/initialized")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_server(
    argv: Sequence[str], env: dict[str, str], tool: str, args: dict[str, Any]
) -> dict[str, float]:
    """Spawn a server and measure cold start, sequential p50, 100 concurrent, and RSS."""
    started = time.perf_counter()
    async with await anyio.open_process(
        list(argv), env=env, stderr=subprocess.DEVNULL, cwd=ROOT
    ) as process:
        session = Session(process)
        await session.handshake()
        await session.call("tools/list")
        cold = time.perf_counter() - started
        for _ in range(20):  # warm-up
            await session.call("tools/call", {"name": tool, "arguments": args})
        laps = []
        for _ in range(SEQUENTIAL):
            t0 = time.perf_counter()
            reply = await session.call("tools/call", {"name": tool, "arguments": args})
            laps.append(time.perf_counter() - t0)
        assert not reply["result"].get("isError"), reply
        t0 = time.perf_counter()
        for _ in range(CONCURRENT):
            await session.send("tools/call", {"name": tool, "arguments": args})
        for _ in range(CONCURRENT):
            reply = await session.receive()
            assert not reply["result"].get("isError"), reply
        concurrent = time.perf_counter() - t0
        memory = rss_mb(process.pid)
        assert process.stdin is not None
        await process.stdin.aclose()
        process.terminate()
    return {"cold": cold, "p50": statistics.median(laps), "concurrent": concurrent, "rss": memory}


async def raw_httpx(url: str) -> dict[str, float]:
    """The same request our server makes, sent directly: sequential p50 and 100 concurrent."""
    path = f"/api/environments/1/external_data_sources/{SOURCE_ID}/"
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(20):
            (await http.get(path)).json()
        laps = []
        for _ in range(SEQUENTIAL):
            t0 = time.perf_counter()
            (await http.get(path)).json()
            laps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(CONCURRENT):
                tg.start_soon(http.get, path)
        concurrent = time.perf_counter() - t0
    return {"p50": statistics.median(laps), "concurrent": concurrent}


async def main(runs: int) -> None:
    port = free_port()
    upstream = await anyio.open_process(
        [PY, "-m", "benchmarks.upstream", str(port)], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as probe:
            with anyio.fail_after(20):
                while True:
                    try:
                        await probe.get(url)
                        break
                    except httpx.TransportError:
                        await anyio.sleep(0.05)
        env = {
            **os.environ,
            "POSTHOG_PERSONAL_API_KEY": "phx_benchmark",
            "POSTHOG_ENVIRONMENT_ID": "1",
            "POSTHOG_HOST": url,
        }
        ours_argv = [PY, "-m", "posthog_warehouse_mcp", "--log-level", "WARNING"]
        results: dict[str, list[dict[str, float]]] = {
            "floor": [],
            "httpx": [],
            "ours": [],
            "reference": [],
            "sandbox": [],
            "floor_cold": [],
            "ours_cold": [],
        }
        for _ in range(runs):
            results["floor"].append(
                await run_server([PY, "-m", "benchmarks.floor_server"], env, "noop", {})
            )
            results["httpx"].append(await raw_httpx(url))
            results["reference"].append(
                await run_server(
                    [PY, "-m", "benchmarks.floor_httpx_server"],
                    env,
                    "external-data-sources-retrieve",
                    {"id": SOURCE_ID},
                )
            )
            retrieve = {"id": SOURCE_ID}
            results["ours"].append(
                await run_server(ours_argv, env, "external-data-sources-retrieve", retrieve)
            )
        # Cold starts are short and the machine is shared: many interleaved samples, so a busy
        # moment hits the floor and our server alike.
        for _ in range(max(10, 3 * runs)):
            results["floor_cold"].append(
                await cold_start([PY, "-m", "benchmarks.floor_server"], env)
            )
            results["ours_cold"].append(await cold_start(ours_argv, env))
            with tempfile.TemporaryDirectory() as tmp:
                sandbox_argv = [*ours_argv, "--sandbox", "--no-demo", "--sandbox-dir", tmp]
                results["sandbox"].append(await cold_start(sandbox_argv, env))
    finally:
        upstream.terminate()
        await upstream.wait()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    floor_call = med("floor", "p50") + med("httpx", "p50")
    floor_conc = med("floor", "concurrent") + med("httpx", "concurrent")
    rows = [
        (
            "cold start to tools/list",
            med("floor_cold", "cold"),
            med("ours_cold", "cold"),
            "x",
            1.15,
        ),
        ("cold start, --sandbox", med("floor_cold", "cold"), med("sandbox", "cold"), "x", 1.3),
        ("sequential tools/call p50", floor_call, med("ours", "p50"), "x", 1.3),
        (f"{CONCURRENT} concurrent tools/call", floor_conc, med("ours", "concurrent"), "x", 1.3),
        ("resident memory (MB)", med("floor", "rss"), med("ours", "rss"), "+MB", 25.0),
    ]
    reference = [
        ("sequential p50 vs reference", med("reference", "p50"), med("ours", "p50"), 1.15),
        (
            "100 concurrent vs reference",
            med("reference", "concurrent"),
            med("ours", "concurrent"),
            None,
        ),
    ]
    print(
        f"median of {runs} runs ({len(results['ours_cold'])} interleaved cold starts); "
        f"{SEQUENTIAL} sequential calls per run"
    )
    print(f"{'figure':<30}{'floor':>10}{'ours':>10}{'result':>10}{'target':>10}  ")
    for name, floor, ours, kind, target in rows:
        if kind == "x":
            value, met = ours / floor, ours / floor <= target
            shown, goal = f"{value:.2f}x", f"<={target}x"
            scale = 1000.0 if "memory" not in name else 1.0
            f_s, o_s = f"{floor * scale:.2f}ms", f"{ours * scale:.2f}ms"
        else:
            value, met = ours - floor, ours - floor <= target
            shown, goal = f"+{value:.1f}", f"<=+{target:.0f}"
            f_s, o_s = f"{floor:.1f}", f"{ours:.1f}"
        print(f"{name:<30}{f_s:>10}{o_s:>10}{shown:>10}{goal:>10}  {'met' if met else 'MISSED'}")
    print()
    print("reference: the minimal server whose tool makes the same httpx request")
    for name, ref, ours, limit in reference:
        ratio = ours / ref
        verdict = (
            "" if limit is None else f"{f'<={limit}x':>10}  {'met' if ratio <= limit else 'MISSED'}"
        )
        print(f"{name:<30}{ref * 1000:>8.2f}ms{ours * 1000:>8.2f}ms{ratio:>9.2f}x{verdict}")


async def cold_start(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Spawn to ``tools/list`` answered, and nothing else."""
    started = time.perf_counter()
    async with await anyio.open_process(
        argv, env=env, stderr=subprocess.DEVNULL, cwd=ROOT
    ) as process:
        session = Session(process)
        await session.handshake()
        await session.call("tools/list")
        cold = time.perf_counter() - started
        assert process.stdin is not None
        await process.stdin.aclose()
        process.terminate()
    return {"cold": cold}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    anyio.run(main, parser.parse_args().runs)
