"""Write the chapter notebook in English and in Korean from one source, so their code cells are the same.

    python notebooks/build.py          # writes notebooks/normalizing_flows_chapter.ipynb and notebooks/ko/…

Each cell below is either code (shared) or markdown in both languages; the measured figures of
the full book recipe come from docs/book_recipe.json (written by ``python -m benchmarks.book_recipe``).
The notebooks are written without outputs; tests/test_notebooks.py runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
MEASURED = json.loads((HERE.parent / "docs" / "book_recipe.json").read_text())
NOTEBOOK = "normalizing_flows_chapter.ipynb"
TARGETS = {"en": HERE / NOTEBOOK, "ko": HERE / "ko" / NOTEBOOK}


def code(source: str) -> tuple[str, str]:
    return "code", source.strip("\n")


def md(en: str, ko: str) -> tuple[str, dict[str, str]]:
    return "markdown", {"en": en.strip("\n"), "ko": ko.strip("\n")}


BOOK, DEFAULT = MEASURED["book"], MEASURED["default"]
DONE = BOOK["steps_done"] == BOOK["steps"]
REACHED = {"en": "in full" if DONE else f"stopped at step {BOOK['steps_done']:,} of {BOOK['steps']:,}",
           "ko": "전체 실행" if DONE else f"{BOOK['steps']:,} 스텝 중 {BOOK['steps_done']:,} 스텝에서 중단"}
STOPPED = {"en": "" if DONE else f"""
The run was stopped at step {BOOK['steps_done']:,} of {BOOK['steps']:,}, after {BOOK['train_seconds']:,.0f} s of training;
the figures are those of its best weights so far (`python -m benchmarks.book_recipe --out RUN --summarise IMAGES` writes them).
""", "ko": "" if DONE else f"""
훈련은 {BOOK['steps']:,} 스텝 중 {BOOK['steps_done']:,} 스텝({BOOK['train_seconds']:,.0f}초)에서 중단했습니다.
수치는 그때까지 가장 좋은 가중치의 것입니다(`python -m benchmarks.book_recipe --out RUN --summarise IMAGES`가 기록).
"""}
FULL_TABLE = {
    "en": f"""
| recipe | test NLL (nats, standardised) | training time |
|---|---|---|
| the book's (`RECIPES["book"]`), {REACHED['en']}; best weights at step {BOOK['best_step']:,} | {BOOK['test_nll']:.3f} | {BOOK['train_seconds']:,.0f} s |
| flowforge's default (`flowforge train --data moons`, 3,000 steps, in the same run) | {DEFAULT['test_nll']:.3f} | {DEFAULT['train_seconds']:,.0f} s |
| the true density of the data | ≈ 1.137 | |
""",
    "ko": f"""
| 레시피 | 테스트 NLL (nats, 표준화 좌표) | 훈련 시간 |
|---|---|---|
| 책의 설정 (`RECIPES["book"]`), {REACHED['ko']}; 가장 좋은 가중치는 {BOOK['best_step']:,} 스텝 | {BOOK['test_nll']:.3f} | {BOOK['train_seconds']:,.0f}초 |
| flowforge 기본값 (`flowforge train --data moons`, 3,000 스텝, 같은 실행에서 측정) | {DEFAULT['test_nll']:.3f} | {DEFAULT['train_seconds']:,.0f}초 |
| 데이터의 실제 밀도 | ≈ 1.137 | |
""",
}


CELLS = [
    md(f"""
# The normalizing-flow chapter, runnable

A walk through the normalizing-flow chapter of *Generative Deep Learning* (2nd ed., David Foster) with
[flowforge](../README.md): every step is computed, printed and checked with `assert`, so the notebook
fails if what it teaches stops being true. Contents: the change of variables, the Jacobian determinant
and its cost, the coupling layer, RealNVP on two moons with the book's exact recipe, and Glow and FFJORD
in brief.

`FULL = False` (below) runs a quick pass in a couple of minutes; `FULL = True` trains the book's full
300 epochs (its training took {BOOK['train_seconds'] / 60:.0f} minutes in the measured run below, on 2 shared cores; the rest of the
notebook adds a few). The numbers of the full runs are quoted in the text.
""", f"""
# 노멀라이징 플로 장, 직접 실행하기

