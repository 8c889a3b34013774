"""Results larger than the budget are shortened, always within budget and always saying so."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posthog_warehouse_mcp.tools.output import cap, dumps
from tests.support import JOB, MODES, SCHEMA, SOURCE, SOURCE_ID, Recorder, answer, connect, text_of

BUDGET = 2_000  # the smallest budget Settings accepts


def size(value: Any) -> int:
    return len(dumps(value).encode())


def cut_notes(result: dict[str, Any]) -> str:
    return " ".join(result["truncation"]["cut"])


def assert_capped(result: dict[str, Any], budget: int) -> None:
    assert size(result) <= budget, size(result)
    assert result["truncated"] is True
    assert result["truncation"]["cut"]
    assert "limit" in result["truncation"]["how_to_get_the_rest"]


def schema(i: int) -> dict[str, Any]:
    return {
        **SCHEMA,
        "id": f"{i:08d}-0000-4000-8000-000000000000",
        "name": f"table_{i}",
        "table": {"id": i, "name": f"t{i}", "columns": [{"name": f"c{j}"} for j in range(30)]},
    }


def page(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"count": len(items), "next": None, "previous": None, "results": items}


def test_a_result_that_fits_is_returned_unchanged() -> None:
    result = page([SOURCE])
    assert cap(result, BUDGET) is result
    assert "truncated" not in cap(result, BUDGET)


def test_embedded_schemas_are_trimmed_before_any_result_is_dropped() -> None:
    sources = [
        {**SOURCE, "id": f"s{i}", "schemas": [schema(j) for j in range(12)]} for i in range(4)
    ]
    out = cap(page(sources), 8_000)
    assert_capped(out, 8_000)
    assert [s["id"] for s in out["results"]] == ["s0", "s1", "s2", "s3"]
    assert set(out["results"][0]["schemas"][0]) == {"id", "name", "should_sync", "status"}
    assert "schemas of each source reduced" in cut_notes(out)


def test_the_tail_of_long_lists_is_dropped_and_counted() -> None:
    jobs = [{**JOB, "id": f"job-{i}", "latest_error": "e" * 200} for i in range(500)]
    out = cap({"results": jobs}, BUDGET)
    assert_capped(out, BUDGET)
    kept = len(out["results"])
    assert 1 <= kept < 500
    assert out["results"] == jobs[:kept]
    assert f"results cut from 500 to the first {kept}" in cut_notes(out)


def test_a_source_with_thousands_of_schemas_fits() -> None:
    source = {**SOURCE, "schemas": [schema(i) for i in range(5_000)]}
    out = cap(source, 20_000)
    assert_capped(out, 20_000)
    assert out["id"] == SOURCE["id"]
    assert 0 < len(out["schemas"]) < 5_000
    assert "schemas" in cut_notes(out)


def test_a_single_huge_object_fits_with_a_notice() -> None:
    source = {
        **SOURCE,
        "latest_error": "x" * 2_000_000,
        "new_upstream_field": {"blob": "y" * 10**6},
    }
    out = cap(source, BUDGET)
    assert_capped(out, BUDGET)
    assert out["id"] == SOURCE["id"]
    assert out["latest_error"].startswith("xxx")
    assert "characters cut" in out["latest_error"]
    assert "shortened" in cut_notes(out)


def test_one_oversized_item_is_shortened_not_dropped() -> None:
    job = {**JOB, "latest_error": "Traceback ... " * 100_000}
    out = cap({"results": [job]}, BUDGET)
    assert_capped(out, BUDGET)
    assert [j["id"] for j in out["results"]] == [JOB["id"]]


def test_an_object_with_a_huge_number_of_fields_fits() -> None:
    source = {**SOURCE, "job_inputs": {f"k{i}": i for i in range(50_000)}}
    out = cap(source, BUDGET)
    assert_capped(out, BUDGET)
    assert out["id"] == SOURCE["id"]
    assert "dropped" in cut_notes(out)


def test_pathological_nesting_still_fits() -> None:
    deep: Any = "z" * 100
    for i in range(400):
        deep = {"id": str(i), "name": "n" * 50, "status": [deep, "p" * 50]}
    out = cap({"id": "a", "results": [deep] * 3, "extra": deep}, BUDGET)
    assert_capped(out, BUDGET)
    assert out["id"] == "a"


def test_cap_does_not_change_its_input() -> None:
    source = {**SOURCE, "schemas": [schema(i) for i in range(200)], "note": "n" * 50_000}
    before = copy.deepcopy(source)
    cap(source, BUDGET)
    assert source == before


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3000),
    lambda children: (
        st.lists(children, max_size=40)
        | st.dictionaries(st.text(max_size=12), children, max_size=40)
    ),
    max_leaves=400,
)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    result=st.dictionaries(st.sampled_from(["id", "results", "schemas", "x", "y"]), JSON),
    budget=st.integers(min_value=2_000, max_value=20_000),
)
def test_any_result_ends_within_budget_and_says_so_when_cut(
    result: dict[str, Any], budget: int
) -> None:
    out = cap(result, budget)
    if size(result) <= budget:
        assert out == result
    else:
        assert_capped(out, budget)


@pytest.mark.anyio
@MODES
@pytest.mark.parametrize(
    ("tool", "arguments", "body"),
    [
        (
            "external-data-sources-list",
            {},
            page([{**SOURCE, "id": f"s{i}", "schemas": [schema(0)] * 5} for i in range(200)]),
        ),
        (
            "external-data-sources-retrieve",
            {"id": SOURCE_ID},
            {**SOURCE, "schemas": [schema(i) for i in range(3_000)], "blob": "b" * 300_000},
        ),
        ("external-data-sources-jobs", {"id": SOURCE_ID}, [{**JOB, "latest_error": "e" * 10**6}]),
    ],
    ids=["list", "retrieve", "jobs"],
)
async def test_oversized_results_reach_the_client_within_budget_and_marked(
    tool: str, arguments: dict[str, Any], body: Any, mode: str
) -> None:
    budget = 5_000
    recorder = Recorder(respond=answer(200, body))
    async with connect(recorder, mode=mode, max_output_bytes=budget) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error is False
    text = text_of(result)
    assert len(text.encode()) <= budget
    structured = result.structured_content
    assert structured is not None
    assert json.loads(text) == structured
    assert_capped(structured, budget)
