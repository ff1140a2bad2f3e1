"""Property: for every model, the evaluator's log p(x) of a finite input is finite or -inf, never NaN,
over inputs from -1e38 to 1e38, 0 and subnormals included."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flowforge.models import build_model
from flowforge.training import log_prob
from flowforge.transforms import fit_standardization

FINITE = st.floats(-1e38, 1e38, allow_nan=False, allow_infinity=False, allow_subnormal=True)
SPECIAL = [0.0, -0.0, 5e-324, 1e-45, -1e-40, 1e-300, 1e38, -1e38, 3.4e38 / 4]
MODELS = {  # small versions of every model, built as the trainer builds them
    "realnvp": ("realnvp", 2, {"num_layers": 4, "hidden": 16, "depth": 1, "standardize": True}),
    "ffjord": ("ffjord", 2, {"hidden": 8, "depth": 1, "standardize": True}),
    "glow": ("glow", (1, 4, 4), {"levels": 1, "steps": 2, "hidden": 8}),
    "realnvp-image": ("realnvp-image", (1, 4, 4), {"scales": 1, "hidden": 8, "depth": 1}),
    "nsf": ("nsf", 2, {"num_layers": 2, "bins": 4, "hidden": 16, "standardize": True}),
    "nsf-autoregressive": ("nsf", 3, {"num_layers": 2, "bins": 4, "hidden": 16, "autoregressive": True,
                                      "standardize": True}),
    "maf": ("maf", 3, {"num_layers": 2, "hidden": 16, "standardize": True}),
}
PROPERTY = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _model(key):
    name, dim, options = MODELS[key]
    torch.manual_seed(0)
    flow = build_model(name, dim, **options)
    if options.get("standardize"):
        fit_standardization(flow, torch.randn(256, dim) * 3 + 1)
    if isinstance(dim, tuple):  # initialise ActNorm on a first batch, as training would
        flow.log_prob(torch.rand(8, *dim))
    return flow.eval(), dim


def _points(dim):
    shape = (dim,) if isinstance(dim, int) else dim
    return st.integers(1, 6).flatmap(lambda n: arrays(np.float64, (n, *shape), elements=FINITE | st.sampled_from(SPECIAL)))


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return _model(request.param)


def test_log_prob_of_finite_points_is_never_nan(model):
    flow, dim = model

    @PROPERTY
    @given(_points(dim))
    @example(np.full((2, *((dim,) if isinstance(dim, int) else dim)), 1e38))
    @example(np.zeros((1, *((dim,) if isinstance(dim, int) else dim))))
    def check(points):
        with warnings.catch_warnings():  # the -inf scores are announced by warnings; expected here
            warnings.simplefilter("ignore")
            values = log_prob(flow, points).numpy()
        assert values.shape == (len(points),)
        assert not np.isnan(values).any() and (np.isfinite(values) | (values == -math.inf)).all(), values

    check()


def test_density_command_never_prints_nan(trained_run, tmp_path, capsys):
    from cli_harness import cli

    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.uniform(-320, 38, size=(200, 2))
    rows = np.concatenate([magnitudes * rng.choice([-1, 1], size=(200, 2)), [[0, 0], [1e38, 1e38], [1e300, 0]]])
    np.savetxt(tmp_path / "p.csv", rows, delimiter=",", fmt="%.17g")
    code, out, _ = cli(capsys, "density", trained_run, tmp_path / "p.csv")
    values = np.array([float(v) for v in out.split()])
    assert code == 0 and len(values) == len(rows)
    assert not np.isnan(values).any() and (np.isfinite(values) | (values == -math.inf)).all()
    assert np.isfinite(values[-3])  # the origin has a finite density


@pytest.mark.parametrize("grad", [False, True], ids=["evaluating", "training"])
def test_flow_log_prob_itself_is_never_nan_for_finite_float32(grad):
    flow, _ = _model("realnvp")
    with torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = flow.log_prob(torch.tensor([[1e38, 1e38], [-3e38, 1e-45], [0.0, 0.0]]))
    assert not torch.isnan(values).any() and torch.isfinite(values[-1])


def test_the_evaluator_keeps_a_float64_flows_precision_and_names_nan_as_missing():
    flow, _ = _model("realnvp")
    wide = flow.double()
    x = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
    values = log_prob(wide, x)
    assert values.dtype == torch.float64 and torch.equal(values, wide.log_prob(x))  # not rounded to float32
    with pytest.warns(UserWarning) as caught:
        values = log_prob(flow.float(), np.array([[0.1, 0.2], [np.nan, 0.0], [1e39, 0.0]]))
    messages = " ".join(str(w.message) for w in caught)
    assert math.isnan(values[1]) and values[2] == -math.inf and math.isfinite(values[0])
    assert "1 of 3 points hold NaN" in messages and "1 of 3 points hold values beyond float32's range" in messages
    with pytest.raises(ValueError, match=r"got \(2, 3\)"):  # the input's shape, not that of its finite rows
        log_prob(flow, np.array([[0.1, 0.2, 0.3], [np.nan, 0.0, 0.0]]))
