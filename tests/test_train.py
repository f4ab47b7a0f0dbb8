"""`neurocodec train`: exact resume, validation through real files, export, and the DDP path
(2 CPU processes with gloo), on the small hyperprior with 64x64 patches."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import codec
from codec.cli import main
from codec.train.export import export_weights, record_kodak
from codec.train.loop import train
from codec.zoo import load_model, weights_from

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two small 'photos' to train on and one to validate on."""
    base = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (base / "train").mkdir()
    (base / "val").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)).save(base / "train" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(base / "val" / "v.png")
    return base


def _cfg(folders, **kw):
    return {"model": "hyperprior-small", "data": str(folders / "train"), "crop": 64, "batch": 1,
            "steps": 4, "warmup": 2, "threads": 1, "bf16": False, "log_every": 1, **kw}


def test_resume_continues_exactly(folders, tmp_path):
    straight = train(tmp_path / "a", _cfg(folders))
    train(tmp_path / "b", _cfg(folders), stop_after=2)
    with pytest.raises(FileExistsError):
        train(tmp_path / "b", _cfg(folders))
    resumed = train(tmp_path / "b", _cfg(folders, loaders=2), resume=True)  # patches cut by 2 processes
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r[:5] for r in csv.reader(open(tmp_path / "a" / "log.csv"))][1:] != []
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["step"] == 4


