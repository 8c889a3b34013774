"""The project installs one import package, posthog_warehouse_mcp, and claims no other name."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import posthog_warehouse_mcp

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ("server", "tools", "sandbox", "loopback")


def test_no_module_is_imported_under_a_generic_top_level_name() -> None:
    for module in pkgutil.walk_packages(
        posthog_warehouse_mcp.__path__, prefix="posthog_warehouse_mcp."
    ):
        if module.name.endswith("__main__"):
            continue  # running it would start the server
        importlib.import_module(module.name)
    clashing = sorted(name for name in sys.modules if name.split(".")[0] in GENERIC)
    assert clashing == []


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package(tmp_path: Path) -> None:
    # Built offline from a copy of the checkout (links kept as links, as git has them).
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"),
    )
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip_wheel, "-q", "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert {n.split("/")[0] for n in names} == {"posthog_warehouse_mcp", dist_info}
    text = zipfile.ZipFile(wheel).read
    assert text(f"{dist_info}/top_level.txt").decode().split() == ["posthog_warehouse_mcp"]
    entry_points = text(f"{dist_info}/entry_points.txt").decode()
    assert "posthog-warehouse-mcp = posthog_warehouse_mcp.server.entry:main" in entry_points
    for package in GENERIC:
        assert f"posthog_warehouse_mcp/{package}/__init__.py" in names
    assert "posthog_warehouse_mcp/tools/tools.json" in names
    # The MCP Apps views and the files server/apps.py inlines into them.
    for view in ("health.html", "review.html", "bridge.js", "base.css"):
        assert f"posthog_warehouse_mcp/server/views/{view}" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
