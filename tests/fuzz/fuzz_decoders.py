"""Long fuzzing runs of the decoders under atheris (libFuzzer, coverage-guided).

    pip install atheris
    PYTHONPATH=. python tests/fuzz/fuzz_decoders.py -max_total_time=600 -rss_limit_mb=4096 -timeout=30

The first input byte picks a seed file (image, tiled image, video) to mutate with
harness.mutate, the rest drives the mutations; or (1 in 4) the input goes to the
decoders as it is. Any exception other than NcfError / NeurocodecError, an input slower
than harness.SECONDS, or (libFuzzer's own limits) too much memory or time is a crash:
libFuzzer saves the input as crash-*. Outcome counts are printed every 5000 inputs.
"""
from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).parent))
with atheris.instrument_imports(include=["codec"]):
    import harness

KINDS = ["image", "tiled", "video"]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    seeds = harness.seed_files(tempfile.mkdtemp())
    outcomes = collections.Counter()

    def one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        mode = fdp.ConsumeIntInRange(0, len(KINDS))
        if mode == len(KINDS):
            blob = fdp.ConsumeBytes(fdp.remaining_bytes())
        else:
            blob = harness.mutate(seeds[KINDS[mode]], lambda n: fdp.ConsumeIntInRange(0, n - 1))
        outcomes[harness.decode(blob)] += 1
        if sum(outcomes.values()) % 5000 == 0:
            print(f"outcomes after {sum(outcomes.values())} inputs: {dict(outcomes)}", file=sys.stderr, flush=True)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
