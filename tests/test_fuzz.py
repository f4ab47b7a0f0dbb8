"""Fuzzing the decoders with mutated valid files (the container alone: tests/test_container.py).

Only NcfError or NeurocodecError may come out of decode_image / decode_video, within a time
bound; tests/fuzz/harness.py has the mutations, tests/fuzz/fuzz_decoders.py runs them longer
under atheris. Derandomized and database-free, so CI runs the same inputs every time.
"""
from __future__ import annotations

import collections
import dataclasses
import random
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.container import Limits, NcfError, read_container
from codec.errors import NeurocodecError
from codec.image import decode_image, encode_image

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import harness  # noqa: E402

FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    torch.set_num_threads(1)
    return harness.seed_files(tmp_path_factory.mktemp("seeds"))


@pytest.mark.parametrize("kind", ["image", "tiled", "video"])
@FUZZ
@given(data=st.data())
def test_mutated_files_only_raise_documented_errors(seeds, kind, data):
    harness.decode(harness.mutate(seeds[kind], lambda n: data.draw(st.integers(0, n - 1))))


@pytest.mark.parametrize("kind", ["image", "video"])
def test_mutations_reach_the_decoders(seeds, kind):
    """The fuzzer's mutations must not all stop at the container: of 300 seeded ones, some
    files still decode and some are refused (so the decoders behind the container are fuzzed)."""
    rng = random.Random(0)
    outcomes = collections.Counter(harness.decode(harness.mutate(seeds[kind], rng.randrange)) for _ in range(300))
    assert outcomes["decoded"] > 0 and outcomes["NcfError"] > 0, outcomes


def test_huge_declared_image_is_refused_before_allocation(seeds):
    header, sections = read_container(seeds["image"])
    huge = dataclasses.replace(header, width=100_000, height=100_000, pad_width=100_000, pad_height=100_000)
    blob = harness.reframe(huge, sections)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(NcfError, match="max_pixels"):
        decode_image(blob)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0 and peak < 1 << 20


def test_limits_can_be_lowered_and_raised(seeds):
    with pytest.raises(NcfError, match="max_pixels"):
        decode_image(seeds["image"], Limits(max_pixels=100))
    header, _ = read_container(seeds["image"])
    assert decode_image(seeds["image"], Limits(max_pixels=header.width * header.height)).shape[:2] == \
        (header.height, header.width)
    with pytest.raises(NeurocodecError, match="above the limit"):
        encode_image(np.zeros((20, 20, 3), np.uint8), limits=Limits(max_pixels=399))
