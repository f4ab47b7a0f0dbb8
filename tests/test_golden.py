"""Golden files: real .ncf files written by every coder version decode with today's code.

tests/data/golden/ holds small files (crops of examples/kodim23.png) that the encoder of each
coder version wrote (versions 1 and 2 by the code of their commit, see `make_golden.py`), and
golden.json what they must decode to. A change that stops any of them decoding, or decodes it
to other pixels, breaks the promise that a file written once stays readable.

The decoded pixels are compared exactly only where the float kernels are those they were
recorded with (`make_golden.kernel_set`: PyTorch's version and its CPU kernel set): the
coder's parameters are reproducible across CPUs (coder versions 2 and 3 compute them in
float64), but the synthesis transform runs in float32, and its kernels round differently
between kernel sets (AVX512, AVX2, DEFAULT), so the same symbols may give pixels that differ
by one level here and there (docs/reliability.md). Elsewhere the PSNR against the source crop
must be within `PSNR_TOLERANCE` of the recorded one: a file whose streams decoded wrongly
would fail, or lose far more. Coder-version-1 files decode only with their encoder's kernels
(float32 parameters), so elsewhere they are skipped.
"""
import json
import sys
from pathlib import Path

import pytest

import codec
from codec.cli import main
from codec.image import CODER_VERSION

sys.path.insert(0, str(Path(__file__).parent / "data" / "golden"))
import make_golden  # noqa: E402

PSNR_TOLERANCE = 0.05  # dB
MANIFEST = make_golden.load_manifest()
NAMES = sorted(MANIFEST)


def golden_bytes(name: str) -> bytes:
    return (make_golden.GOLDEN / name).read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_golden_file_decodes_as_recorded(name):
    entry = MANIFEST[name]
    source = make_golden.source_pixels(entry["source"])
    assert make_golden.sha256(source) == entry["source"]["rgb_sha256"], "the source crop changed"
    recorded = entry["decoded"]
    same_kernels = all(recorded[k] == v for k, v in make_golden.kernel_set().items())
    if entry["coder_version"] == 1 and not same_kernels:
        pytest.skip(f"coder-version-1 files decode only with their encoder's kernels ({recorded})")
    decoded = codec.decode_image(golden_bytes(name))
    assert decoded.shape == source.shape
    if same_kernels:
        assert make_golden.sha256(decoded) == recorded["rgb_sha256"]
    else:
        assert codec.psnr(decoded, source) == pytest.approx(recorded["psnr"], abs=PSNR_TOLERANCE)


@pytest.mark.parametrize("name", NAMES)
def test_info_reports_what_the_file_was_made_with(name, capsys):
    entry = MANIFEST[name]
    assert main(["info", str(make_golden.GOLDEN / name), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["coder"]["version"] == entry["coder_version"]
    assert (info["model"], info["weights_hash"], info["quality"], info["bytes"]) == \
        (entry["model"], entry["weights_hash"], entry["quality"], entry["bytes"])


@pytest.mark.parametrize("name", NAMES)
def test_corrupted_golden_file_is_refused(name):
    data = bytearray(golden_bytes(name))
    data[-5] ^= 0x10  # the last byte of the last section's data, before its CRC
    with pytest.raises(codec.NcfError, match="CRC mismatch"):
        codec.decode_image(bytes(data))


def test_every_golden_file_is_recorded():
    assert sorted(p.name for p in make_golden.GOLDEN.glob("*.ncf")) == NAMES


def test_every_coder_version_has_golden_files():
    assert {e["coder_version"] for e in MANIFEST.values()} == set(range(1, CODER_VERSION + 1))


def test_every_shipped_release_has_golden_files_of_the_current_coder_version():
    """A new weights release (or coder version) fails here until `make_golden.py` has run."""
    recorded = {(e["model"], e["weights_hash"]) for e in MANIFEST.values() if e["coder_version"] == CODER_VERSION}
    releases = make_golden.installed_releases()
    assert releases, "no weights releases shipped"
    assert [r for r in releases if r not in recorded] == []
