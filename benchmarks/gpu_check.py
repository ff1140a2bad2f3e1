"""Every model trained a few hundred steps with its default recipe on CUDA and on the CPU, side by
side: steps/s and samples/s, and a loud failure on any tensor left on the wrong device. Then each
variational recipe (``flowforge fit``) fitted to a built-in target on both, and the Python ``fit()``
of a RealNVP on a mixture base of learned Student-t components: steps/s (the optimisation
loop's, evaluations during it included), the ELBO and the ESS per draw.

    python -m benchmarks.gpu_check              # a few minutes on one GPU (the training table alone: under 5)
    python -m benchmarks.gpu_check --steps 50 --fit-steps 50   # a smoke run

Without a CUDA device it says so and exits with status 2 (the CPU column alone proves nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from flowforge.training import TrainConfig, load_run, train

RUNS = [("realnvp", "moons"), ("nsf", "moons"), ("maf", "moons"), ("ffjord", "pinwheel"),
        ("glow", "digits"), ("realnvp-image", "digits")]
FITS = [("nsf", "gmm"), ("realnvp", "moons"), ("maf", "ring"), ("realnvp", "funnel")]  # flowforge fit's recipes


def misplaced(module: torch.nn.Module, device: torch.device) -> list[str]:
    """Names of the parameters and buffers of ``module`` that are not on ``device``."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, t in tensors if t.device.type != device.type]


def measure(model: str, data: str, device: str, steps: int, root: Path) -> dict:
    run = root / f"{model}-{device}"
    config = TrainConfig(model=model, data=data, steps=steps, eval_every=steps, device=device, seed=0)
    results = train(config, run, progress_bar=False, force=True)
    flow, _, _ = load_run(run, device=device)
    wrong = misplaced(flow, torch.device(device))
    if wrong:
        raise SystemExit(f"DEVICE MISMATCH: {model} on {device}: {', '.join(wrong[:5])} elsewhere")
    generator = torch.Generator(device).manual_seed(0)
    with torch.inference_mode():
        x = flow.sample(256, generator=generator)  # warm-up, and a device check of the samples
        if x.device.type != torch.device(device).type:
            raise SystemExit(f"DEVICE MISMATCH: {model} samples on {x.device}, asked for {device}")
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < 2.0:
            flow.sample(1024, generator=generator)
            n += 1024
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        samples_per_s = n / (time.perf_counter() - start)
    return {"steps_per_s": results["steps"] / results["train_seconds"], "samples_per_s": samples_per_s,
            "test": results.get("test_bits_per_dim", results["test_nll"])}


def measure_fit(model: str, target: str, device: str, steps: int, root: Path) -> dict:
    """``flowforge fit``'s recipe for ``steps`` steps on ``device``, then the run reloaded there."""
    from flowforge.variational.fitting import fit_config, fit_run

    run = root / f"fit-{model}-{target}-{device}"
    config = fit_config(model, target, steps=steps, objective="forward-then-stl", eval_every=max(1, steps // 2),
                        device=device, seed=0)
    results = fit_run(config, run, progress_bar=False, force=True)
    flow, _, _ = load_run(run, device=device)
    return fit_figures(flow, device, f"fit {model}/{target}", results, results["train_seconds"])


def measure_python_fit(device: str, steps: int) -> dict:
    """``fit()`` of a RealNVP on a base of 8 Student-t components (learned locations and scales, the
    parameters a base carries) in float32 on ``device``."""
    from flowforge.models import RealNVP
    from flowforge.variational import fit, load_target
    from flowforge.variational.fitting import MODEL_RECIPES, set_target_scale, student_t_base

    torch.manual_seed(0)
    flow = RealNVP(2, standardize=True, mixed_precision=False, **MODEL_RECIPES["realnvp"])
    set_target_scale(flow, 1.5)
    flow = student_t_base(flow, components=8).to(device)
    result = fit(flow, load_target("moons"), steps=steps, draws=512, eval_every=max(1, steps // 2))
    return fit_figures(flow, device, "fit()", result, result["seconds"])


def fit_figures(flow, device: str, what: str, results: dict, seconds: float) -> dict:
    """A fit's steps/s, ELBO and ESS per draw, after a loud failure on any tensor off ``device``."""
    wrong = misplaced(flow, torch.device(device))
    if wrong:
        raise SystemExit(f"DEVICE MISMATCH: {what} on {device}: {', '.join(wrong[:5])} elsewhere")
    return {"steps_per_s": results["steps"] / max(seconds, 0.01), "elbo": results["elbo"],
            "ess": results["ess_per_draw"]}


def fit_table(steps: int, root: Path) -> None:
    print(f"\n{'variational fit':<24}{'cpu steps/s':>12}{'cuda steps/s':>13}{'ratio':>7}"
          f"{'cpu ELBO':>10}{'cuda ELBO':>10}{'cpu ESS':>9}{'cuda ESS':>9}")
    rows = [(f"{m}/{t}", lambda d, m=m, t=t: measure_fit(m, t, d, steps, root)) for m, t in FITS]
    rows.append(("fit() mixture/moons", lambda d: measure_python_fit(d, steps)))
    for name, measure_on in rows:
        cpu, gpu = measure_on("cpu"), measure_on("cuda")
        print(f"{name:<24}{cpu['steps_per_s']:>12.1f}{gpu['steps_per_s']:>13.1f}"
              f"{gpu['steps_per_s'] / cpu['steps_per_s']:>6.1f}x{cpu['elbo']:>10.3f}{gpu['elbo']:>10.3f}"
              f"{cpu['ess']:>9.3f}{gpu['ess']:>9.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fit-steps", type=int, default=400, help="steps of each variational fit")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name(0)} · torch {torch.__version__} · {args.steps} steps per run")
    print(f"{'model/data':<24}{'cpu steps/s':>12}{'cuda steps/s':>13}{'ratio':>7}"
          f"{'cpu samples/s':>15}{'cuda samples/s':>16}{'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for model, data in RUNS:
            cpu, gpu = (measure(model, data, device, args.steps, Path(tmp)) for device in ("cpu", "cuda"))
            print(f"{model + '/' + data:<24}{cpu['steps_per_s']:>12.1f}{gpu['steps_per_s']:>13.1f}"
                  f"{gpu['steps_per_s'] / cpu['steps_per_s']:>6.1f}x{cpu['samples_per_s']:>15.0f}"
                  f"{gpu['samples_per_s']:>16.0f}{gpu['samples_per_s'] / cpu['samples_per_s']:>6.1f}x", flush=True)
        fit_table(args.fit_steps, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
