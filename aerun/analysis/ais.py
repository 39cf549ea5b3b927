"""log Z of a Bernoulli RBM by annealed importance sampling (Salakhutdinov & Murray 2008, "On
the quantitative analysis of deep belief networks"), and exactly for small ones.

AIS anneals from a base-rate model A (no weights, visible biases b_A) to the RBM B through

    p*_k(v) = exp((1 - beta_k) b_A.v + beta_k b.v) prod_j (1 + exp(beta_k (W_j.v + c_j)))

(Z_0 = 2^H prod_i (1 + exp(b_A_i)), Z_K = Z_B), moving each chain with one Gibbs step that
leaves p_k invariant. The mean importance weight estimates Z_B / Z_0 without bias; its log is
biased low, so log Z is under-estimated on average. Sums are in float64; torch only, so it runs
on the RBM's device. `rbm` is anything with weight [H, V], visible_bias [V] and hidden_bias [H]
(an `aerun.models.rbm.BernoulliRBM`, or an `RBM` family, whose `.rbm` is used).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from aerun.models.rbm import bernoulli

PAPER_SEGMENTS = ((0.5, 500), (0.9, 4_000), (1.0, 10_000))  # (end, steps): 14,500 temperatures
MAX_ENUMERATED_UNITS = 20


class AISEstimate(NamedTuple):
    log_z: float  # log of the mean importance weight, plus log Z_0
    std_error: float  # of log_z by the delta method: std(w) / (sqrt(M) mean(w)); ~ +-log(1 +- 3 se) at 3 sigma


def _parameters(rbm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rbm = getattr(rbm, "rbm", rbm)
    return rbm.weight.detach().double(), rbm.visible_bias.detach().double(), rbm.hidden_bias.detach().double()


def paper_betas(n: int = 14_500, device=None) -> torch.Tensor:
    """[n + 1] temperatures 0..1 spaced as in the paper (uniform in 0..0.5, 0.5..0.9, 0.9..1 with
    500 : 4,000 : 10,000 of the steps: denser where p_k changes fastest, near beta = 1)."""
    total = sum(steps for _, steps in PAPER_SEGMENTS)
    parts, start, used = [], 0.0, 0
    for index, (end, steps) in enumerate(PAPER_SEGMENTS):
        count = n - used if index == len(PAPER_SEGMENTS) - 1 else max(1, round(n * steps / total))
        used += count
        parts.append(torch.linspace(start, end, count + 1, dtype=torch.float64, device=device)[1:])
        start = end
    return torch.cat([torch.zeros(1, dtype=torch.float64, device=device), *parts])


def _schedule(betas: int | torch.Tensor, device) -> torch.Tensor:
    if isinstance(betas, int):
        if betas < len(PAPER_SEGMENTS):
            raise ValueError(f"betas: need at least {len(PAPER_SEGMENTS)} temperatures, got {betas}")
        return paper_betas(betas, device)
    schedule = torch.as_tensor(betas, dtype=torch.float64, device=device).reshape(-1)
    if schedule.numel() < 2 or schedule[0] != 0 or schedule[-1] != 1 or bool((schedule.diff() < 0).any()):
        raise ValueError("betas: a schedule must rise from 0 to 1 (non-decreasing)")
    return schedule


def base_rate_visible_bias(data: torch.Tensor, pseudocount: float = 0.05) -> torch.Tensor:
    """[V] logits of the data's smoothed mean pixel, (mean + pseudocount) / (1 + 2 pseudocount).
    The paper's code adds 5 on-counts per 100 images, (mean + 0.05) / 1.05, which smooths away
    from 0 only: a pixel on in every image would get an infinite bias. data [N, ...] in [0, 1]."""
    p = (data.reshape(data.shape[0], -1).double().mean(0) + pseudocount) / (1 + 2 * pseudocount)
    return torch.log(p) - torch.log1p(-p)


@torch.no_grad()
def ais_log_partition(rbm, n_chains: int = 100, betas: int | torch.Tensor = 14_500,
                      base_visible_bias: torch.Tensor | None = None, generator=None) -> AISEstimate:
    """log Z of `rbm` from `n_chains` AIS runs in parallel over `betas` (a count, spaced as in
    the paper, or a schedule [K + 1] from 0 to 1). base_visible_bias [V]: model A's biases (see
    `base_rate_visible_bias`; None: zeros, the uniform distribution)."""
    weight, b, c = _parameters(rbm)  # [H, V], [V], [H]
    schedule = _schedule(betas, weight.device).tolist()
    b_a = torch.zeros_like(b) if base_visible_bias is None else base_visible_bias.to(weight.device, torch.float64)
    log_z_a = F.softplus(b_a).sum().item() + weight.shape[0] * math.log(2)
    v = bernoulli(torch.sigmoid(b_a).expand(n_chains, -1), generator=generator)  # [M, V] ~ p_0
    log_w = torch.zeros(n_chains, dtype=torch.float64, device=weight.device)
    db = b - b_a
    for k in range(1, len(schedule)):
        beta_prev, beta = schedule[k - 1], schedule[k]
        x = F.linear(v, weight, c)  # [M, H]
        log_w += (beta - beta_prev) * (v @ db) + (F.softplus(beta * x) - F.softplus(beta_prev * x)).sum(1)
        if k < len(schedule) - 1:  # T_k: a Gibbs step leaving p_k invariant
            h = bernoulli(torch.sigmoid(beta * x), generator=generator)
            v = bernoulli(torch.sigmoid((1 - beta) * b_a + beta * (h @ weight + b)), generator=generator)
    log_mean_w = torch.logsumexp(log_w, 0) - math.log(n_chains)
    ratios = torch.exp(log_w - log_w.max())
    std_error = (ratios.std() / (ratios.mean() * math.sqrt(n_chains))).item() if n_chains > 1 else math.inf
    return AISEstimate(log_z_a + log_mean_w.item(), std_error)


def _all_states(n: int, device) -> torch.Tensor:
    """[2^n, n] every binary vector of length n."""
    codes = torch.arange(2 ** n, device=device)
    return ((codes[:, None] >> torch.arange(n, device=device)) & 1).double()


def exact_log_partition(rbm, chunk: int = 8192) -> torch.Tensor:
    """log Z (0-dim float64, differentiable in the RBM's parameters) by summing over every state
    of the smaller layer (2^min(V, H) terms; at most 20 units):
    Z = sum_h exp(c.h) prod_i (1 + exp(b_i + W_:i.h)), or sum_v exp(-F(v))."""
    rbm = getattr(rbm, "rbm", rbm)
    weight, b, c = rbm.weight.double(), rbm.visible_bias.double(), rbm.hidden_bias.double()
    n_hidden, n_visible = weight.shape
    if min(n_hidden, n_visible) > MAX_ENUMERATED_UNITS:
        raise ValueError(f"exact_log_partition enumerates 2^min(V, H) states: needs V or H <= "
                         f"{MAX_ENUMERATED_UNITS}, got V={n_visible}, H={n_hidden}; use ais_log_partition")
    over_hidden = n_hidden <= n_visible
    states = _all_states(n_hidden if over_hidden else n_visible, weight.device)
    parts = []
    for start in range(0, states.shape[0], chunk):
        s = states[start:start + chunk]
        if over_hidden:  # s = h [S, H]
            parts.append(s @ c + F.softplus(s @ weight + b).sum(1))
        else:  # s = v [S, V]: -F(v)
            parts.append(s @ b + F.softplus(F.linear(s, weight, c)).sum(1))
    return torch.logsumexp(torch.cat(parts), 0)


def log_likelihood(rbm, v: torch.Tensor, log_z: float | torch.Tensor) -> torch.Tensor:
    """log p(v) = -F(v) - log Z per image, float64: v [B, ...] -> [B]."""
    weight, b, c = _parameters(rbm)
    v = v.reshape(v.shape[0], -1).to(weight.device, torch.float64)
    neg_free_energy = v @ b + F.softplus(F.linear(v, weight, c)).sum(1)
    return neg_free_energy - log_z