def test_validation_and_export_use_real_files(folders, tmp_path):
    run = tmp_path / "run"
    main(["train", "--run", str(run), "--model", "hyperprior-small", "--data", str(folders / "train"),
          "--val", str(folders / "val"), "--val-every", "2", "--val-qualities", "1", "8", "--steps", "2",
          "--crop", "64", "--batch", "1", "--threads", "1", "--no-bf16"])
    rows = list(csv.DictReader(open(run / "val.csv")))
    assert [float(r["quality"]) for r in rows] == [1.0, 8.0] and all(r["step"] == "2" for r in rows)

    weights = tmp_path / "weights"  # a folder that does not exist yet
    assert main(["train", "export", str(run), "-o", str(weights)]) == 0
    entry = json.loads((weights / "manifest.json").read_text())["hyperprior-small"]
    assert entry["training"]["steps"] == 2 and entry["dtype"] == "float16"
    assert entry["training"]["validation"]["bpp"] == [float(r["bpp"]) for r in rows]
    release_path = weights / entry["file"]
    assert entry["file"] == f"hyperprior-small@{entry['sha256'][:16]}.safetensors"
    assert [r["release"] for r in entry["releases"]] == [f"hyperprior-small@{entry['sha256'][:16]}"]
    tensors = load_file(release_path)
    assert tensors["g_a.0.weight"].dtype == torch.float16
    bound = tensors["gaussian_conditional.likelihood_lower_bound.bound"]
    assert bound.dtype == torch.float32 and bound.item() == pytest.approx(1e-9)  # not 0 as float16
    # the exported weights give exactly the file sizes the validation logged
    with weights_from(str(weights)):
        rgb = np.asarray(Image.open(folders / "val" / "v.png"))
        for row in rows:
            data = codec.encode_image(rgb, model="hyperprior-small", quality=float(row["quality"]),
                                      residual_layer=False)
            assert float(row["bpp"]) == pytest.approx(len(data) * 8 / rgb[..., 0].size, abs=1e-4)

    with pytest.raises(ValueError, match="give the weights folder"):
        export_weights(run, weights / "other.safetensors")

    # the Kodak curve enters the manifest only from an evaluation of exactly these weights
    results = tmp_path / "eval.json"
    with weights_from(str(weights)):
        assert main(["eval", "images", str(folders / "val"), "--codecs", "neurocodec:hyperprior-small,jpeg",
                     "--qualities", "neurocodec=1,6", "jpeg=50,90", "--anchor", "jpeg", "--workers", "1",
                     "--out", str(results), "--reference", "none"]) == 0
    weights_bytes = release_path.read_bytes()
    assert main(["train", "export", str(run), "-o", str(weights), "--kodak", str(results)]) == 0
    assert sorted(weights.glob("*.safetensors")) == [release_path]  # export is deterministic: the same release
    kodak = json.loads((weights / "manifest.json").read_text())["hyperprior-small"]["kodak"]
    measured = json.loads(results.read_text())["codecs"][0]["results"]
    assert kodak["quality"] == [1.0, 6.0] and kodak["images"] == 1
    assert kodak["bd_rate_vs_jpeg_pct"] is None  # a 2-step model's learned layer does not reach JPEG's curve
    assert kodak["bpp"] == [round(v, 4) for v in measured["bpp"]]
    # after a codec change the same weights' new curve replaces the old one without an export
    manifest = json.loads((weights / "manifest.json").read_text())
    manifest["hyperprior-small"]["kodak"]["bpp"] = [9.0, 9.0]
    (weights / "manifest.json").write_text(json.dumps(manifest))
    assert main(["train", "record-kodak", str(results), "-w", str(weights)]) == 0
    assert json.loads((weights / "manifest.json").read_text())["hyperprior-small"]["kodak"] == kodak
    other = tmp_path / "other"
    main(["train", "--run", str(other), "--model", "hyperprior-small", "--data", str(folders / "train"),
          "--steps", "1", "--crop", "64", "--batch", "1", "--threads", "1", "--no-bf16", "--seed", "2"])
    manifest = (weights / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match="other weights"):
        export_weights(other, weights, kodak_results=results)
    assert sorted(weights.glob("*.safetensors")) == [release_path]  # nothing written
    assert (weights / "manifest.json").read_bytes() == manifest
    with weights_from(str(weights)):
        old_file = codec.encode_image(rgb, model="hyperprior-small", quality=3.0)
    newer = export_weights(other, weights)
    with pytest.raises(ValueError, match="other weights"):
        record_kodak(results, weights)
    # a new release never replaces an older one: the name means the newest, files made with
    # the older one still decode with it, and it can still be chosen by name
    assert release_path.read_bytes() == weights_bytes
    assert [r["sha256"] for r in newer["releases"]] == [newer["sha256"], entry["sha256"]]
    with weights_from(str(weights)):
        assert codec.read_info(old_file)["weights_hash"] == entry["sha256"][:16]
        assert codec.decode_image(old_file).shape == rgb.shape
        again = codec.encode_image(rgb, model=f"hyperprior-small@{entry['sha256'][:16]}", quality=3.0)
        assert again == old_file
        assert codec.encode_image(rgb, model="hyperprior-small", quality=3.0) != old_file
        release_path.unlink()
        load_model.cache_clear()  # a process keeps the models it has loaded
        with pytest.raises(codec.NeurocodecError, match=f"hyperprior-small@{entry['sha256'][:16]} is not installed"):
            codec.decode_image(old_file)


def test_settings_flags_override_saved_config_on_resume(folders, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--run", str(run), "--data", str(folders / "train"), "--model", "hyperprior-small",
            "--crop", "64", "--batch", "1", "--threads", "1", "--no-bf16"]
    assert main(args + ["--steps", "1"]) == 0
    assert main(args + ["--steps", "1"]) == 1  # exists: needs --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--run", str(run), "--resume", "--steps", "2"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["steps"] == 2 and cfg["crop"] == 64
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 2


