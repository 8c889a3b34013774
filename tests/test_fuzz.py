"""Property-based fuzzing of every tool's arguments through a real MCP client.

Valid arguments are generated from each tool's advertised input schema (the JSON schema a model
reads), invalid ones by mutating them. The row's params model is the oracle for validity. For
every example: the call returns a result (never a protocol error), no exception text reaches
the client, invalid input sends nothing, and valid input sends exactly one request whose path
is the row's template under the environment base.

hypothesis-jsonschema 0.23.1 fails on this Hypothesis version (6.170: ``'many' object has no
attribute 'more'``), so the schema strategies are written here for the keywords the tool
schemas use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import anyio.from_thread
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from posthog_warehouse_mcp.tools.definitions import definition
from posthog_warehouse_mcp.tools.models import SchemaSettings
from posthog_warehouse_mcp.tools.redact import is_secret_key
from posthog_warehouse_mcp.tools.table import BY_NAME, ENDPOINTS, Endpoint
from tests.cases import LOCAL, PLAN_ID, READ_THEN_WRITE, SEVERAL_READS, with_plan
from tests.support import SOURCE_ID, Recorder, connect, text_of

EXAMPLES = 25  # per tool, per kind (valid, invalid), per protocol mode
SAMPLE = 4  # the same, in the default run; `-m slow` runs all EXAMPLES
BASE = "/api/environments/42/"
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,  # the same examples on every run: CI never flakes on a new draw
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def schema_settings() -> st.SearchStrategy[Any]:
    """A plan's `set`: the fields of external-data-schemas-partial-update, which the plan tool
    names by reference rather than repeating their schema, with values that tool's schema
    allows."""
    schema = dict(definition(BY_NAME["external-data-schemas-partial-update"])["inputSchema"])
    fields = {k: v for k, v in schema["properties"].items() if k in SchemaSettings.model_fields}
    node = {"properties": fields, "additionalProperties": False}
    return valid_object(node, schema.get("$defs", {}))


# The server waits for syncs when asked; a fuzzed wait would only make the test slow.
VALID_OVERRIDES: dict[str, st.SearchStrategy[Any]] = {
    "wait_seconds": st.just(0),
    "set": st.deferred(schema_settings),
}
TRAVERSAL = [
    "../../projects/1",
    "..%2F..%2Fprojects%2F1",
    "%2e%2e/",
    "0b5e6f1c-3f0a-4c55-9a57-5d4f4a0c2b11/../../x",
    "0b5e6f1c-3f0a-4c55-9a57-5d4f4a0c2b11/",
    "0b5e6f1c-3f0a-4c55-9a57-5d4f4a0c2b11?x=1",
    "0b5e6f1c-3f0a-4c55-9a57-5d4f4a0c2b11#x",
    " 0b5e6f1c-3f0a-4c55-9a57-5d4f4a0c2b11",
    "0b5e6f1c-3f0a-4c55-9a57-5d4f4a0c2b1",
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    "",
    "null",
    "\x00",
    "/",
    "..",
]
LEAKS = re.compile(r"Traceback|File \"|pydantic_core|ValidationError|Exception|<class |\bat 0x")

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# ------------------------------------------------------------------ schema -> strategy


def resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """Inline a ``$ref`` (siblings such as ``description`` are kept)."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        node = {**defs[ref.rsplit("/", 1)[-1]], **node}
    return node


