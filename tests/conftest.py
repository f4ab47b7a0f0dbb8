from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def example_image() -> Path:
    """The Kodak image bundled in examples/ (kodim23, 768x512)."""
    return ROOT / "examples" / "kodim23.png"


@pytest.fixture(scope="session")
def carphone() -> Path:
    """The first 10 frames of the carphone test sequence, 176x144 (tests/data/README.md)."""
    return ROOT / "tests" / "data" / "carphone_176x144_10f.mp4"