《만들면서 배우는 생성 AI》(2판, 데이비드 포스터)의 노멀라이징 플로 장을 [flowforge](../../README.md)로
따라갑니다. 모든 단계를 계산하고 출력하며 `assert`로 확인하므로, 설명한 내용이 사실이 아니게 되면 노트북이
실패합니다. 내용: 변수 변환, 야코비 행렬식과 그 계산 비용, 커플링 층, 책의 설정 그대로 훈련한 두 개의 반달
데이터셋의 RealNVP, 그리고 Glow와 FFJORD 간단히.

아래의 `FULL = False`는 몇 분 안에 끝나는 빠른 실행입니다. `FULL = True`로 바꾸면 책과 같은 300 에포크를
훈련합니다(아래 측정에서 공유 2코어로 훈련에 {BOOK['train_seconds'] / 60:.0f}분, 나머지 셀에 몇 분 더). 전체 실행의 수치는 본문에 적어 두었습니다.
"""),
    code("""
FULL = False  # True: the book's full 300 epochs; False: the quick pass the test suite runs
SEED = 0
"""),
    code("""
import time
from pathlib import Path

%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, display
from scipy.spatial import ConvexHull

from flowforge.data import load_splits, sample_toy
from flowforge.models import FFJORD, Glow, RealNVP
from flowforge.models.recipes import RECIPES
from flowforge.plots import (chapter_figure, dependency_figure, latent_and_generated, sample_paths, save_animation,
                             training_animation, training_curve, trajectories_figure, unit_square_images_figure)
from flowforge.training import TrainConfig, load_run, train
from flowforge.training.stages import train_in_stages
from flowforge.transforms import AffineCoupling, Compose, Standardize, fit_standardization
from flowforge.transforms.elementwise import log_scale

torch.manual_seed(SEED)
RUNS = Path("runs")  # the notebook's training runs go here
"""),
    md("""
## 1. Change of variables

Let X be uniform on the rectangle 1 ≤ x₁ ≤ 4, 0 ≤ x₂ ≤ 2: its density is p_X(x) = 1/6, the inverse of the
area. The map z = f(x) = ((x₁ − 1)/3, x₂/2) sends the rectangle onto the unit square, and x = g(z) sends it
back. Evaluating p_X at g(z) alone gives a "density" of 1/6 everywhere on the unit square — it integrates to
1/6, not 1. The missing factor is the Jacobian determinant of g, which says how much g stretches area:

p_Z(z) = p_X(g(z)) · |det ∂g/∂z| = 1/6 · 6 = 1.

flowforge's `Standardize` layer is exactly this map (x − mean)/std; its `inverse` returns g(z) and log|det ∂g/∂z|.
We integrate both candidates over the unit square with the midpoint rule.
""", """
## 1. 변수 변환

X가 직사각형 1 ≤ x₁ ≤ 4, 0 ≤ x₂ ≤ 2 위의 균등 분포라고 합시다. 밀도는 넓이의 역수인 p_X(x) = 1/6입니다.
z = f(x) = ((x₁ − 1)/3, x₂/2)는 이 직사각형을 단위 정사각형으로 보내고, x = g(z)는 다시 되돌립니다.
g(z)에서 p_X만 계산하면 단위 정사각형 전체에서 1/6인 "밀도"가 되는데, 이것을 적분하면 1이 아니라 1/6입니다.
빠진 인수는 g가 넓이를 얼마나 늘리는지 나타내는 g의 야코비 행렬식입니다.

p_Z(z) = p_X(g(z)) · |det ∂g/∂z| = 1/6 · 6 = 1.

flowforge의 `Standardize` 층이 바로 이 변환 (x − mean)/std이며, `inverse`는 g(z)와 log|det ∂g/∂z|를 돌려줍니다.
두 후보를 단위 정사각형에서 중점 규칙으로 적분해 봅시다.
"""),
    code("""
rectangle = Standardize(2).double()
rectangle.set_statistics(torch.tensor([1.0, 0.0]), torch.tensor([3.0, 2.0]))  # f(x) = (x - (1, 0)) / (3, 2)