def test_init_widens_a_narrower_model_to_the_same_function(tmp_path):
    """--init from an N=8 model into an N=16 one: every tensor is taken (the transforms
    widened), the wider model computes what the narrower one did, and one training step
    makes the widened copies differ (the zero-sum noise breaks their symmetry)."""
    from safetensors.torch import save_file

    from codec.train.warmstart import init_from
    from models.mlic import MLIC

    torch.manual_seed(0)
    narrow = MLIC(N=8, M=16, slices=2, Nz=8).eval()
    with torch.no_grad():  # nonzero biases, so that their copies are tested too
        for p in narrow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_file({k: v.contiguous() for k, v in narrow.state_dict().items()}, str(tmp_path / "n.safetensors"))
    wide = MLIC(N=16, M=16, slices=2, Nz=8).eval()
    names = init_from(wide, tmp_path / "n.safetensors")
    assert len(names) == len(dict(wide.named_parameters()))
    w, w0 = wide.g_s[2].body[0].weight, narrow.g_s[2].body[0].weight  # a 1x1 conv, 8 -> 4 widened to 16 -> 8
    assert torch.equal(w[:4], w[4:])  # output channels repeated
    assert torch.allclose(w[:4, :8] + w[:4, 8:], w0, atol=1e-6) and not torch.allclose(w[:4, :8], w0 / 2)
    x, q = torch.rand(1, 3, 64, 64), torch.tensor([3.0])
    with torch.no_grad():
        y = narrow.analysis(x, q)
        assert torch.allclose(wide.analysis(x, q), y, atol=1e-4)
        assert torch.allclose(wide.synthesis(y.round(), q), narrow.synthesis(y.round(), q), atol=1e-5)
        assert torch.allclose(wide.hyper_synthesis(wide.hyper_analysis(y)),
                              narrow.hyper_synthesis(narrow.hyper_analysis(y)), atol=1e-5)
    wide.train()
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    wide.rd_loss(x, q, wide(x, q))["loss"].backward()
    opt.step()
    first = wide.g_a[0].weight  # output channels 0..7 and their copies 8..15
    assert not torch.allclose(first[:8], first[8:])


# bits of the carried model against the Gaussian's: GG's scale bound at beta = 2 is tabulated;
# the mixtures' component scales are spread 10 % around the Gaussian's
@pytest.mark.parametrize("family, bits_tolerance", [("gg", 1e-4), ("gmm", 0.03), ("mvgmm", 0.03)])
def test_init_carries_a_gaussian_model_to_another_family_as_the_same_law(tmp_path, family, bits_tolerance):
    """--init from shipped Gaussian weights into another family: every parameter is taken; GG's
    heads emit beta = 2 and alpha = sqrt(2) sigma, the mixtures' components the Gaussian's mean,
    so the reconstruction is the Gaussian model's and the rate within the tolerance; without a
    manifest saying the file is Gaussian the heads stay fresh."""
    from codec.train.export import write_weights
    from codec.train.warmstart import init_from
    from codec.zoo import get_preset

    torch.manual_seed(0)
    gauss = get_preset("mlic-tiny-gaussian").build().eval()
    with torch.no_grad():
        for p in gauss.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / write_weights(gauss, "mlic-tiny-gaussian", tmp_path, "float32")["file"]
    carried = get_preset(f"mlic-tiny-{family}").build().eval()
    assert len(init_from(carried, path)) == len(dict(carried.named_parameters()))
    x, q = torch.rand(1, 3, 128, 128), torch.tensor([3.0])
    with torch.no_grad():
        a, b = gauss(x, q), carried(x, q)
    assert torch.equal(a["x_hat"], b["x_hat"])
    bits_a, bits_b = (-r["likelihoods"]["y"].log2().sum().item() for r in (a, b))
    assert abs(bits_a - bits_b) < bits_tolerance * bits_a
    (tmp_path / "manifest.json").unlink()
    fresh = get_preset(f"mlic-tiny-{family}").build()
    assert "anchor_head.0.4.weight" not in init_from(fresh, path)


