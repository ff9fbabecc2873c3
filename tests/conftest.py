"""Shared pytest set-up: root-only tests skip with a stated reason when not run as root."""

from __future__ import annotations

import os

import pytest

NOT_ROOT_REASON = "needs root: creates network namespaces, interfaces, qdiscs and iptables rules"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=NOT_ROOT_REASON)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
