"""Named training recipes as plain data: TrainConfig fields (``model_options`` included), so
``TrainConfig(**RECIPES[name])`` is the run, and any field can be overridden on top.

``"book"`` is the RealNVP notebook of *Generative Deep Learning*, 2nd ed. (David Foster, O'Reilly
2023; Korean edition 만들면서 배우는 생성 AI), ``notebooks/06_normflow/01_realnvp/realnvp.ipynb`` in
github.com/davidADSP/Generative_Deep_Learning_2nd_Edition (adapted there from the Keras example
"Density estimation using Real NVP"): 30,000 points of ``make_moons(noise=0.05)``, standardised;
2 affine couplings, each with separate s and t networks of 4 × 256 ReLU units (s ends in tanh),
an L2 kernel penalty of 0.01 on every dense layer; Adam at a constant 1e-4, batch 256,
300 epochs: as many points as 35,157 full batches (Keras takes 118 batches an epoch, the last one
of 48 points; flowforge draws full batches with replacement). The method: Dinh et al. 2017, "Density estimation
using Real NVP", arXiv:1605.08803.

flowforge's own extras are off: no warm-up or decay (``min_lr_ratio`` 1 holds the lr), no weight
decay (AdamW with 0 is Adam), no weight averaging, no training noise, float32 networks. Kept from
flowforge: the clipping guard at norm 1,000 (far above the book model's gradients, so it only
stops a blow-up), validation every 10 epochs (the book's notebook draws its figure every 10)
with the best weights kept, and each coupling's last layer starting at zero (the identity).
Differences that remain: Keras's Glorot initialisation against PyTorch's; the book's coupling
sees the masked 2-vector, flowforge's the d given features; and in the book's Keras code the
penalty is declared but never enters the gradient, because its custom ``train_step`` does not
add ``model.losses`` — ``l2`` here applies it, as the chapter describes.

>>> from flowforge.models.recipes import RECIPES
>>> from flowforge.training import TrainConfig
>>> config = TrainConfig(**RECIPES["book"])
>>> config.n_train, config.steps, config.l2, config.model_options["separate_networks"]
(30000, 35157, 0.01, True)
"""

from __future__ import annotations

import math
from typing import Any

BOOK_POINTS, BOOK_BATCH, BOOK_EPOCHS = 30_000, 256, 300

RECIPES: dict[str, dict[str, Any]] = {
    "book": {
        "recipe": "book", "model": "realnvp", "data": "moons", "n_train": BOOK_POINTS, "standardize": True,
        "steps": math.ceil(BOOK_EPOCHS * BOOK_POINTS / BOOK_BATCH), "batch_size": BOOK_BATCH,
        "lr": 1e-4, "warmup_steps": 0, "min_lr_ratio": 1.0, "weight_decay": 0.0, "ema_decay": 0.0,
        "train_noise": 0.0, "grad_clip": 1000.0, "l2": 0.01,
        "eval_every": round(10 * BOOK_POINTS / BOOK_BATCH),
        "model_options": {"num_layers": 2, "hidden": 256, "depth": 4, "separate_networks": True,
                          "mixed_precision": False},
    },
}