def test_more_quality_levels_extend_the_gains_and_load_from_their_weights(folders, tmp_path):
    """--levels 11 from 8-level weights: the trained levels are unchanged, the new ones go on
    along the last step; an export of it loads as an 11-level model (levels read from the
    weights) whose quality 11 codes and decodes, while 8-level releases stay 8-level."""
    from codec.train.export import write_weights
    from codec.train.warmstart import init_from
    from codec.zoo import build_with_weights, get_preset
    from models.hyperprior import LAMBDA_LADDER

    torch.manual_seed(0)
    base = get_preset("hyperprior-small").build()
    path = tmp_path / write_weights(base, "hyperprior-small", tmp_path, "float32")["file"]
    more = get_preset("hyperprior-small").build(levels=11)
    assert more.lambdas == LAMBDA_LADDER[:11] and more.lambdas[:8] == base.lambdas
    assert "gain.log_gain" in init_from(more, path)
    g, g0 = more.gain.log_gain.detach(), base.gain.log_gain.detach()
    assert torch.equal(g[:8], g0) and torch.allclose(g[10] - g[9], g0[7] - g0[6])
    with pytest.raises(ValueError, match="quality levels"):
        get_preset("hyperprior-small").build(levels=len(LAMBDA_LADDER) + 1)
    run = tmp_path / "run"
    train(run, _cfg(folders, levels=11, init=str(path), steps=1))
    out = tmp_path / "out"
    out.mkdir()
    entry = export_weights(run, out)
    assert len(entry["lambdas"]) == 11
    assert build_with_weights("hyperprior-small", out / entry["file"]).levels == 11
    assert build_with_weights("hyperprior-small", path).levels == 8
    with weights_from(out):
        rgb = np.asarray(Image.open(folders / "val" / "v.png"))
        data = codec.encode_image(rgb, model="hyperprior-small", quality=11)
        assert codec.decode_image(data).shape == rgb.shape


def test_ddp_two_cpu_processes_stay_in_sync(folders, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from codec.train.loop import train
        cfg = {_cfg(folders, steps=3)!r}
        model = train({str(tmp_path / "run")!r}, cfg)
        torch.save(model.state_dict(), {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
    """))
    with socket.socket() as free:  # a port no other test run on this machine holds
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(port), str(script)], check=True, cwd=ROOT, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # gradients were averaged across processes
    torch.manual_seed(1)
    init = codec.zoo.get_preset("hyperprior-small").build().state_dict()
    assert not torch.equal(init["g_a.0.weight"], r0["g_a.0.weight"])
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 3


def test_loader_processes_cut_the_same_batches_in_the_same_order(folders):
    """`--loaders N` (for a GPU) cuts patches in worker processes; resuming and exactness rest
    on every step seeing the batch it would see in the training process."""
    from codec.train.data import RandomPatches, patch_batches

    data = RandomPatches(folders / "train", 32, seed=3)
    here = list(patch_batches(data, 5, 12, 2))
    ahead = list(patch_batches(data, 5, 12, 2, loaders=2))
    assert len(here) == len(ahead) == 7
    assert all(torch.equal(a, b) for a, b in zip(here, ahead))
    assert torch.equal(here[0], torch.from_numpy(data.batch(5, 2))) and not torch.equal(here[0], here[1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_a_clear_error(folders, tmp_path, capsys):
    args = ["train", "--run", str(tmp_path / "run"), "--model", "hyperprior-small", "--data", str(folders / "train"),
            "--steps", "1", "--crop", "64", "--batch", "1", "--threads", "1", "--no-bf16", "--device", "cuda"]
    assert main(args) == 1
    assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_entropy_only_training_moves_the_entropy_model_and_nothing_that_reconstructs(folders, tmp_path):
    """--train-only entropy: the transforms, gains and latent residual prediction keep their
    weights bit for bit, the entropy model learns; refused for models without that split."""
    torch.manual_seed(0)
    start = codec.zoo.get_preset("mlic-tiny-gaussian").build()
    before = {k: v.clone() for k, v in start.state_dict().items()}
    path = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in before.items()}, path)
    model = train(tmp_path / "run", _cfg(folders, model="mlic-tiny-gaussian", init=str(path), train_only="entropy",
                                         lr=1e-2))
    after = model.state_dict()
    frozen = [k for k in after if k.split(".")[0] in model.RECONSTRUCTION]
    moved = [k for k in after if not torch.equal(after[k], before[k])]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)
    assert any(k.startswith(("h_a.", "h_s.", "anchor_head.", "channel_ctx.")) for k in moved)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert rows and all(float(r["bpp"]) > 0 for r in rows)
    with pytest.raises(ValueError, match="MLIC"):
        train(tmp_path / "other", _cfg(folders, train_only="entropy"))
