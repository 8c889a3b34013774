"""The source connectors, by PostHog source type.

A source type is one module here that is a `Connector` (see `base.py`) plus one entry in
`_MODULES`. Modules are imported on first use: their drivers are heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast

from .base import (
    Column,
    ConnectionFailed,
    Connector,
    CsvOut,
    Export,
    PartReady,
    Progress,
    SourceError,
    SyncCancelled,
    Table,
    TableStats,
    Unreachable,
    check_cancelled,
    discover,
    inspect,
    quote_ident,
    text_input,
)
from .config import unavailable_configs

__all__ = [
    "SUPPORTED_SOURCE_TYPES",
    "Column",
    "ConnectionFailed",
    "Connector",
    "CsvOut",
    "Export",
    "PartReady",
    "Progress",
    "SourceError",
    "SyncCancelled",
    "Table",
    "TableStats",
    "Unreachable",
    "check_cancelled",
    "connector",
    "discover",
    "inspect",
    "known_source_type",
    "quote_ident",
    "source_configs",
    "text_input",
]

_MODULES = {"Postgres": "postgres", "MySQL": "mysql"}
SUPPORTED_SOURCE_TYPES = tuple(_MODULES)

if TYPE_CHECKING:
    # mypy checks here that every connector module is a Connector.
    from . import mysql, postgres

    _CHECKED: tuple[Connector[Any], ...] = (postgres, mysql)


def connector(source_type: str) -> Connector[Any]:
    """The connector of a supported source type.

    Raises:
        KeyError: the sandbox does not support `source_type`.
    """
    module = importlib.import_module(f"{__name__}.{_MODULES[source_type]}")
    return cast("Connector[Any]", module)


def known_source_type(source_type: str) -> bool:
    """Whether PostHog has this source type (the sandbox connects only some of them)."""
    return source_type in SUPPORTED_SOURCE_TYPES or source_type in unavailable_configs(())


def source_configs() -> dict[str, dict[str, Any]]:
    """Every source type's setup form, by type, as the wizard lists them: the connectable ones
    first, then those PostHog has that the sandbox lists but cannot connect."""
    configs = {t: connector(t).SOURCE_CONFIG for t in SUPPORTED_SOURCE_TYPES}
    return configs | unavailable_configs(SUPPORTED_SOURCE_TYPES)
