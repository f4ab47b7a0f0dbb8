from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def example_image() -> Path:
    """The Kodak image bundled in examples/ (kodim23, 768x512)."""
    return ROOT / "examples" / "kodim23.png"
