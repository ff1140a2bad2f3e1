"""The checks every transform must pass (as in nflows: one base, one tiny subclass per layer).

A subclass sets ``shape`` (one sample's shape) and ``make()`` (a fresh transform); the base
perturbs its parameters away from any identity initialisation and checks, in float64:
invertibility, log|det J| against the brute-force autograd Jacobian, the inverse's
log-det, output shapes and batch independence.
"""

from __future__ import annotations

import torch

from flowforge.transforms import Transform

BATCH = 5


class TransformTests:
    shape: tuple[int, ...] = (2,)

    def make(self) -> Transform:  # pragma: no cover - overridden
        raise NotImplementedError

    def transform(self) -> Transform:
        torch.manual_seed(0)
        t = self.make().double()
        with torch.no_grad():
            for p in t.parameters():  # leave the identity start: test a generic map
                p.add_(0.3 * torch.randn_like(p))
        return t

    def inputs(self, batch: int = BATCH) -> torch.Tensor:
        return torch.randn(batch, *self.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def test_inverse_of_forward_is_identity(self):
        t, x = self.transform(), self.inputs()
        with torch.no_grad():
            y, _ = t(x)
            x_back, _ = t.inverse(y)
        assert (x_back - x).abs().max() < 1e-9

    def test_forward_of_inverse_is_identity(self):
        t, y = self.transform(), self.inputs()
        with torch.no_grad():
            x, _ = t.inverse(y)
            y_back, _ = t(x)
        assert (y_back - y).abs().max() < 1e-9

    def test_log_abs_det_matches_autograd_jacobian(self):
        t, x = self.transform(), self.inputs()
        _, log_abs_det = t(x)
        for i in range(BATCH):
            def f(v, i=i):
                return t(v.view(1, *self.shape))[0].flatten()
            jac = torch.autograd.functional.jacobian(f, x[i].flatten())
            assert abs(torch.linalg.slogdet(jac)[1] - log_abs_det[i]) < 1e-6

    def test_inverse_log_abs_det_is_minus_forward(self):
        t, x = self.transform(), self.inputs()
        with torch.no_grad():
            y, forward_lad = t(x)
            _, inverse_lad = t.inverse(y)
        assert (forward_lad + inverse_lad).abs().max() < 1e-9

    def test_shapes(self):
        t, x = self.transform(), self.inputs()
        y, lad = t(x)
        x_back, lad_inv = t.inverse(y)
        assert y.shape == x.shape == x_back.shape
        assert lad.shape == lad_inv.shape == (BATCH,)

    def test_batch_independence(self):
        t, x = self.transform(), self.inputs()
        with torch.no_grad():
            y_all, lad_all = t(x)
            other = x.clone()
            other[1:] = torch.randn_like(other[1:])
            y_one, lad_one = t(other)
        assert torch.allclose(y_all[0], y_one[0], atol=1e-12)
        assert torch.allclose(lad_all[0], lad_one[0], atol=1e-12)