def p_x(x):
    inside = (x[:, 0] >= 1) & (x[:, 0] <= 4) & (x[:, 1] >= 0) & (x[:, 1] <= 2)
    return inside.double() / 6.0


n = 500
midpoints = (torch.arange(n, dtype=torch.float64) + 0.5) / n
z = torch.cartesian_prod(midpoints, midpoints)  # n² cells of area 1/n² covering the unit square
x, log_det_g = rectangle.inverse(z)
without_det = p_x(x).mean().item()
with_det = (p_x(x) * log_det_g.exp()).mean().item()
print(f"|det ∂g/∂z| = {log_det_g[0].exp().item():.4f}")
print(f"∫ p_X(g(z)) dz                 = {without_det:.6f}   (1/6 = {1 / 6:.6f})")
print(f"∫ p_X(g(z)) |det ∂g/∂z| dz     = {with_det:.6f}")
assert abs(without_det - 1 / 6) < 1e-3 and abs(with_det - 1) < 1e-3
"""),
    md("""
## 2. The Jacobian determinant: area, volume, orientation — and its cost

For a linear map A the image of the unit square is a parallelogram whose signed area is det A: its size is
the factor by which A scales areas, its sign says whether A keeps or flips the orientation (e₁ → e₂
counter-clockwise or clockwise). In three dimensions the unit cube becomes a parallelepiped of volume |det A|.
A flow's Jacobian J = ∂f/∂x is this linear map near each point.
""", """
## 2. 야코비 행렬식: 넓이, 부피, 방향 — 그리고 계산 비용

선형 변환 A에 대해 단위 정사각형의 상은 부호 있는 넓이가 det A인 평행사변형입니다. 크기는 A가 넓이를 몇 배로
바꾸는지, 부호는 A가 방향을 유지하는지 뒤집는지(e₁ → e₂가 반시계 방향인지 시계 방향인지)를 나타냅니다.
3차원에서는 단위 정육면체가 부피 |det A|인 평행육면체가 됩니다. 플로의 야코비 행렬 J = ∂f/∂x는 각 점 근처에서
바로 이런 선형 변환입니다.
"""),
    code("""
matrices = [np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, 1.5], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])]
display(unit_square_images_figure(matrices))
for a in matrices:
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1]]) @ a.T
    signed_area = 0.5 * np.sum(corners[:, 0] * np.roll(corners[:, 1], -1) - np.roll(corners[:, 0], -1) * corners[:, 1])
    print(f"det A = {np.linalg.det(a):+.3f}   signed area of the image (shoelace) = {signed_area:+.3f}")
    assert np.isclose(signed_area, np.linalg.det(a))

a3 = np.array([[1.0, 0.3, 0.0], [0.2, 2.0, 0.5], [0.0, 0.4, 1.5]])
cube = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
volume = ConvexHull(cube @ a3.T).volume
print(f"3-D: |det A| = {abs(np.linalg.det(a3)):.4f}, volume of the unit cube's image = {volume:.4f}")
assert np.isclose(volume, abs(np.linalg.det(a3)))
"""),
    md("""
A general D × D Jacobian costs O(D³) to reduce to its determinant (an LU factorisation; `torch.linalg.slogdet`),
after D backward passes to build it. A coupling layer's Jacobian is triangular, so its log-determinant is the
sum of the log-scales s it already computed — O(D). First a check that both give the same number, then the
timing for D up to 1,024 (measured now, on this machine; nothing is asserted about speed).
""", """
일반적인 D × D 야코비 행렬의 행렬식을 구하는 데는 O(D³)이 듭니다(LU 분해, `torch.linalg.slogdet`). 그 전에 행렬을
만드는 데 역전파가 D번 필요합니다. 커플링 층의 야코비 행렬은 삼각 행렬이므로 로그 행렬식은 이미 계산한 로그 스케일
s의 합, 즉 O(D)입니다. 먼저 두 방법이 같은 값을 주는지 확인하고, D = 1,024까지 시간을 재 봅니다(이 머신에서 지금
측정한 값이며, 속도에 대해서는 아무것도 assert하지 않습니다).
"""),
    code("""
def perturbed(layer, scale=0.3):
    \"\"\"The layer moved away from its identity start (its last layer starts at zero), so s and t are not 0.\"\"\"
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn_like(p))
    return layer


