"""Glow and the image layers: every transform passes the shared base; model-level facts on top."""

import math

import pytest
import torch

from flowforge.distributions.dequantization import bits_per_dim, dequantize, keyed_noise, quantize, reduce_bits
from flowforge.models import Glow, RealNVPImage, build_model
from flowforge.training.evaluate import nll_summary
from flowforge.transforms import (ActNorm, ChannelCoupling, Compose, InvConv1x1, Logit, MaskedCoupling, Shift,
                                  Split, Squeeze, Unsqueeze, channel_mask, checkerboard_mask)
from transform_base import TransformTests


def initialized(module):
    """Mark every ActNorm as initialised, as after the first training batch (the base then perturbs them)."""
    for layer in module.modules():
        if isinstance(layer, ActNorm):
            layer.initialized.fill_(True)
    return module


class UnitIntervalInputs:
    """Inputs in (0, 1): the domain of a logit (and a valid latent too)."""

    def inputs(self, batch=5):
        return 0.02 + 0.96 * torch.rand(batch, *self.shape, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(1))


# ---- every new layer through the shared base (float64, small images) -------------------------------

class TestActNorm(TransformTests):
    shape = (4, 2, 3)

    def make(self, context_dim=0):
        return initialized(ActNorm(4))


class TestActNormOnVectors(TransformTests):
    shape = (3,)

    def make(self, context_dim=0):
        return initialized(ActNorm(3))


class TestInvConv1x1LU(TransformTests):
    shape = (4, 2, 3)

    def make(self, context_dim=0):
        return InvConv1x1(4, lu=True)


class TestInvConv1x1Plain(TransformTests):
    shape = (4, 2, 3)

    def make(self, context_dim=0):
        return InvConv1x1(4, lu=False)


class TestChannelCouplingAffine(TransformTests):
    shape = (4, 2, 3)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return ChannelCoupling(4, hidden=8, scale="sigmoid", context_dim=context_dim)


class TestChannelCouplingTanhFlippedOddChannels(TransformTests):
    shape = (3, 3, 2)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return ChannelCoupling(3, hidden=8, depth=3, scale="tanh", flip=True, context_dim=context_dim)


class TestChannelCouplingAdditive(TransformTests):
    shape = (4, 2, 3)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return ChannelCoupling(4, hidden=8, depth=1, scale="additive", context_dim=context_dim)


class TestCheckerboardCoupling(TransformTests):
    shape = (2, 3, 4)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return MaskedCoupling(checkerboard_mask(self.shape, parity=1), hidden=8, context_dim=context_dim)


class TestChannelMaskCoupling(TransformTests):
    shape = (4, 2, 3)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return MaskedCoupling(channel_mask(self.shape), hidden=8, scale="sigmoid", context_dim=context_dim)


# Squeeze changes the shape and the base expects y shaped like x, so it is tested between a layer
# that mixes the squeezed channels and the way back (a wrong pixel order would break these).
class TestSqueezeMixUnsqueeze(TransformTests):
    shape = (2, 2, 4)

    def make(self, context_dim=0):
        return Compose([Squeeze(), InvConv1x1(8), ChannelCoupling(8, hidden=8), Unsqueeze()])


class TestUnsqueezeMixSqueeze(TransformTests):
    shape = (8, 1, 2)

    def make(self, context_dim=0):
        return Compose([Unsqueeze(), ChannelCoupling(2, hidden=8, scale="tanh"), Squeeze()])


class TestSplitWithLearnedPrior(TransformTests):
    shape = (4, 2, 3)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return Split(4, inner=ChannelCoupling(2, hidden=8, context_dim=context_dim), context_dim=context_dim)


class TestSplitWithoutPrior(TransformTests):
    shape = (5, 2, 2)

    def make(self, context_dim=0):
        return Split(5, inner=initialized(ActNorm(3)), learned_prior=False)


class TestLogit(UnitIntervalInputs, TransformTests):
    shape = (4, 2, 3)

    def make(self, context_dim=0):
        return Logit(0.05)


