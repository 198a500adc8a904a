"""Shared test configuration: hypothesis profiles, the GPU marker, the bounds and the slow tier.

Two tiers: plain ``pytest`` runs the fast one (a developer's loop, a few minutes on 2 cores);
``pytest --slow`` adds the tests marked ``slow`` — real Dask clusters, processes killed with
SIGKILL, the S3 server, wheel builds, the benchmarks' and the GPU day's rehearsals. CI runs both
(scripts/test.sh passes --slow). Choosing tests with ``-m`` runs what the expression says.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# CI runs derandomized so a red run can be reproduced; locally hypothesis explores more.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _cuda_available() -> bool:
    try:
        from weightmaps.backend import cuda_unavailable_reason
    except ImportError:  # engine not importable: let the real tests fail loudly instead
        return False
    return cuda_unavailable_reason() is None


# The bound of every test that does not set its own (pytest.mark.timeout): generous for a loaded
# 2-core CI machine, where the slowest tests take a few minutes, and finite, so that a cluster that
# never starts or a child that never exits fails one test with a traceback instead of hanging the
# job. Not in pyproject's ini options: the GPU machine runs plain pytest (no pytest-timeout) under
# --strict-config, which refuses an unknown "timeout" key; without the plugin there is no bound.
DEFAULT_TIMEOUT_S = 600


def _default_timeout(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("timeout"):
        return
    if config.getoption("timeout", None) is not None or os.environ.get("PYTEST_TIMEOUT"):
        return  # the caller chose (--timeout=0 turns the bounds off, e.g. to debug)
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="run the slow tier too (clusters, SIGKILL, S3, wheels, rehearsals); CI does")


def _skip_slow_tier(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("slow") or config.getoption("markexpr"):
        return
    skip_slow = pytest.mark.skip(reason="slow tier: run with --slow (CI does)")
    for item in items:
        # A test on the S3 server is slow wherever it is (the server, fsspec's event loops).
        if "slow" in item.keywords or "s3_server" in getattr(item, "fixturenames", ()):
            item.add_marker(skip_slow)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _default_timeout(config, items)
    _skip_slow_tier(config, items)
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device with CuPy and cuCIM")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (moto's stand-alone server) on 127.0.0.1, for the whole session."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from tests.s3server import S3Server

    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the session's S3 server: its name."""
    return s3_server.new_bucket()
