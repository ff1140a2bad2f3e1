"""The checks every transform must pass (as in nflows: one base, one tiny subclass per layer).

A subclass sets ``shape`` (one sample's shape) and ``make(context_dim)`` (a fresh transform);
layers that can be conditioned list ``context_dims = (0, 3)`` and every check runs once
without a context and once with random contexts. The base perturbs the parameters away from
any identity initialisation and checks, in float64: invertibility, log|det J| against the
brute-force autograd Jacobian, the inverse's log-det, output shapes and batch independence;
then that a conditioned layer's output moves with its context alone, that an unconditioned
layer ignores a context, and a float32 round trip.
"""

from __future__ import annotations

import torch

from flowforge.transforms import Transform

BATCH = 5
CONTEXT_DIM = 3


class TransformTests:
    shape: tuple[int, ...] = (2,)
    context_dims: tuple[int, ...] = (0,)
    float32_tolerance: float = 1e-4

    def make(self, context_dim: int = 0) -> Transform:  # pragma: no cover - overridden
        raise NotImplementedError

    def make_for_float32(self, context_dim: int = 0) -> Transform:
        """The layer for the float32 pass (an ODE layer loosens its float64 solver tolerances here)."""
        return self.make(context_dim)

    def transform(self, context_dim: int = 0, dtype=torch.float64) -> Transform:
        torch.manual_seed(0)
        t = (self.make(context_dim) if dtype == torch.float64 else self.make_for_float32(context_dim)).to(dtype)
        with torch.no_grad():
            for p in t.parameters():  # leave the identity start: test a generic map
                p.add_(0.3 * torch.randn_like(p))
        return t

    def inputs(self, batch: int = BATCH) -> torch.Tensor:
        return torch.randn(batch, *self.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def context(self, context_dim: int, batch: int = BATCH, seed: int = 2) -> torch.Tensor | None:
        if context_dim == 0:
            return None
        return torch.randn(batch, context_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

    def test_inverse_of_forward_is_identity(self, context_dim):
        t, x, c = self.transform(context_dim), self.inputs(), self.context(context_dim)
        with torch.no_grad():
            y, _ = t(x, c)
            x_back, _ = t.inverse(y, c)
        assert (x_back - x).abs().max() < 1e-9

    def test_forward_of_inverse_is_identity(self, context_dim):
        t, y, c = self.transform(context_dim), self.inputs(), self.context(context_dim)
        with torch.no_grad():
            x, _ = t.inverse(y, c)
            y_back, _ = t(x, c)
        assert (y_back - y).abs().max() < 1e-9

    def test_log_abs_det_matches_autograd_jacobian(self, context_dim):
        t, x, c = self.transform(context_dim), self.inputs(), self.context(context_dim)
        _, log_abs_det = t(x, c)
        for i in range(BATCH):
            row = None if c is None else c[i:i + 1]

            def f(v, row=row):
                return t(v.view(1, *self.shape), row)[0].flatten()
            jac = torch.autograd.functional.jacobian(f, x[i].flatten())
            assert abs(torch.linalg.slogdet(jac)[1] - log_abs_det[i]) < 1e-6

    def test_inverse_log_abs_det_is_minus_forward(self, context_dim):
        t, x, c = self.transform(context_dim), self.inputs(), self.context(context_dim)
        with torch.no_grad():
            y, forward_lad = t(x, c)
            _, inverse_lad = t.inverse(y, c)
        assert (forward_lad + inverse_lad).abs().max() < 1e-9

    def test_shapes(self, context_dim):
        t, x, c = self.transform(context_dim), self.inputs(), self.context(context_dim)
        y, lad = t(x, c)
        x_back, lad_inv = t.inverse(y, c)
        assert y.shape == x.shape == x_back.shape
        assert lad.shape == lad_inv.shape == (BATCH,)

    def test_batch_independence(self, context_dim):
        t, x, c = self.transform(context_dim), self.inputs(), self.context(context_dim)
        with torch.no_grad():
            y_all, lad_all = t(x, c)
            other = x.clone()
            other[1:] = torch.randn_like(other[1:])
            y_one, lad_one = t(other, c)
        assert torch.allclose(y_all[0], y_one[0], atol=1e-12)
        assert torch.allclose(lad_all[0], lad_one[0], atol=1e-12)

    def test_context_is_used_or_ignored(self, context_dim):
        t, x = self.transform(context_dim), self.inputs()
        with torch.no_grad():
            if context_dim == 0:  # an unconditioned layer ignores a context it is handed
                plain, moved = t(x), t(x, self.context(CONTEXT_DIM))
            else:  # a conditioned one changes when only the context does
                plain, moved = t(x, self.context(context_dim, seed=2)), t(x, self.context(context_dim, seed=3))
        same = torch.equal(plain[0], moved[0]) and torch.equal(plain[1], moved[1])
        assert same == (context_dim == 0)

    def test_float32_round_trip(self, context_dim):
        t = self.transform(context_dim, torch.float32)
        x, c = self.inputs().float(), self.context(context_dim)
        c = None if c is None else c.float()
        with torch.no_grad():
            y, forward_lad = t(x, c)
            x_back, inverse_lad = t.inverse(y, c)
        scale = 1 + x.abs().max()
        assert y.dtype == x_back.dtype == forward_lad.dtype == torch.float32
        assert (x_back - x).abs().max() < self.float32_tolerance * scale
        assert (forward_lad + inverse_lad).abs().max() < self.float32_tolerance * (1 + forward_lad.abs().max())


__all__ = ["TransformTests", "BATCH", "CONTEXT_DIM"]