class TestShift(TransformTests):
    shape = (2, 3, 3)

    def make(self, context_dim=0):
        return Shift(-0.5)


class TestGlowStep(TransformTests):
    shape = (4, 2, 3)

    def make(self, context_dim=0):
        return initialized(Compose([ActNorm(4), InvConv1x1(4), ChannelCoupling(4, hidden=8)]))


# Whole models: the base adds 0.3σ noise to every weight, and deep stacks of such layers get too
# ill-conditioned for 1e-9 round trips in float64, so these are one step per level (their wiring
# at three levels is checked below against sample_and_log_prob).
class TestGlowTransform(TransformTests):
    shape = (1, 4, 4)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return initialized(Glow(self.shape, levels=2, steps=1, hidden=4, coupling="sigmoid",
                                context_dim=context_dim)).transform


class TestGlowAdditivePlainConvTwoChannels(TransformTests):
    shape = (2, 4, 4)

    def make(self, context_dim=0):
        return initialized(Glow(self.shape, levels=2, steps=1, hidden=4, coupling="additive", lu=False)).transform


class TestRealNVPImageTransform(TransformTests):
    shape = (1, 4, 4)
    context_dims = (0, 3)

    def make(self, context_dim=0):
        return initialized(RealNVPImage(self.shape, scales=2, hidden=4, logit=None,
                                        context_dim=context_dim)).transform


# ---- layer facts ---------------------------------------------------------------------------------

