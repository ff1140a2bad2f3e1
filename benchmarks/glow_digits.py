"""Glow on scikit-learn's 8×8 digits (4-bit) for a fixed budget of steps: test bits/dim, flowforge against normflows.

Runs the library's own trainer (``flowforge.training.train``: AdamW, warm-up then cosine decay,
best validation weights kept) on the fixed digits split, then reports the test bits per dimension
at 4 bits (dequantised with fixed noise; a uniform model scores 4.0) and the wall time.

With the ``normflows`` contender it also builds normflows' multi-scale Glow from its own pieces
(``GlowBlock``, ``Squeeze``, ``Merge``, ``GlowBase`` priors in a ``MultiscaleFlow``, as in its README),
of the same size (levels, steps per level, hidden channels; its coupling CNN has two hidden
convolutions like flowforge's ``depth=2``), and trains it by its own ``forward_kld`` on the same
dequantised pixels ((level + u) / 16 − ½, the Shift(−½) flowforge's Glow starts with, volume
preserving) with the same batches, steps, optimiser, schedule, clipping, weight average and
best-validation selection as flowforge's trainer. Both are scored identically:
bpd = (NLL_continuous + D·log 2^bits) / (D·ln 2), the test noise drawn from seed 0 in batches of 256.

    python benchmarks/glow_digits.py                       # the full budget (about 2 minutes a model on 1 idle thread)
    python benchmarks/glow_digits.py --steps 100 --out /tmp/glow_digits_smoke   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from benchmarks.options import names_option
from flowforge.data import load_splits
from flowforge.distributions.dequantization import bits_per_dim, dequantize
from flowforge.models.specs import spec_of
from flowforge.training import TrainConfig, load_run, nll_summary, train
from flowforge.training.ema import EMA
from flowforge.training.evaluate import DEQUANTIZATION_SEED, IMAGE_BATCH
from flowforge.training.loop import learning_rate, make_optimizer, train_step
from flowforge.models.specs import DataInfo

MODEL = {"levels": 2, "steps": 8, "hidden": 64, "depth": 2, "bits": 4}
CONTENDERS = ("flowforge", "normflows")


def run_flowforge(config: TrainConfig, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    results = train(config, args.out, force=True, progress_bar=False)
    seconds = time.perf_counter() - started
    flow, _, _ = load_run(args.out)
    test = nll_summary(flow, load_splits("digits").test, spec_of("glow").metrics)
    return {"library": "flowforge", "test_bits_per_dim": round(test["bits_per_dim"], 4),
            "test_nll_nats": round(test["nll"], 2), "parameters": sum(p.numel() for p in flow.parameters()),
            "best_step": results["best_step"], "steps": results["steps"], "train_seconds": results["train_seconds"],
            "wall_seconds": round(seconds, 1), "n_test": test["n"]}


def normflows_glow(image_shape: tuple[int, int, int], levels: int, steps: int, hidden: int):
    """normflows' multi-scale Glow (its README's recipe, unconditional): per level ``steps`` GlowBlocks after a
    squeeze, half the channels factored out under a learned per-channel Gaussian at every level but the last."""
    import normflows as nf

    channels, height, width = image_shape
    q0, merges, flows = [], [], []
    for i in range(levels):  # i = 0 is the innermost (coarsest) level; log_prob runs from i = levels − 1 down
        flows_ = [nf.flows.GlowBlock(channels * 2 ** (levels + 1 - i), hidden, split_mode="channel", scale=True)
                  for _ in range(steps)]
        flows_ += [nf.flows.Squeeze()]
        flows.append(flows_)
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (channels * 2 ** (levels - i), height // 2 ** (levels - i), width // 2 ** (levels - i))
        else:
            latent = (channels * 2 ** (levels + 1), height // 2 ** levels, width // 2 ** levels)
        q0.append(nf.distributions.GlowBase(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def continuous(images: torch.Tensor, bits: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Stored images → flowforge's continuous pixels in [0, 1), then its Glow's Shift(−½) (log-det 0)."""
    return dequantize(images, bits, generator) - 0.5