def types_of(node: Mapping[str, Any]) -> list[str]:
    if "anyOf" in node:
        return [kind for branch in node["anyOf"] for kind in types_of(branch)]
    kind = node.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def valid_value(node: Mapping[str, Any], defs: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema ``node`` allows."""
    node = resolve(node, defs)
    if "anyOf" in node:
        siblings = {k: v for k, v in node.items() if k != "anyOf"}
        return st.one_of([valid_value({**siblings, **branch}, defs) for branch in node["anyOf"]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    options = [valid_of_type(kind, node, defs) for kind in types_of(node)]
    return st.one_of(options) if options else JSON


def valid_of_type(kind: str, node: Mapping[str, Any], defs: Mapping[str, Any]) -> Any:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = node.get("minimum", -(2**31))
        return st.integers(min_value=low, max_value=node.get("maximum", 2**31))
    if kind == "number":
        return st.integers(-(2**31), 2**31) | st.floats(allow_nan=False, allow_infinity=False)
    if kind == "string":
        if node.get("format") == "uuid":
            return st.uuids().flatmap(
                lambda u: st.sampled_from([str(u), str(u).upper(), u.hex, f"{{{u}}}"])
            )
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= node.get("maxLength", 10**6)
            )
        return st.text(
            min_size=node.get("minLength", 0), max_size=min(node.get("maxLength", 60), 60)
        )
    if kind == "array":
        items = valid_value(node.get("items", {}), defs)
        most = min(node.get("maxItems", 4), 4)
        return st.lists(items, min_size=node.get("minItems", 0), max_size=most)
    if kind == "object":
        return valid_object(node, defs)
    raise AssertionError(f"schema type {kind} has no strategy")


def credentials_as_text(value: Any) -> Any:
    """``value`` with every credential-named field that is neither text, an object nor null
    turned into text, at any depth."""
    if isinstance(value, list):
        return [credentials_as_text(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {
        k: json.dumps(v)
        if is_secret_key(k) and not (v is None or isinstance(v, str | dict))
        else credentials_as_text(v)
        for k, v in value.items()
    }


def valid_object(node: Mapping[str, Any], defs: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    properties: dict[str, Any] = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    if not properties:
        if extra is False:  # an object that takes nothing
            return st.just({})
        values = JSON if extra is True else valid_value(extra, defs)
        free = st.dictionaries(st.text(max_size=12), values, max_size=4)
        # An object whose fields the schema leaves open (a connection payload) takes any
        # JSON, except that a credential is text (or a reference): the server's documented rule.
        return free.map(credentials_as_text)
    required = set(node.get("required", []))

    def prop(name: str) -> st.SearchStrategy[Any]:
        if name in VALID_OVERRIDES:
            return VALID_OVERRIDES[name]
        return valid_value(properties[name], defs)

    return st.fixed_dictionaries(
        {name: prop(name) for name in properties if name in required},
        optional={name: prop(name) for name in properties if name not in required},
    )


def wrong_value(node: Mapping[str, Any], defs: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the wrong type, out of range, too long, or hostile for this property."""
    node = resolve(node, defs)
    kinds = set(types_of(node))
    choices: list[st.SearchStrategy[Any]] = [
        st.dictionaries(st.text(max_size=5), JSON_SCALARS, min_size=1, max_size=3),
        st.lists(JSON_SCALARS, min_size=1, max_size=3),
    ]
    if "null" not in kinds:
        choices.append(st.none())
    if not kinds & {"integer", "number", "boolean"}:
        choices.append(st.booleans() | st.integers())
    if "string" not in kinds or "enum" in node or "format" in node or "pattern" in node:
        choices.append(st.sampled_from(TRAVERSAL) | st.text(max_size=40))
    if "string" in kinds:
        choices.append(st.sampled_from(["x" * 100_000, "../" * 30_000]))
    if "integer" in kinds:
        choices.append(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f % 1))
        if "maximum" in node:
            choices.append(st.integers(min_value=node["maximum"] + 1))
        if "minimum" in node:
            choices.append(st.integers(max_value=node["minimum"] - 1))
    if "array" in kinds:
        if node.get("minItems"):
            choices.append(st.just([]))
        if "maxItems" in node:
            too_many = node["maxItems"] + 1
            items = valid_value(node.get("items", {}), defs)
            choices.append(st.lists(items, min_size=too_many, max_size=too_many))
        choices.append(st.lists(st.dictionaries(st.text(max_size=3), JSON_SCALARS), min_size=1))
    return st.one_of(choices)


