"""Shared pytest setup: CPU-only, single-threaded BLAS, offline hubs, and a per-session cache folder."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    "Generated data (SynthCXR) goes to a session cache unless CI already points CXRLAB_CACHE somewhere."
    if "CXRLAB_CACHE" not in os.environ:
        os.environ["CXRLAB_CACHE"] = str(tmp_path_factory.mktemp("cxrlab-cache"))
    yield


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: minutes-long tests (the runtime-only install); run with -m slow or CXRLAB_SLOW=1')