def normflows_bits_per_dim(model, images: torch.Tensor, bits: int) -> tuple[float, float]:
    """Mean (bits/dim, discrete NLL in nats) with flowforge's evaluation noise: keyed on seed 0 and each image."""
    dims = images[0].numel()
    model.eval()
    with torch.no_grad():
        nll = torch.cat([-model.log_prob(continuous(chunk, bits, DEQUANTIZATION_SEED), None) for chunk in images.split(IMAGE_BATCH)])
    model.train()
    nll = float(nll.mean())
    return float(bits_per_dim(nll, dims, bits)), nll + dims * bits * math.log(2)


def run_normflows(config: TrainConfig, args: argparse.Namespace) -> dict:
    """flowforge's training recipe (loop.py) around normflows' model and its forward_kld."""
    splits = load_splits("digits")
    bits = MODEL["bits"]
    x_train, x_val, x_test = (torch.as_tensor(a, dtype=torch.float32) for a in (splits.train, splits.val, splits.test))
    torch.manual_seed(config.seed)
    model = normflows_glow(tuple(x_train.shape[1:]), MODEL["levels"], MODEL["steps"], MODEL["hidden"])
    optimizer = make_optimizer(model.parameters(), config.lr, config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    ema = EMA(model, config.ema_decay)
    parameters = list(model.parameters())
    best_val, best_step, best_state, skipped = math.inf, -1, None, 0
    started = time.perf_counter()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        batch = x_train[torch.randint(len(x_train), (config.batch_size,), generator=generator)]
        # −mean log p in [0, 1] units (constant bin volume aside), by the trainer's own step
        if train_step(lambda b: model.forward_kld(continuous(b, bits)), optimizer, parameters, batch,
                      config.grad_clip)[1]:
            ema.update(step)
        else:
            skipped += 1  # flowforge's trainer rolls back and halves the lr instead; counted and reported here
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            with ema.applied():
                val = normflows_bits_per_dim(model, x_val, bits)[1]
                if math.isfinite(val) and val < best_val:
                    best_val, best_step = val, step + 1
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    train_seconds = time.perf_counter() - started
    if best_state is None:
        raise RuntimeError("normflows' Glow reached no finite validation NLL")
    model.load_state_dict(best_state)
    bpd, nll = normflows_bits_per_dim(model, x_test, bits)
    return {"library": "normflows", "test_bits_per_dim": round(bpd, 4), "test_nll_nats": round(nll, 2),
            "parameters": sum(p.numel() for p in model.parameters()), "best_step": best_step,
            "steps": config.steps, "train_seconds": round(train_seconds, 1),
            "wall_seconds": round(time.perf_counter() - started, 1), "n_test": len(x_test),
            "skipped_steps": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500, help="training steps (the budget)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated, from {','.join(CONTENDERS)}")
    parser.add_argument("--out", default="runs/glow_digits", help="flowforge's run directory (replaced)")
    args = parser.parse_args()
    contenders = names_option(parser, "--contenders", args.contenders, list(CONTENDERS))
    torch.set_num_threads(args.threads)

    config = TrainConfig(model="glow", data="digits", steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         eval_every=min(args.eval_every, args.steps), seed=args.seed, model_options=dict(MODEL)
                         ).resolved(DataInfo("image", 1437, (1, 8, 8), 4))  # the rest from Glow's digits recipe
    print(f"budget: {args.steps} steps of batch {args.batch_size} · Glow {MODEL} · lr {args.lr} · "
          f"{args.threads} thread(s) · contenders {', '.join(contenders)}", flush=True)
    rows = []
    for contender in contenders:
        row = (run_flowforge if contender == "flowforge" else run_normflows)(config, args)
        row.update(model=MODEL, batch_size=args.batch_size, lr=args.lr)
        rows.append(row)
        print(f"{contender:<10} test: {row['test_bits_per_dim']:.4f} bits/dim (4-bit digits, {row['n_test']} images) · "
              f"{row['parameters']} parameters · best step {row['best_step']} of {row['steps']} · "
              f"{row['wall_seconds']:.0f} s", flush=True)
        print(json.dumps(row), flush=True)
    if len(rows) > 1:
        best = min(rows, key=lambda r: r["test_bits_per_dim"])
        other = max(rows, key=lambda r: r["test_bits_per_dim"])
        print(f"lower test bits/dim: {best['library']} ({best['test_bits_per_dim']:.4f} vs {other['library']} "
              f"{other['test_bits_per_dim']:.4f}, {other['test_bits_per_dim'] - best['test_bits_per_dim']:.4f} apart)")


if __name__ == "__main__":
    main()
