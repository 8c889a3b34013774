"""The httpx adapter: one ``request()`` funnel for every PostHog call."""

from __future__ import annotations

import functools
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from .errors import (
    BackendUnavailable,
    MalformedResponse,
    PostHogError,
    RateLimited,
    ServerError,
    TransportError,
    error_from_response,
)
from .redact import collect_secrets, scrub

log = logging.getLogger("posthog_warehouse_mcp.http")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# PostHog's answers nest a few levels (source > schemas > table > columns); far deeper JSON
# would only exhaust the recursion of validation and serialisation further down.
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry a request that is safe to send twice."""

    attempts: int = 3
    total_wait: float = 10.0
    wait_initial: float = 0.25
    wait_max: float = 4.0


@dataclass(frozen=True)
class Reply:
    """A successful answer: status and parsed JSON body (None for an empty body)."""

    status_code: int
    body: Any


class PostHogClient:
    """Talks to one PostHog host: base URL, auth, timeouts, retries and error mapping."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        retry: RetryPolicy | None = None,
        max_response_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.http = http
        self.retry = retry or RetryPolicy()
        self.max_response_bytes = max_response_bytes

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        json_body: Mapping[str, Any] | None = None,
        retry: bool,
        api_key: str | None = None,
    ) -> Reply:
        """Send one request and return its parsed answer.

        ``retry`` says whether the request is safe to send twice (the caller knows, from the
        endpoint); it has no default, so no caller retries a request by forgetting to say.
        ``api_key`` overrides the client's key for this call (a hosted server forwarding each
        caller's own key).

        Raises:
            PostHogError: an error status, no answer, or an answer that is not JSON.
        """
        what = f"{method} {path}"
        if not retry:
            return await self._send(method, path, query, json_body, api_key, what)

        def should_retry(exc: Exception) -> bool | float:
            if isinstance(exc, RateLimited | ServerError):
                if exc.status not in RETRY_STATUSES:
                    return False
                if exc.retry_after is None:
                    return True
                # Honour Retry-After (429, or a 503 during maintenance), but never wait longer
                # than the whole retry budget: the error then says how long to wait.
                return exc.retry_after if exc.retry_after <= self.retry.total_wait else False
            return isinstance(exc, TransportError) and not isinstance(exc, BackendUnavailable)

        try:
            # Most requests succeed at once, and a retry context costs about 0.08 ms a call:
            # stamina is only entered after a first attempt that failed in a retryable way.
            return await self._send(method, path, query, json_body, api_key, what)
        except PostHogError as exc:
            if should_retry(exc) is False:
                raise
            first_failure: PostHogError | None = exc

        import stamina  # only a failed request needs it; keep it off the startup path

        async for attempt in stamina.retry_context(
            on=should_retry,
            attempts=self.retry.attempts,
            timeout=self.retry.total_wait,
            wait_initial=self.retry.wait_initial,
            wait_max=self.retry.wait_max,
        ):
            with attempt:
                if first_failure is not None:
                    # stamina takes the first attempt's failure as its own: it schedules the
                    # backoff, counts the attempt and tells its instrumentation, as ever.
                    failure, first_failure = first_failure, None
                    raise failure
                return await self._send(method, path, query, json_body, api_key, what)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        json_body: Mapping[str, Any] | None,
        api_key: str | None,
        what: str,
    ) -> Reply:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        # Credentials this request carries: an answer that echoes the request must not show them.
        secrets = [*collect_secrets(json_body or {}), *collect_secrets(query or {}), api_key or ""]
        # httpx's timeouts bound each network operation; a body that trickles in byte by byte
        # never trips them, so the whole exchange also gets one deadline.
        deadline = self.http.timeout.read
        try:
            with anyio.fail_after(deadline):
                request = self.http.build_request(
                    method, path, params=query, json=json_body, headers=headers
                )
                response = await self.http.send(request, stream=True)
                try:
                    content = await self._read_capped(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise TransportError(
                f"{what}: PostHog did not finish answering within the timeout ({deadline:g} s)."
                f"{_maybe_applied(method, None)} Try again, or raise POSTHOG_TIMEOUT."
            ) from None
        except TransportError as exc:
            # A transport that explains itself (the in-process sandbox: still starting, not
            # installed...) raises the error a model should read; only say which request.
            raise type(exc)(f"{what}: {exc.message}") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TransportError(
                f"{what}: could not reach {self.http.base_url.host or 'PostHog'} "
                f"({type(exc).__name__}). Check POSTHOG_HOST and the network."
            ) from None
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"{what}: PostHog did not answer within the timeout ({type(exc).__name__})."
                f"{_maybe_applied(method, exc)} Try again, or raise POSTHOG_TIMEOUT."
            ) from None
        except httpx.TransportError as exc:
            raise TransportError(
                f"{what}: the connection to {self.http.base_url.host or 'PostHog'} broke before "
                f"PostHog finished answering ({type(exc).__name__}).{_maybe_applied(method, exc)} "
                "Check POSTHOG_HOST and the network."
            ) from None
        log.debug("%s -> %s (%d bytes)", what, response.status_code, len(content))
        for header in ("deprecation", "sunset"):
            if header in response.headers:
                log.info("%s: %s header %s", what, header, response.headers[header])
        if response.status_code >= 400:
            raise error_from_response(
                httpx.Response(response.status_code, headers=response.headers, content=content),
                what=what,
                secrets=secrets,
            )
        if not content.strip():
            return Reply(response.status_code, None)
        try:
            body = json.loads(content)
        except (ValueError, RecursionError):
            raise MalformedResponse(
                f"{what}: PostHog answered {response.status_code} with a body that is not "
                "JSON. Check that POSTHOG_HOST points at PostHog's app host (not a proxy or "
                "the ingestion host)."
            ) from None
        if _depth_exceeds(body, MAX_JSON_DEPTH):
            raise MalformedResponse(
                f"{what}: PostHog answered with JSON nested more than {MAX_JSON_DEPTH} levels "
                "deep, which PostHog never sends. Check that POSTHOG_HOST points at PostHog."
            )
        return Reply(response.status_code, scrub(body, secrets))

    async def _read_capped(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise MalformedResponse(
                    f"{response.request.method} {response.request.url.path}: the answer is "
                    f"larger than {self.max_response_bytes // (1024 * 1024)} MB; ask for "
                    "less (limit, search)."
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _maybe_applied(method: str, exc: Exception | None) -> str:
    """A warning for a change whose request may have reached PostHog before the failure."""
    if method == "GET" or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ""
    if isinstance(exc, httpx.PoolTimeout):
        return ""  # never left this process
    return (
        " The request may have reached PostHog: check with a list or retrieve call before "
        "sending it again."
    )


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's TLS context: httpx would read the CA bundle again for each client (about
    20 ms), and a process may build several (a server per connection, a test per call)."""
    return httpx.create_ssl_context()


def build_http_client(
    *,
    base_url: str,
    api_key: str | None,
    timeout: float,
    user_agent: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """Create the pooled client the server keeps for its lifetime."""
    headers = {"User-Agent": user_agent, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        transport=transport,
        verify=tls_context(),
        follow_redirects=False,
    )


__all__ = ["PostHogClient", "PostHogError", "Reply", "RetryPolicy", "build_http_client"]
