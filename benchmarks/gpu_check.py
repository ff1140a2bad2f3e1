"""Every model trained a few hundred steps with its default recipe on CUDA and on the CPU, side by
side: steps/s and samples/s, and a loud failure on any tensor left on the wrong device.

    python -m benchmarks.gpu_check              # under 5 minutes on one GPU
    python -m benchmarks.gpu_check --steps 50   # a smoke run

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
