"""Variational inference with flows: fit a flow q to an unnormalised density p̃ (a posterior, a
Boltzmann density, an energy), estimate its normaliser log Z and correct q's errors by importance
weights (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", arXiv:1505.05770).

    from flowforge.models import NSF
    from flowforge.variational import fit, load_target, log_weights, resample
    flow, target = NSF(2, standardize=True), load_target("gmm")   # fit() places q on the target's scale
    result = fit(flow, target, steps=2000)                 # ELBO, log Z ± SE, ESS/n, Pareto k̂
    x, log_w = log_weights(flow, target, 8000)             # draws of q and their log p̃/q
    draws = resample(x, log_w, 1000)                       # importance-resampled: closer to p
"""

from flowforge.lazy import lazy_names

__all__ = ["fit", "fit_run", "fit_config", "load_target", "built_in_target", "Target", "diagnose",
           "importance_summary", "pareto_k", "log_weights", "resample", "reverse_kl", "sticking_the_landing", "forward_kl", "jeffreys",
           "student_t_base", "target_placement", "set_target_scale", "place_on_target"]
__getattr__, __dir__ = lazy_names(__name__, {
    "fit": ".fitting", "fit_run": ".fitting", "fit_config": ".fitting", "load_target": ".targets",
    "built_in_target": ".targets", "Target": ".targets", "diagnose": ".diagnostics",
    "importance_summary": ".diagnostics", "pareto_k": ".diagnostics", "log_weights": ".diagnostics",
    "resample": ".diagnostics",
    "reverse_kl": ".objectives", "sticking_the_landing": ".objectives", "forward_kl": ".objectives",
    "jeffreys": ".objectives", "student_t_base": ".fitting", "target_placement": ".placement",
    "set_target_scale": ".fitting", "place_on_target": ".fitting"})
