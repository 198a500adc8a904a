"""Shared test configuration: hypothesis profiles and the GPU marker."""

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
