"""The HA tests' cluster (tests/ha/cluster.py): one per test module, started before its first test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ha.cluster import HaCluster, available


@pytest.fixture(scope="module")
def ha_cluster() -> Iterator[HaCluster]:
    missing = available()
    if missing:
        pytest.fail(missing)  # `.ci/run` installs the packages: never skip
    with HaCluster(nodes=2) as cluster:
        yield cluster
