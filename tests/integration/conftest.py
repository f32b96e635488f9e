"""Fixtures for integration tests that need a real Prometheus (Debian's ``prometheus`` 2.42) on loopback.

``backfilled_prometheus(frames, names=...)`` writes the frames as OpenMetrics with
:func:`simulations.exposition.write_openmetrics`, loads them with promtool and
starts a :class:`~scaler.testing.promserver.PrometheusServer` on the blocks; every
server a test starts is stopped at teardown. Tests skip (with the reason) when
the binaries are missing.
"""

from __future__ import annotations

import io

import pytest

from scaler.testing.promserver import PrometheusServer, load_openmetrics, prometheus_available


@pytest.fixture(scope="session")
def prometheus_required() -> None:
    reason = prometheus_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def backfilled_prometheus(prometheus_required, tmp_path):
    """Factory: ``backfilled_prometheus(frames, names="v1") -> PrometheusServer`` (started, stopped at teardown)."""
    from simulations.exposition import write_openmetrics

    servers: list[PrometheusServer] = []

    def start(frames, *, names: str = "v1", with_up: bool = True) -> PrometheusServer:
        buf = io.StringIO()
        write_openmetrics(frames, buf, names=names, with_up=with_up)
        tsdb = tmp_path / f"tsdb-{len(servers)}"
        load_openmetrics(buf.getvalue(), tsdb)
        server = PrometheusServer(tsdb_dir=tsdb)
        servers.append(server)
        server.start()
        return server

    yield start
    for s in servers:
        s.stop()
