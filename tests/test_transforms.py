"""Every transform passes the shared base; a few layer-specific facts on top."""

import pytest
import torch

from flowforge.models import RealNVP
from flowforge.transforms import AffineCoupling, Compose, Permutation, Reverse, Standardize
from transform_base import TransformTests


class TestCouplingAlternating2D(TransformTests):
    shape = (2,)

    def make(self):
        return AffineCoupling([1, 0], hidden=16, depth=2)


class TestCouplingD3Split2(TransformTests):
    shape = (3,)

    def make(self):
        return AffineCoupling([1, 1, 0], hidden=16, depth=3)


class TestCouplingOddDimScatteredMask(TransformTests):
    shape = (5,)

    def make(self):
        return AffineCoupling([0, 1, 0, 0, 1], hidden=8, depth=1, activation="tanh")


class TestPermutation(TransformTests):
    shape = (4,)

    def make(self):
        return Permutation(torch.tensor([2, 0, 3, 1]))


class TestReverse(TransformTests):
    shape = (3,)

    def make(self):
        return Reverse()


class TestStandardize(TransformTests):
    shape = (3,)

    def make(self):
        s = Standardize(3)
        s.set_statistics(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 3.0, 1.5]))
        return s


class TestCompose(TransformTests):
    shape = (3,)

    def make(self):
        return Compose([AffineCoupling([1, 0, 1], hidden=8, depth=1), Reverse(),
                        AffineCoupling([0, 1, 1], hidden=8, depth=1)])


class TestRealNVPStack(TransformTests):
    shape = (4,)

    def make(self):
        return RealNVP(4, num_layers=4, hidden=16, depth=2, standardize=True).transform


def test_coupling_starts_as_identity():
    layer = AffineCoupling([1, 0, 1], hidden=8, depth=2)
    x = torch.randn(6, 3)
    y, lad = layer(x)
    assert torch.equal(y, x) and torch.equal(lad, torch.zeros(6))


def test_coupling_leaves_masked_features_unchanged():
    layer = AffineCoupling([1, 1, 0], hidden=8, depth=2)
    for p in layer.parameters():
        p.data.normal_()
    x = torch.randn(6, 3)
    y, _ = layer(x)
    assert torch.equal(y[:, :2], x[:, :2]) and not torch.allclose(y[:, 2], x[:, 2])


def test_coupling_scale_is_tanh_bounded():
    layer = AffineCoupling([1, 0], hidden=8, depth=1)
    for p in layer.parameters():
        p.data.normal_(0, 50)
    _, lad = layer(torch.randn(100, 2) * 10)
    assert lad.abs().max() <= 1.0


@pytest.mark.parametrize("mask", [[1, 1], [0, 0], [1, 2]])
def test_coupling_rejects_degenerate_masks(mask):
    with pytest.raises(ValueError):
        AffineCoupling(mask)


def test_permutation_rejects_non_permutation():
    with pytest.raises(ValueError):
        Permutation(torch.tensor([0, 0, 1]))


def test_realnvp_masks_alternate():
    flow = RealNVP(4, num_layers=3, hidden=8, depth=1)
    masks = [layer.mask.long().tolist() for layer in flow.transform.transforms]
    assert masks == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]


def test_realnvp_rejects_mask_of_wrong_length():
    with pytest.raises(ValueError):
        RealNVP(3, mask=[1, 0])