def jacobian(transform, point):
    return torch.autograd.functional.jacobian(lambda v: transform(v.view(1, -1))[0].flatten(), point.flatten())


layer8 = perturbed(AffineCoupling(torch.arange(8) % 2, hidden=32, depth=2).double())
x8 = torch.randn(1, 8, dtype=torch.float64)
brute_force = torch.linalg.slogdet(jacobian(layer8, x8)).logabsdet
print(f"D = 8: slogdet of the autograd Jacobian = {brute_force.item():.6f}, "
      f"the coupling's Σ s = {layer8(x8)[1].item():.6f}")
assert torch.isclose(brute_force, layer8(x8)[1][0])
"""),
    code("""
from torch.utils.benchmark import Timer

dims = [2, 8, 32, 128, 512, 1024]
dense_ms, coupling_ms = [], []
for dim in dims:
    dense = torch.randn(dim, dim)
    layer = AffineCoupling(torch.arange(dim) % 2, hidden=64, depth=1)
    point = torch.randn(1, dim)
    budget = 0.2 if FULL else 0.01
    dense_ms.append(1e3 * Timer("torch.linalg.slogdet(J)", globals={"torch": torch, "J": dense})
                    .blocked_autorange(min_run_time=budget).median)
    with torch.no_grad():
        coupling_ms.append(1e3 * Timer("layer(x)", globals={"layer": layer, "x": point})
                           .blocked_autorange(min_run_time=budget).median)
    print(f"D = {dim:5d}: slogdet of a dense D×D Jacobian {dense_ms[-1]:8.3f} ms · "
          f"coupling forward + log-det {coupling_ms[-1]:6.3f} ms")

fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(dims, dense_ms, "o-", label="slogdet of a dense D×D Jacobian, O(D³)")
ax.loglog(dims, coupling_ms, "s-", label="coupling layer: network + Σ s, O(D)")
ax.set(xlabel="D", ylabel="ms per call", title="The cost of log|det J|")
ax.grid(alpha=0.3, which="both")
ax.legend()
plt.show()
"""),
    md("""
## 3. A coupling layer with D = 3 and d = 2

The first d = 2 dimensions pass through unchanged and condition the third: a network reads x₁, x₂ and gives
a log-scale s (bounded by tanh) and a shift t, and y₃ = x₃ · exp(s) + t. So ∂y₁/∂x₃ = ∂y₂/∂x₃ = 0 and the
Jacobian is lower triangular, with 1, 1 and exp(s) on its diagonal: det J = exp(s), whatever ∂y₃/∂x₁ and
∂y₃/∂x₂ are. `AffineCoupling([1, 1, 0])` is this layer (1 = passes through and conditions).
""", """
## 3. D = 3, d = 2인 커플링 층

처음 d = 2개의 차원은 그대로 통과하면서 세 번째 차원의 조건이 됩니다. 신경망이 x₁, x₂를 읽어 (tanh로 제한된)
로그 스케일 s와 이동 t를 내고, y₃ = x₃ · exp(s) + t입니다. 따라서 ∂y₁/∂x₃ = ∂y₂/∂x₃ = 0이고 야코비 행렬은
대각선이 1, 1, exp(s)인 하삼각 행렬입니다. ∂y₃/∂x₁, ∂y₃/∂x₂가 무엇이든 det J = exp(s)입니다.
`AffineCoupling([1, 1, 0])`이 이 커플링 층입니다(1 = 그대로 통과하며 조건이 됨).
"""),
    code("""
torch.manual_seed(SEED)
coupling = perturbed(AffineCoupling([1, 1, 0], hidden=16, depth=2).double())
point = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
j_one = jacobian(coupling, point)
raw_s, t = coupling.conditioner(point[:, :2]).chunk(2, dim=1)   # what the network reads from x1, x2
s = log_scale(raw_s, "tanh")                                     # s = tanh(raw): the book's bounded scale
y, log_det = coupling(point)
torch.set_printoptions(precision=4, sci_mode=False)
print("J =", j_one, sep="\\n")
print(f"s = {s.item():.4f}, exp(s) = {s.exp().item():.4f}, t = {t.item():.4f}, log|det J| = {log_det.item():.4f}")
assert torch.equal(j_one, torch.tril(j_one))                          # lower triangular
assert torch.allclose(j_one.diagonal(), torch.tensor([1.0, 1.0, s.exp().item()], dtype=torch.float64))
assert torch.isclose(y[0, 2], point[0, 2] * s.exp() + t).all()       # y3 = x3 · exp(s) + t
assert torch.isclose(torch.linalg.det(j_one), log_det.exp()).all()
"""),
    md("""