def test_actnorm_first_training_batch_leaves_with_zero_mean_unit_variance():
    norm = ActNorm(3)
    scale, shift = torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1), torch.tensor([5.0, -3.0, 0.0]).view(1, 3, 1, 1)
    x = torch.randn(32, 3, 5, 5) * scale + shift
    y, log_abs_det = norm(x)
    assert bool(norm.initialized)
    assert y.mean((0, 2, 3)).abs().max() < 1e-5
    assert (y.var((0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4
    expected = -25 * torch.log(x.var((0, 2, 3), unbiased=False)).sum() / 2
    assert torch.allclose(log_abs_det, expected.expand(32), rtol=1e-4)


def test_actnorm_initialises_once_and_survives_save_and_load():
    norm = ActNorm(2)
    norm(torch.randn(16, 2, 3, 3) * 4 + 1)
    state = {k: v.clone() for k, v in norm.state_dict().items()}
    norm(torch.randn(16, 2, 3, 3) * 100)  # a second batch must not re-initialise
    assert all(torch.equal(norm.state_dict()[k], v) for k, v in state.items())
    loaded = ActNorm(2)
    loaded.load_state_dict(state)
    x = torch.randn(4, 2, 3, 3) * 100
    assert torch.equal(loaded(x)[0], norm(x)[0])


def test_actnorm_does_not_initialise_in_eval_mode_or_backwards():
    norm = ActNorm(2).eval()
    x = torch.randn(8, 2, 3, 3) * 5
    assert torch.equal(norm(x)[0], x) and not bool(norm.initialized)
    norm.train()
    norm.inverse(x)
    assert not bool(norm.initialized)


def test_actnorm_waits_for_a_batch_with_a_spread_to_measure():
    # One row of a vector has no spread: initialising from it set log-scales of -½ log eps ≈ 6.9 and
    # a freshly built flow's first log_prob of one point came out at +24 nats, for good.
    from flowforge.distributions import Flow, StandardNormal

    norm = ActNorm(4)
    flow, x = Flow(Compose([norm]), StandardNormal(4)), torch.randn(1, 4)
    assert torch.allclose(flow.log_prob(x), StandardNormal(4).log_prob(x)) and not bool(norm.initialized)
    flow.log_prob(3 + 2 * torch.randn(256, 4))  # the first batch with a spread initialises it
    assert bool(norm.initialized)
    image_norm = ActNorm(2)
    image_norm(torch.randn(1, 2, 3, 3))  # one image still has 9 values per channel
    assert bool(image_norm.initialized)


@pytest.mark.parametrize("spatial", [(4, 4), (3, 5), ()])
def test_lu_and_plain_1x1_convolutions_agree_for_the_same_matrix(spatial):
    torch.manual_seed(0)
    lu = InvConv1x1(5, lu=True)
    with torch.no_grad():
        lu.log_s.add_(0.5 * torch.randn(5))
        lu.lower.add_(0.5 * torch.randn(5, 5))
        lu.upper.add_(0.5 * torch.randn(5, 5))
    plain = InvConv1x1(5, lu=False)
    with torch.no_grad():
        plain.matrix.copy_(lu.weight())
    x = torch.randn(3, 5, *spatial)
    (y_lu, lad_lu), (y_plain, lad_plain) = lu(x), plain(x)
    assert torch.allclose(y_lu, y_plain, atol=1e-6)
    assert torch.allclose(lad_lu, lad_plain, atol=1e-4)
    pixels = math.prod(spatial)
    assert torch.allclose(lad_lu, pixels * torch.linalg.slogdet(lu.weight())[1].expand(3), atol=1e-4)
    assert abs(float(lad_lu[0].detach())) > 0.1  # the perturbed matrix is no rotation: the check has teeth


def test_invconv_starts_as_a_rotation():
    conv = InvConv1x1(6)
    w = conv.weight()
    assert torch.allclose(w @ w.T, torch.eye(6), atol=1e-5)


@pytest.mark.parametrize("scale", ["tanh", "additive"])
def test_coupling_with_zero_last_layer_starts_as_identity(scale):
    x = torch.randn(2, 4, 6, 6)
    y, log_abs_det = ChannelCoupling(4, hidden=8, scale=scale)(x)
    assert torch.equal(y, x) and torch.equal(log_abs_det, torch.zeros(2))


def test_glow_coupling_starts_as_a_fixed_sigmoid_scale():
    x = torch.randn(2, 4, 3, 3)
    y, log_abs_det = ChannelCoupling(4, hidden=8)(x)
    s = torch.sigmoid(torch.tensor(2.0))
    assert torch.equal(y[:, :2], x[:, :2]) and torch.allclose(y[:, 2:], x[:, 2:] * s)
    assert torch.allclose(log_abs_det, torch.full((2,), 18 * math.log(s)))


def test_masks_are_complementary():
    board = checkerboard_mask((2, 4, 4))
    assert torch.equal(board + checkerboard_mask((2, 4, 4), 1), torch.ones(2, 4, 4))
    assert board.sum() == 16 and torch.equal(board[0], board[1])
    assert channel_mask((4, 2, 2))[:2].all() and not channel_mask((4, 2, 2))[2:].any()


def test_masked_coupling_keeps_the_masked_pixels():
    mask = checkerboard_mask((1, 4, 4))
    layer = MaskedCoupling(mask, hidden=8)
    for p in layer.parameters():
        p.data.normal_()
    x = torch.randn(3, 1, 4, 4)
    y, _ = layer(x)
    assert torch.equal(y * mask, x * mask) and not torch.allclose(y, x)


def test_squeeze_moves_each_2x2_patch_into_channels():
    x = torch.arange(2 * 4 * 4.0).view(1, 2, 4, 4)
    y, _ = Squeeze()(x)
    assert y.shape == (1, 8, 2, 2)
    # channel 4c + 2i + j at (h, w) holds x[c, 2h + i, 2w + j]
    assert y[0, 4 * 1 + 2 * 1 + 0, 0, 1] == x[0, 1, 1, 2]
    back, log_abs_det = Squeeze().inverse(y)
    assert torch.equal(back, x) and torch.equal(log_abs_det, torch.zeros(1))
    assert torch.equal(Unsqueeze()(y)[0], x) and torch.equal(Unsqueeze().inverse(x)[0], y)
    with pytest.raises(ValueError, match="even"):
        Squeeze()(torch.zeros(1, 1, 3, 4))


def test_split_log_det_is_exactly_the_learned_gaussian_prior():
    torch.manual_seed(0)
    split = Split(4)
    for p in split.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    split = split.double()
    y, log_abs_det = split(x)
    standard = torch.distributions.Normal(0.0, 1.0)
    mean, log_std = split.prior(x[:, :2]).chunk(2, dim=1)
    prior = torch.distributions.Normal(mean, log_std.exp()).log_prob(x[:, 2:]).flatten(1).sum(1)
    kept = standard.log_prob(x[:, :2]).flatten(1).sum(1)
    via_flow = standard.log_prob(y).flatten(1).sum(1) + log_abs_det
    assert torch.allclose(via_flow, kept + prior, atol=1e-10)
    assert torch.equal(y[:, :2], x[:, :2])


# ---- Glow and the image RealNVP as flows -------------------------------------------------------

def small_glow(**options):
    torch.manual_seed(0)
    flow = Glow((1, 8, 8), levels=2, steps=2, hidden=16, **options)
    flow.training_loss(torch.randint(0, 256, (32, 1, 8, 8)).float(), "mle")  # data-dependent init
    for p in flow.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return flow.eval()


def test_glow_forward_returns_z_shaped_like_x_and_inverts():
    flow = small_glow()
    x = torch.rand(4, 1, 8, 8)
    z, _ = flow.forward(x)
    assert z.shape == x.shape
    assert torch.allclose(flow.inverse(z)[0], x, atol=1e-5)
    rgb = Glow((3, 8, 8), levels=3, steps=1, hidden=8)
    assert rgb.forward(torch.rand(2, 3, 8, 8))[0].shape == (2, 3, 8, 8)


def test_glow_first_training_batch_initialises_every_actnorm():
    flow = Glow((1, 8, 8), levels=2, steps=3, hidden=8)
    norms = [m for m in flow.modules() if isinstance(m, ActNorm)]
    assert len(norms) == 6 and not any(bool(m.initialized) for m in norms)
    flow.training_loss(torch.randint(0, 256, (16, 1, 8, 8)).float(), "mle")
    assert all(bool(m.initialized) for m in norms)


def three_level_glow():
    torch.manual_seed(1)
    return initialized(Glow((2, 8, 8), levels=3, steps=2, hidden=8, coupling="additive")).eval()


@pytest.mark.parametrize("build", [small_glow, three_level_glow,
                                   lambda: initialized(RealNVPImage((1, 8, 8), hidden=8)).eval()])
def test_log_prob_agrees_with_sample_and_log_prob(build):
    flow = build()
    x, log_p = flow.sample_and_log_prob(16, generator=torch.Generator().manual_seed(3))
    assert x.shape == (16, *flow.image_shape)
    assert torch.allclose(flow.log_prob(x), log_p, atol=1e-3, rtol=1e-5)


def test_temperature_scales_the_latent():
    flow = small_glow()
    z = flow.base.sample(8, generator=torch.Generator().manual_seed(5))
    x = flow.sample(8, temperature=0.7, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(flow.forward(x)[0], 0.7 * z, atol=1e-4)


def test_bits_per_dim_matches_a_hand_computation():
    flow = small_glow(bits=4)
    images = torch.randint(0, 256, (7, 1, 8, 8)).float()
    # By hand: 4-bit level k = ⌊x / 16⌋, y = (k + u) / 16, bpd = (−log p(y) + D·log 2^4) / (D·ln 2), D = 64.
    u = torch.rand(images.shape, generator=torch.Generator().manual_seed(0))
    y = (torch.floor(images / 16) + u) / 16
    with torch.no_grad():
        by_hand = (-flow.log_prob(y) + 64 * math.log(16)) / (64 * math.log(2))
        ours = flow.bits_per_dim(images, torch.Generator().manual_seed(0))
    assert torch.allclose(ours, by_hand, atol=1e-5)
    # the evaluator keys each image's noise on seed 0 and the image itself
    keyed = (torch.floor(images / 16) + keyed_noise(torch.floor(images / 16), 0)) / 16
    with torch.no_grad():
        keyed_by_hand = (-flow.log_prob(keyed) + 64 * math.log(16)) / (64 * math.log(2))
    summary = nll_summary(flow, images.numpy(), ("bits_per_dim",))
    assert summary["bits_per_dim"] == pytest.approx(float(keyed_by_hand.mean()), abs=1e-5)
    assert summary["nll"] == pytest.approx(float(keyed_by_hand.mean()) * 64 * math.log(2), rel=1e-5)
    assert bits_per_dim(0.0, 10, 5) == pytest.approx(5.0)  # a uniform density on [0, 1]^D: `bits` bits a pixel


def test_logit_jacobian_is_part_of_the_likelihood():
    torch.manual_seed(0)
    flow = initialized(RealNVPImage((1, 4, 4), scales=1, hidden=8, logit=0.1)).eval()
    x = torch.rand(3, 1, 4, 4)
    p = 0.1 + 0.8 * x
    y = torch.log(p / (1 - p))
    inner = Compose(list(flow.transform.transforms)[1:])
    z, inner_lad = inner(y)
    logit_lad = (math.log(0.8) - torch.log(p * (1 - p))).flatten(1).sum(1)
    assert torch.allclose(flow.log_prob(x), flow.base.log_prob(z) + inner_lad + logit_lad, atol=1e-4)


def test_dequantize_and_quantize_round_trip():
    images = torch.randint(0, 256, (5, 1, 4, 4)).float()
    y = dequantize(images, 5)
    assert ((y >= 0) & (y < 1)).all()
    assert torch.equal(torch.floor(y * 32), reduce_bits(images, 5))
    assert torch.equal(quantize(y, 5), reduce_bits(images, 5) * 8)
    with pytest.raises(ValueError, match="bits"):
        reduce_bits(images, 9)


def test_image_flow_training_loss_is_the_dequantised_nll():
    flow = small_glow(bits=4)
    images = torch.randint(0, 256, (6, 1, 8, 8)).float()
    torch.manual_seed(11)
    loss = flow.training_loss(images, "mle")
    torch.manual_seed(11)
    assert torch.allclose(loss, -flow.discrete_log_prob(images).mean())
    with pytest.raises(ValueError, match="maximum likelihood"):
        flow.training_loss(images, "flow-matching")


@pytest.mark.parametrize("name, shape, options, message", [
    ("glow", (1, 6, 6), {"levels": 2}, "divisible by 4"),
    ("glow", 4, {}, "vector data"),
    ("glow", (1, 8, 8), {"coupling": "cubic"}, "unknown coupling"),
    ("glow", (1, 8, 8), {"bits": 9}, "bits"),
    ("realnvp-image", (1, 6, 6), {"scales": 3}, "divisible by 4"),
    ("realnvp", (1, 8, 8), {}, "models vectors"),
])
def test_bad_model_options_are_refused(name, shape, options, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, shape, **options)


def test_split_prior_alone_uses_the_context():
    torch.manual_seed(0)
    split = Split(4, inner=None, context_dim=3)
    with torch.no_grad():
        for p in split.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 4, 2, 2)
    a, lad_a = split(x, torch.randn(2, 3))
    b, lad_b = split(x, torch.randn(2, 3))
    assert torch.equal(a[:, :2], b[:, :2]) and not torch.allclose(a[:, 2:], b[:, 2:])
    assert not torch.allclose(lad_a, lad_b)


def test_class_conditional_glow_samples_and_scores_per_class():
    flow = Glow((1, 4, 4), levels=2, steps=1, hidden=8, context_dim=10)
    labels = torch.nn.functional.one_hot(torch.arange(3), 10).float()
    images = flow.sample((2,), context=labels, temperature=0.7)
    assert images.shape == (2, 3, 1, 4, 4)
    scores = flow.discrete_log_prob(torch.full((3, 1, 4, 4), 128.0), context=labels)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
