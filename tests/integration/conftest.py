"""Fixtures for integration tests that need a real Prometheus (Debian's ``prometheus`` 2.42) on loopback.

``backfilled_prometheus(frames, names=...)`` (and its module-scoped twin
``module_backfilled_prometheus``) writes the frames as OpenMetrics with
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


class _Backfill:
    """Starts Prometheus servers on backfilled blocks under ``root``; :meth:`stop_all` at teardown."""

    def __init__(self, root) -> None:
        self.root = root
        self.servers: list[PrometheusServer] = []

    def __call__(self, frames, *, names: str = "v1", with_up: bool = True) -> PrometheusServer:
        from simulations.exposition import write_openmetrics

        buf = io.StringIO()
        write_openmetrics(frames, buf, names=names, with_up=with_up)
        tsdb = self.root / f"tsdb-{len(self.servers)}"
        load_openmetrics(buf.getvalue(), tsdb)
        server = PrometheusServer(tsdb_dir=tsdb)
        self.servers.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        for s in self.servers:
            s.stop()


@pytest.fixture
def backfilled_prometheus(prometheus_required, tmp_path):
    """Factory: ``backfilled_prometheus(frames, names="v1") -> PrometheusServer`` (started, stopped at teardown)."""
    start = _Backfill(tmp_path)
    yield start
    start.stop_all()


@pytest.fixture(scope="module")
def module_backfilled_prometheus(prometheus_required, tmp_path_factory):
    """:func:`backfilled_prometheus` for servers a whole test module shares (stopped after the module)."""
    start = _Backfill(tmp_path_factory.mktemp("backfill"))
    yield start
    start.stop_all()