One layer leaves x₁ and x₂ as they are. The next layer uses the reversed mask [0, 0, 1]: x₃ conditions x₁ and
x₂, and its Jacobian is upper triangular. Stacked, every output depends on every input — the Jacobian of the
pair is full — yet each layer's determinant is still a product of its diagonal.
""", """
커플링 층 하나는 x₁, x₂를 그대로 둡니다. 다음 층은 마스크를 뒤집어 [0, 0, 1]을 씁니다. x₃가 x₁, x₂의 조건이 되고
야코비 행렬은 상삼각 행렬입니다. 두 층을 쌓으면 모든 출력이 모든 입력에 의존하지만(두 층의 야코비 행렬은 꽉 찬
행렬), 각 층의 행렬식은 여전히 대각 원소의 곱입니다.
"""),
    code("""
reversed_coupling = perturbed(AffineCoupling([0, 0, 1], hidden=16, depth=2).double())
j_reversed = jacobian(reversed_coupling, point)
stacked = Compose([coupling, reversed_coupling])
j_stacked = jacobian(stacked, point)
print("reversed mask:", j_reversed, "two layers stacked:", j_stacked, sep="\\n")
assert torch.equal(j_reversed, torch.triu(j_reversed))               # upper triangular
assert (j_stacked.abs() > 1e-6).all()                                 # full: every y depends on every x
assert torch.isclose(torch.linalg.slogdet(j_stacked).logabsdet, stacked(point)[1][0])
display(dependency_figure({"one coupling, mask [1, 1, 0]": j_one.numpy(), "reversed mask [0, 0, 1]": j_reversed.numpy(),
                           "both stacked": j_stacked.numpy()}))
"""),
    md("""