def invalid_arguments(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid argument object with one thing broken."""
    # Each strategy is built once, not at every draw: a new strategy object makes Hypothesis
    # work out its properties again (most of the fuzz's CPU time).
    defs = schema.get("$defs", {})
    valid = valid_object(schema, defs)
    properties: dict[str, Any] = schema["properties"]
    wrong = {name: wrong_value(properties[name], defs) for name in sorted(properties)}
    required = list(schema.get("required", []))
    mutations = (
        ["unknown key"]
        + (["wrong value"] if properties else [])
        + (["missing required"] if required else [])
    )
    unknown_keys = st.sampled_from(
        ["ID", "id ", "environment_id", "../id", "password", "__proto__"]
    ) | st.text(min_size=1, max_size=20)

    @st.composite
    def broken(draw: st.DrawFn) -> dict[str, Any]:
        args: dict[str, Any] = dict(draw(valid))
        mutation = draw(st.sampled_from(mutations))
        if mutation == "unknown key":
            key = draw(unknown_keys)
            if key in properties:
                key += "_x"
            args[key] = draw(JSON)
        elif mutation == "missing required":
            del args[draw(st.sampled_from(required))]
        else:
            name = draw(st.sampled_from(sorted(properties)))
            args[name] = draw(wrong[name])
        return args

    return broken()


# ------------------------------------------------------------------ the MCP client


class Session:
    """One MCP client per protocol mode for the whole module, driven from sync tests."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, client: Client, rec: Recorder):
        self.portal = portal
        self.client = client
        self.recorder = rec

    def call(self, row: Endpoint, arguments: dict[str, Any]) -> Any:
        self.recorder.seen.clear()
        self.recorder.answer_as(row)
        return self.portal.call(self.client.call_tool, row.name, arguments)

    def planned(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``arguments`` with a plan id this server made (a plan id is signed; no generated
        one is valid), for the source the plan is of."""
        self.recorder.answer_as(BY_NAME["external-data-schemas-plan"])
        wanted = {**arguments, "id": SOURCE_ID, "plan_id": PLAN_ID}
        return dict(self.portal.call(with_plan, self.client, wanted))


@pytest.fixture(scope="module", params=["legacy", "auto"])
def session(request: pytest.FixtureRequest) -> Iterator[Session]:
    recorder = Recorder()
    with (
        anyio.from_thread.start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(connect(recorder, mode=request.param)) as client,
    ):
        yield Session(portal, client, recorder)


def path_pattern(row: Endpoint) -> re.Pattern[str]:
    uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    path = re.sub(r"\\\{\w+\\\}", uuid, re.escape(row.path))  # every placeholder is an id
    return re.compile(re.escape(BASE) + path + r"\Z")


def check(session: Session, row: Endpoint, arguments: dict[str, Any]) -> bool:
    """Call the tool once and check every property; return whether the input was valid."""
    if row.name in READ_THEN_WRITE and isinstance(arguments.get("plan_id"), str):
        arguments = session.planned(arguments)
    try:
        params = row.params.model_validate(arguments)
    except pydantic.ValidationError:
        params = None
    result = session.call(row, arguments)  # raises on a protocol-level error
    texts = [str(getattr(item, "text", "")) for item in result.content]
    for text in texts:
        assert not LEAKS.search(text), text[:500]
    seen = session.recorder.seen
    if params is None:
        assert result.is_error is True
        assert texts[0].startswith(f"Invalid arguments for {row.name}; nothing was sent."), texts
        assert seen == []
        return False
    if row.name in LOCAL:  # accepted and answered here (no generated database is there)
        assert not texts[0].startswith("Invalid arguments"), texts
        assert seen == []
        return True
    assert result.is_error is False, texts
    assert result.structured_content is not None
    if row.name in SEVERAL_READS:
        assert {s.method for s in seen} == {"GET"}
    elif row.name in READ_THEN_WRITE:
        assert [s.method for s in seen] == [row.method, "PATCH"]
    else:
        assert [s.method for s in seen] == [row.method]
    path = seen[0].path
    assert path_pattern(row).match(path), path
    assert path == BASE + row.path.format(**params.model_dump(include=set(row.path_fields)))
    allowed = set(row.params.model_fields) | set(row.inject_body)
    if row.name in SEVERAL_READS | READ_THEN_WRITE:  # through other rows, checked there
        return True
    if row.build_query is not None:  # the query PostHog's own tool sends, not the arguments
        assert {k for k, _ in seen[0].query} == set(row.build_query(params))
    else:
        assert {k for k, _ in seen[0].query} <= allowed
    if row.build_body is not None:  # the body PostHog's own tool sends, not the arguments
        assert seen[0].body == {**row.build_body(params), **row.inject_body}
    else:
        assert set(seen[0].body or {}) <= allowed
    assert "wait_seconds" not in (seen[0].body or {})
    return True


TOOL_IDS = [row.name for row in ENDPOINTS]
DEPTHS = pytest.mark.parametrize(
    "examples",
    [pytest.param(SAMPLE, id="sample"), pytest.param(EXAMPLES, id="full", marks=pytest.mark.slow)],
)


@DEPTHS
@pytest.mark.parametrize("row", ENDPOINTS, ids=TOOL_IDS)
def test_valid_arguments_from_the_schema_are_accepted_and_routed(
    session: Session, row: Endpoint, examples: int
) -> None:
    schema = dict(definition(row)["inputSchema"])
    outcomes: list[bool] = []

    @settings(FUZZ, max_examples=examples)
    @given(valid_object(schema, schema.get("$defs", {})))
    def run(arguments: dict[str, Any]) -> None:
        # The advertised schema and the params model must agree on what is valid.
        outcomes.append(check(session, row, arguments))
        assert outcomes[-1] is True, arguments

    run()
    # A tool without arguments has exactly one valid call: {}.
    assert len(outcomes) == (examples if schema.get("properties") else 1)


@DEPTHS
@pytest.mark.parametrize("row", ENDPOINTS, ids=TOOL_IDS)
def test_invalid_arguments_send_nothing_and_never_crash(
    session: Session, row: Endpoint, examples: int
) -> None:
    schema = dict(definition(row)["inputSchema"])
    outcomes: list[bool] = []

    @settings(FUZZ, max_examples=examples)
    @given(invalid_arguments(schema))
    def run(arguments: dict[str, Any]) -> None:
        outcomes.append(check(session, row, arguments))

    run()
    assert len(outcomes) == examples
    # Most mutations are invalid; the few the model accepts (a string where any JSON goes)
    # were still checked as valid calls above.
    assert outcomes.count(False) >= len(outcomes) // 2, outcomes


@pytest.mark.parametrize(
    "row", [r for r in ENDPOINTS if "id" in r.path_fields], ids=lambda r: r.name
)
def test_path_traversal_ids_never_reach_the_upstream(session: Session, row: Endpoint) -> None:
    for hostile in TRAVERSAL:
        assert check(session, row, {"id": hostile}) is False, hostile


def test_an_argument_error_stays_short_however_many_problems(session: Session) -> None:
    row = next(r for r in ENDPOINTS if r.name.endswith("bulk-update-schemas-partial-update"))
    bad = {"id": "x", "schemas": [{"a": 1, "sync_type": 5, "should_sync": "maybe"}] * 1000}
    result = session.call(row, bad)
    assert result.is_error is True
    assert session.recorder.seen == []
    assert len(text_of(result)) < 4_000


def test_strategies_cover_every_schema_keyword() -> None:
    handled = {
        "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "enum",
        "$ref", "$defs", "format", "pattern", "minimum", "maximum", "minLength", "maxLength",
        "description", "default", "anyOf",
    }  # fmt: skip
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        if not isinstance(node, dict):
            return
        seen.update(node)
        for key, value in node.items():
            # Under these keys, the keys are names (of properties, definitions), not keywords.
            for child in value.values() if key in ("properties", "$defs") else [value]:
                walk(child)

    for row in ENDPOINTS:
        walk(definition(row)["inputSchema"])
    assert seen <= handled, seen - handled
