"""benchmarks/variational.py: flowforge's flow is no larger than the normflows flows it is measured
against, and one short run scores every target against every peer."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("normflows")

from benchmarks import variational as bench  # noqa: E402


def _size(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_flowforge_flow_is_no_larger_than_any_peer():
    ours = _size(bench.flowforge_flow(seed=0))
    peers = {name: _size(build()) for name, build in bench.normflows_peers(8, 64).items()}
    assert set(peers) == {"RealNVP", "NSF"}
    assert all(ours <= theirs for theirs in peers.values()), (ours, peers)


def test_a_short_run_scores_each_target_against_each_peer():
    budget = 0.3
    rows = bench.compare(budget, layers=2, hidden=8, seed=0, objectives=["forward-kl"], peers=["RealNVP", "NSF"])
    assert [(r["target"], r["peer"]) for r in rows] == [
        (t, p) for t in ("two moons", "ring mixture", "circular mixture") for p in ("RealNVP", "NSF")]
    for row in rows:
        for side in (row["normflows"], row["flowforge"]):
            assert all(math.isfinite(side[k]) for k in ("elbo", "elbo_stderr", "ess_per_draw", "kl", "log_z"))
            assert side["elbo_stderr"] > 0
            assert side["elbo"] <= row["log_z"] + 4 * side["elbo_stderr"]  # ELBO ≤ the true log Z, up to noise
            assert side["kl"] == pytest.approx(row["log_z"] - side["elbo"])
            assert side["ess_per_draw"] > 0 and side["steps"] >= 1
            assert side["seconds"] >= budget  # each trains for the whole shared budget
        assert row["flowforge"]["params"] == _size(bench.flowforge_flow(seed=0))