**Direction 1 and −1.** The book's Keras `RealNVP.call` runs the couplings with `direction = -1` while
training: data → latent, x ↦ (x − t) · exp(−s), layers in reverse order, accumulating −Σ s. `model.predict(z)`
runs with `direction = 1`: latent → data, x ↦ x · exp(s) + t. In flowforge the two directions are
`flow.forward(x)` (data → latent, the book's −1; it returns z and log|det ∂f/∂x|) and `flow.inverse(z)`
(latent → data, the book's 1, what `flow.sample` uses). flowforge parameterises the data → latent step as
x · exp(s) + t, the book the latent → data step; either is invertible in closed form, so both are RealNVP.
""", """
**방향 1과 −1.** 책의 케라스 `RealNVP.call`은 훈련할 때 `direction = -1`로 커플링 층을 실행합니다. 데이터 → 잠재
공간 방향이고, x ↦ (x − t) · exp(−s)를 층의 역순으로 적용하며 −Σ s를 누적합니다. `model.predict(z)`는
`direction = 1`로 실행됩니다. 잠재 공간 → 데이터 방향이고 x ↦ x · exp(s) + t입니다. flowforge에서 두 방향은
정방향 `flow.forward(x)`(데이터 → 잠재 공간, 책의 −1; z와 log|det ∂f/∂x|를 반환)와 역방향 `flow.inverse(z)`
(잠재 공간 → 데이터, 책의 1; `flow.sample`이 사용)입니다. flowforge는 데이터 → 잠재 공간 단계를 x · exp(s) + t로,
책은 잠재 공간 → 데이터 단계를 그렇게 매개변수화합니다. 어느 쪽이든 닫힌 형태로 역변환이 되므로 둘 다 RealNVP입니다.
"""),
    code("""
flow3 = RealNVP(3, num_layers=2, mask=[1, 1, 0], hidden=16, depth=2).double()
perturbed(flow3)
x3 = torch.randn(6, 3, dtype=torch.float64)
z3, log_det_forward = flow3.forward(x3)      # the book's direction -1: data -> latent
x3_back, log_det_inverse = flow3.inverse(z3)  # the book's direction 1: latent -> data
print(f"max |g(f(x)) - x| = {(x3_back - x3).abs().max().item():.2e}, "
      f"max |log|det ∂f/∂x| + log|det ∂g/∂z|| = {(log_det_forward + log_det_inverse).abs().max().item():.2e}")
assert torch.allclose(x3_back, x3, atol=1e-10) and torch.allclose(log_det_forward, -log_det_inverse, atol=1e-10)
"""),
    md(f"""
## 4. RealNVP on two moons, the book's recipe

The book's notebook (`notebooks/06_normflow/01_realnvp/realnvp.ipynb`) trains on 30,000 points of
`make_moons(noise=0.05)`, standardised; 2 coupling layers, each with separate s and t networks of 4 × 256 ReLU
units (s ends in tanh) and an L2 kernel penalty of 0.01; Adam at 1e-4, batch 256, 300 epochs. flowforge keeps it
as data in `flowforge.models.recipes.RECIPES["book"]` (35,157 full batches = 300 epochs of points; the lr held
constant, no weight decay, averaging or noise; clipping at a norm of 1,000, which only stops a blow-up).
`train_in_stages` stops the run every 10 epochs, as the book's callback does to draw its figure, and resumes it
exactly. In the quick pass the same recipe runs for its first 200 steps only.

Measured (`OMP_NUM_THREADS=2 python -m benchmarks.book_recipe`, on 2 cores shared with other work; docs/book_recipe.md):
{FULL_TABLE['en']}{STOPPED['en']}
The book's notebook is committed without outputs, and we found no final loss reported for it, so there is no
book figure to put beside these. What the penalty does: 0.01 · Σ w² over the ten kernels of each coupling is
{BOOK['l2_term']:.2f} nats at the best weights, added to a likelihood term of about 2.1; the training loss (penalty
included) falls from {BOOK['first_train_loss']:.2f} to {BOOK['last_train_loss']:.2f} while the validation NLL stays near 2.13 from the first 10
epochs on — the loss falls by shrinking weights. Note also that in the
book's Keras code the penalty never trains: its custom `train_step` differentiates `log_loss` only and does not add
`model.losses`, so the `kernel_regularizer` is declared but inert. Set `l2=0.0` to train what that code trains.
""", f"""
## 4. 두 개의 반달 데이터셋의 RealNVP, 책의 설정

책의 노트북(`notebooks/06_normflow/01_realnvp/realnvp.ipynb`)은 `make_moons(noise=0.05)`에서 뽑아 표준화한 30,000개
포인트로 훈련합니다. 커플링 층은 2개이고, 각 층에는 ReLU 4 × 256의 s 신경망과 t 신경망이 따로 있으며(s는 tanh로 끝남)
L2 커널 규제 0.01을 씁니다. Adam 1e-4, 배치 256, 300 에포크입니다. flowforge는 이 설정을
`flowforge.models.recipes.RECIPES["book"]`에 데이터로 둡니다(35,157 전체 배치 = 300 에포크 분량의 포인트, 학습률 고정,
가중치 감쇠·가중치 평균·잡음 없음, 폭주만 막는 노름 1,000의 그레이디언트 클리핑). `train_in_stages`는 책의 콜백이
그림을 그리듯 10 에포크마다 훈련을 멈췄다가 정확히 이어서 재개합니다. 빠른 실행에서는 같은 설정을 처음 200 스텝만 돌립니다.

측정값(`OMP_NUM_THREADS=2 python -m benchmarks.book_recipe`, 다른 작업과 공유하는 2코어, docs/book_recipe.md):
{FULL_TABLE['ko']}{STOPPED['ko']}
책의 노트북은 출력 없이 커밋되어 있고 최종 손실값을 보고한 곳을 찾지 못해서 나란히 놓을 책의 수치는 없습니다.
규제가 하는 일: 커플링 층마다 커널 열 개에 걸친 0.01 · Σ w²은 가장 좋은 가중치에서 {BOOK['l2_term']:.2f} nats로, 약 2.1인
가능도 항에 더해집니다. 규제를 포함한 훈련 손실은 {BOOK['first_train_loss']:.2f}에서 {BOOK['last_train_loss']:.2f}로 내려가지만 검증 NLL은 처음 10 에포크부터
2.13 근처에 머뭅니다. 손실은 가중치가 줄어들면서 내려가는 것입니다. 또한 책의 케라스 코드에서는 이 규제가 훈련에 쓰이지 않습니다. 사용자 정의 `train_step`은 `log_loss`만 미분하고
`model.losses`를 더하지 않으므로 `kernel_regularizer`는 선언만 되어 있습니다. 그 코드가 실제로 훈련하는 것을 재현하려면
`l2=0.0`으로 두세요.
"""),
    code("""
book = TrainConfig(**RECIPES["book"])
if not FULL:
    book = TrainConfig(**{**RECIPES["book"], "steps": 200, "eval_every": 100})
points = load_splits(book.data, book.seed, book.n_train).train[:2000]  # the points the figures show
steps, latents, generated = [], [], []
started = time.perf_counter()
for step, flow, results in train_in_stages(book, RUNS / "book", every=book.eval_every, force=True):
    latent, z_fixed, samples = latent_and_generated(flow, points, 2000, seed=SEED)  # the same Z at every stop
    steps.append(step), latents.append(latent), generated.append(samples)
    print(f"step {step:6,d}: best test NLL so far {results['test_nll']:.4f}")
book_seconds = time.perf_counter() - started
book_results = results
gaussian_nll = 1 + np.log(2 * np.pi)  # N(0, I) on standardised 2-D data: what a flow must beat
print(f"book recipe: test NLL {book_results['test_nll']:.4f} in {book_seconds:.0f} s ({book.steps:,} steps)")
assert np.isfinite(book_results["test_nll"]) and book_results["test_nll"] < gaussian_nll
"""),
    md("""
The loss curve, the chapter's 2×2 figure for the best weights (data X → f(X) in latent space; samples Z → g(Z)
back in data space; colour is the angle of each latent code, so the same colour is the same region in every
panel), and the figure at every stop of training, saved as a GIF as the book's notebook saves its PNGs.
""", """
손실 곡선, 가장 좋은 가중치로 그린 장의 2×2 그림(데이터 X → 잠재 공간의 f(X), 샘플 Z → 데이터 공간의 g(Z); 색은 각
잠재 코드의 각도이므로 모든 패널에서 같은 색은 같은 영역입니다), 그리고 책의 노트북이 PNG를 저장하듯 훈련의 각 정지
시점마다 그린 그림을 GIF로 저장한 것입니다.
"""),
    code("""
best_flow, book_config, _ = load_run(RUNS / "book")
display(training_curve(RUNS / "book" / "metrics.jsonl", book_config))
display(chapter_figure(best_flow, points))
movie = training_animation(steps, points, z_fixed, latents, generated)
gif = save_animation(movie, RUNS / "book" / "training.gif", fps=4)
display(Image(filename=str(gif)))
"""),
    md("""
flowforge's default recipe on the same task (3,000 training points, 12 couplings of 3 × 128, AdamW with
warm-up and cosine decay, training noise, weight averaging; `flowforge train --data moons`). In the quick
pass it runs 100 of its 3,000 steps.
""", """
같은 작업에 대한 flowforge의 기본 설정입니다(훈련 포인트 3,000개, 3 × 128 커플링 층 12개, 워밍업과 코사인 감쇠를 쓰는
AdamW, 훈련 잡음, 가중치 평균; `flowforge train --data moons`). 빠른 실행에서는 3,000 스텝 중 100 스텝만 돌립니다.
"""),
    code("""
