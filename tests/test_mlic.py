import pytest
import torch

from models.likelihoods import FAMILIES, heaviest_mean
from models.mlic import MLIC, MLIC_PRESETS, CodingStep, build_mlic, checkerboard, count_macs

torch.set_num_threads(1)

# tiny but complete: 2 slices of 4 channels (mvgmm groups of 2 fit)
TINY = dict(N=8, M=8, slices=2, Nz=8, mixer_blocks=1)


def _model(likelihood, **kw):
    torch.manual_seed(0)
    m = MLIC(**TINY, likelihood=likelihood, K=2, G=2, **kw)
    # the untrained entropy bottleneck's medians are fine; make the net's outputs non-trivial
    return m.eval()


def _offset(step: CodingStep):
    """What the symbols are residuals to: the mean (a mixture's heaviest component's), or 0."""
    if not step.symbols_are_residuals:
        return 0
    p = step.params
    return heaviest_mean(p["weight"], p["mean"]) if "weight" in p else p["mean"]


def _fake_code(step: CodingStep, y_values: torch.Tensor):
    """A fake coder: snapping = identity, symbols = round(y - offset)."""
    return torch.round(y_values - _offset(step))


def _fake_decode(step: CodingStep, symbols: torch.Tensor):
    return symbols + _offset(step)


@pytest.mark.parametrize("likelihood", FAMILIES + ("gg-channel",))
def test_coding_protocol_encoder_decoder_and_direct_pass_agree(likelihood):
    if likelihood == "gg-channel":  # per-channel learned betas, offset per slice
        m = _model("gg", beta_mode="channel")
        with torch.no_grad():
            m.likelihood_family.beta_raw.copy_(torch.linspace(-2, 2, 8))
        likelihood = "gg"
    else:
        m = _model(likelihood)
    q = torch.tensor([3.5])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        direct = m(x, q)
        y = m.analysis(x, q)
        z = m.hyper_analysis(y)
        med = m.entropy_bottleneck._get_medians()
        z_hat = torch.round(z - med) + med
        # encoder
        gen = m.coding_steps(z_hat, q)
        sent, names, seen = [], [], torch.zeros_like(y, dtype=torch.int)
        step = next(gen)
        while True:
            assert isinstance(step, CodingStep)
            n = int(step.mask.sum())
            for v in step.params.values():
                assert v.shape[0] == n
            seen += step.mask.int()
            sym = _fake_code(step, y[step.mask])
            sent.append(sym)
            names.append(step.name)
            try:
                step = gen.send(_fake_decode(step, sym))
            except StopIteration as stop:
                y_hat_enc = stop.value
                break
        assert (seen == 1).all()  # every element exactly once
        # decoder: sees only the symbols
        gen = m.coding_steps(z_hat, q)
        step = next(gen)
        i = 0
        while True:
            assert step.name == names[i]
            try:
                step = gen.send(_fake_decode(step, sent[i]))
            except StopIteration as stop:
                y_hat_dec = stop.value
                break
            i += 1
        assert torch.equal(y_hat_enc, y_hat_dec)
        x_hat = m.synthesis(y_hat_dec, q)
        assert torch.allclose(x_hat, direct["x_hat"], atol=1e-5)
    per_pass = 2 if likelihood == "mvgmm" else 1
    assert len(names) == TINY["slices"] * 2 * per_pass
    fam = "gmm" if likelihood == "mvgmm" else likelihood
    want = {"gaussian": {"mean", "scale"}, "laplace": {"mean", "scale"}, "gg": {"mean", "scale", "beta"},
            "gmm": {"weight", "mean", "scale"}}[fam]
    assert set(step.params) == want and step.family == fam


def test_step_order_and_masks():
    m = _model("gaussian")
    z_hat = torch.zeros(1, 8, 2, 3)
    gen = m.coding_steps(z_hat)
    step = next(gen)
    anchor = checkerboard(8, 12)
    assert step.name == "s0/anchor" and step.mask.shape == (1, 8, 8, 12)
    assert torch.equal(step.mask[0, 0], anchor) and not step.mask[0, 4:].any()
    step = gen.send(torch.zeros(int(step.mask.sum())))
    assert step.name == "s0/nonanchor" and torch.equal(step.mask[0, 3], ~anchor)