default = TrainConfig(data="moons", seed=SEED)
if not FULL:
    default = TrainConfig(data="moons", seed=SEED, steps=100, eval_every=50)
started = time.perf_counter()
default_results = train(default, RUNS / "default", force=True, progress_bar=False)
default_seconds = time.perf_counter() - started
print(f"{'recipe':<28}{'steps':>8}{'test NLL':>10}{'seconds':>9}")
for name, config, results, seconds in (("book (RECIPES['book'])", book, book_results, book_seconds),
                                       ("flowforge default", default, default_results, default_seconds)):
    print(f"{name:<28}{config.steps:>8,}{results['test_nll']:>10.4f}{seconds:>9.0f}")
assert default_results["test_nll"] < gaussian_nll
"""),
    md("""
## 5. Glow and FFJORD, in brief

RealNVP is a chain of discrete steps. **Glow** (Kingma & Dhariwal 2018, arXiv:1807.03039) keeps the coupling
layer and adds, per step, an activation normalisation and an invertible 1×1 convolution (a learned permutation
of channels, whose log-determinant is H · W · log|det W|), over several scales. **FFJORD** (Grathwohl et al. 2019,
arXiv:1810.01367) replaces the steps by a continuous-time ODE dz/dt = v(z, t): the log-density changes by the
integral of −tr ∂v/∂z, so no architecture constraint is needed for a cheap determinant. Below a tiny Glow checks
its invertibility, and a small FFJORD, trained by flow matching (3,000 steps in full, 150 in the quick pass), draws its trajectories
from the normal distribution to the moons (in the quick pass, 150 steps, they have barely begun to bend).
""", """
## 5. Glow와 FFJORD, 간단히