def test_mvgmm_steps_are_per_channel_in_group():
    m = _model("mvgmm")
    gen = m.coding_steps(torch.zeros(1, 8, 1, 1))
    step = next(gen)
    assert step.name == "s0/anchor/j0"
    # y is 4x4: channels 0 and 2 (element 0 of both groups of slice 0) at the 8 anchors
    assert torch.equal(step.mask[0, :, 0, 0], torch.tensor([True, False, True, False, False, False, False, False]))
    assert step.params["weight"].shape == (16, 2)
    step = gen.send(torch.zeros(16))
    assert step.name == "s0/anchor/j1" and torch.equal(step.mask[0, :, 0, 0], torch.tensor(
        [False, True, False, True, False, False, False, False]))


@pytest.mark.parametrize("likelihood", FAMILIES)
def test_training_step_shapes_and_gradients(likelihood):
    m = _model(likelihood).train()
    x = torch.rand(2, 3, 64, 64)
    q = torch.tensor([1.0, 8.0])
    out = m(x, q)
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (2, 8, 4, 4)
    assert out["likelihoods"]["z"].shape == (2, 8, 1, 1)
    assert ((out["likelihoods"]["y"] > 0) & (out["likelihoods"]["y"] <= 1)).all()
    loss = m.rd_loss(x, q, out)
    (loss["loss"] + m.aux_loss()).backward()
    for name in ("g_a.0.weight", "anchor_head.1.4.weight", "nonanchor_head.0.4.weight",
                 "lrp.0.4.weight", "intra_ctx.1.v.weight", "local_ctx.1.weight", "gain.log_gain"):
        p = dict(m.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("preset", sorted(MLIC_PRESETS))
def test_every_preset_codes_each_latent_once(preset):
    """y at stride 16 with M channels, z at stride 64; the coding steps (an anchor and a
    non-anchor pass per slice) visit every element of y exactly once, in M / slices channels."""
    torch.manual_seed(0)
    m = build_mlic(preset, likelihood="gaussian").eval()
    x, q = torch.rand(1, 3, 64, 64), torch.tensor([3.0])
    with torch.no_grad():
        y = m.analysis(x, q)
        z = m.hyper_analysis(y)
        assert y.shape == (1, m.M, 4, 4) and z.shape[2:] == (1, 1)
        seen = torch.zeros_like(y, dtype=torch.int64)
        steps = m.coding_steps(torch.round(z), q)
        step, names = next(steps), []
        try:
            while True:
                names.append(step.name)
                seen += step.mask
                assert step.mask.sum() == step.params["mean"].numel()
                assert int(step.mask[0].any(-1).any(-1).sum()) == m.Cs  # one slice of channels
                step = steps.send(torch.zeros(int(step.mask.sum())))
        except StopIteration as stop:
            assert stop.value.shape == y.shape
    assert torch.equal(seen, torch.ones_like(seen))
    assert names == [f"s{s}/{kind}" for s in range(m.S) for kind in ("anchor", "nonanchor")]
    assert m.M == m.S * m.Cs


def test_presets_and_sizes():
    m = build_mlic("mlic-tiny", likelihood="gaussian")
    n = sum(p.numel() for p in m.parameters())
    assert 1.0e6 < n < 2.0e6
    assert m.stride == 64 and m.levels == 8 and m.likelihood_family.name == "gaussian"
    assert 10e3 < count_macs(m, 64, 64) / (64 * 64) < 25e3
    wide = build_mlic("mlic-small", likelihood="gaussian")  # mlic-tiny with M = 192
    assert wide.M == 2 * m.M and wide.N == m.N
    assert 4.0e6 < sum(p.numel() for p in wide.parameters()) < 5.0e6
    assert 20e3 < count_macs(wide, 64, 64) / (64 * 64) < 35e3
    with pytest.raises(ValueError):
        build_mlic("mlic-tiny", likelihood="mvgmm", G=5)
    with pytest.raises(ValueError):
        build_mlic("nope")