RealNVP는 이산적인 단계의 연쇄입니다. **Glow**(Kingma & Dhariwal 2018, arXiv:1807.03039)는 커플링 층을 유지하면서
단계마다 활성화 정규화와 가역 1×1 합성곱(채널을 학습된 방식으로 섞는 것으로, 로그 행렬식은 H · W · log|det W|)을 더하고
여러 스케일에 걸쳐 쌓습니다. **FFJORD**(Grathwohl et al. 2019, arXiv:1810.01367)는 단계를 연속 시간 상미분방정식
dz/dt = v(z, t)로 바꿉니다. 로그 밀도는 −tr ∂v/∂z의 적분만큼 변하므로 행렬식을 싸게 만들기 위한 구조 제약이 필요 없습니다.
아래에서는 작은 Glow의 가역성을 확인하고, 흐름 매칭으로 훈련한(전체 3,000 스텝, 빠른 실행 150 스텝) 작은 FFJORD가 정규 분포에서 반달 데이터로 가는
궤적을 그립니다(150 스텝의 빠른 실행에서는 궤적이 거의 휘지 않습니다).
"""),
    code("""
glow = Glow((1, 8, 8), levels=2, steps=2, hidden=16).double()
perturbed(glow, 0.05)
pixels = torch.rand(4, 1, 8, 8, dtype=torch.float64)
latent_glow, _ = glow.transform(pixels)
pixels_back, _ = glow.transform.inverse(latent_glow)
print(f"Glow: {sum(p.numel() for p in glow.parameters()):,} parameters; max |g(f(x)) - x| = "
      f"{(pixels_back - pixels).abs().max().item():.2e}")
assert torch.allclose(pixels_back, pixels, atol=1e-8)
"""),
    code("""
torch.manual_seed(SEED)
moons = torch.as_tensor(sample_toy("moons", 3000, SEED), dtype=torch.float32)
ffjord = FFJORD(2, hidden=64, depth=3, standardize=True)
fit_standardization(ffjord, moons)
optimizer = torch.optim.Adam(ffjord.parameters(), lr=1e-3)
for step in range(3000 if FULL else 150):  # flow matching: regress the velocity of straight noise -> data paths
    loss = ffjord.training_loss(moons[torch.randint(len(moons), (256,))], "flow-matching")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
times, paths = sample_paths(ffjord, n=500, frames=21, seed=SEED)
print(f"flow-matching loss after {step + 1} steps: {loss.item():.3f}; paths {paths.shape} (frames, points, 2)")
assert np.isfinite(paths).all()
display(trajectories_figure(times, paths, moons.numpy()))
"""),
]


def build(language: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.update({"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                              "language_info": {"name": "python"}})
    for index, (kind, content) in enumerate(CELLS):
        cell = (nbformat.v4.new_code_cell(content) if kind == "code"
                else nbformat.v4.new_markdown_cell(content[language]))
        cell.id = f"cell-{index:02d}"  # stable ids: a rebuild changes only what changed
        notebook.cells.append(cell)
    return notebook


def main() -> None:
    for language, path in TARGETS.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(build(language), path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
