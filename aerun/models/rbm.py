"""Bernoulli-Bernoulli RBMs, trained by contrastive divergence (`aerun.models.dbn` stacks them).

Visible units are the pixels' grey levels in [0, 1], used as Bernoulli probabilities: the data
are not binarised unless `binarize=True`, which draws v ~ Bernoulli(pixels) afresh for every
batch. The negative phase's last visible state is p(v | h) itself (`reconstruction=
"probabilities"`, as in Hinton's guide, section 3.3, and his rbm.m: less sampling noise, and one
draw fewer per step) or a binary sample of it ("binary"); "auto" is the first for CD and the
second for PCD, each the better of the two in benchmarks/paper_tables/rbm.md.

Nothing is backpropagated: `training_step` computes the CD estimate of the negative
log-likelihood gradient, writes it into `.grad` and calls `step.apply_gradients(name)`, so the
loop's optimizer, clipping and schedulers do the rest (Hinton 2002; Tieleman 2008 for PCD;
Hinton 2010, "A practical guide to training RBMs", for the initialisation and the statistics).

    F(v) = -b.v - sum_j softplus(c_j + W_j.v)            free energy, p(v) = exp(-F(v)) / Z
    p(h_j = 1 | v) = sigmoid(c_j + W_j.v),  p(v_i = 1 | h) = sigmoid(b_i + W_:i.h)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from aerun.models.base import Autoencoder, Batch, Step, reconstruction_sums


def bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary samples of probabilities p (same shape and dtype): u < p for u ~ U[0, 1), compared in
    place in u's storage. On a CPU this is ~3.5x faster than torch.bernoulli, which draws element
    by element."""
    return torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype).lt_(p)


def random_visible(n: int, size: int, device, generator=None) -> torch.Tensor:
    """[n, size] binary units, each on with probability 1/2: where sampling chains start."""
    return (torch.rand(n, size, device=device, generator=generator) < 0.5).float()


class CDEstimate(NamedTuple):
    """What one CD/PCD pass measures. grads = <.>_model - <.>_data, the estimate of the gradient
    of -log p(data), so an optimizer's step descends; negatives [N, V] the chain's last visible
    state, binary (PCD's next chain) unless `mean_field` CD left it at p(v | h); recon [R, V]
    the mean-field up-down pass of the data's first R rows (`monitor_rows`); free_energy_gap
    (0-dim) = mean F(data) - mean F(negatives), over the first R rows of each."""

    grads: dict[str, torch.Tensor]
    negatives: torch.Tensor
    recon: torch.Tensor
    free_energy_gap: torch.Tensor


class BernoulliRBM(nn.Module):
    """weight [H, V] ~ N(0, 0.01^2), visible_bias [V], hidden_bias [H] (both 0 to start), and
    `chain` [N, V]: PCD's fantasy particles, a buffer so a checkpoint resumes the same chain
    (empty until the first persistent step sizes it to that batch)."""

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_hidden, n_visible) * init_std)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))
        self.register_buffer("chain", torch.zeros(0, n_visible))

    @property
    def n_visible(self) -> int:
        return self.weight.shape[1]

    @property
    def n_hidden(self) -> int:
        return self.weight.shape[0]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The chain's size is the batch size it was started with: take the saved one's shape.
        saved = state_dict.get(prefix + "chain")
        if saved is not None and saved.shape != self.chain.shape:
            self.chain = torch.empty(saved.shape, dtype=self.chain.dtype, device=self.chain.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def init_visible_bias(self, mean_pixels: torch.Tensor, eps: float = 1e-3) -> None:
        """b_i = log(p_i / (1 - p_i)) for the data's mean pixel p_i (Hinton's guide, section 8)."""
        p = mean_pixels.reshape(-1).clamp(eps, 1 - eps)
        self.visible_bias.copy_(torch.log(p) - torch.log1p(-p))

    # -- conditionals: [B, V] <-> [B, H] ---------------------------------------------------
    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        return F.linear(v, self.weight, self.hidden_bias)  # [B, V] -> [B, H]

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.hidden_logits(v))

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight.t(), self.visible_bias)  # [B, H] -> [B, V]

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.visible_logits(h))

    def sample_hidden(self, v: torch.Tensor, generator=None) -> torch.Tensor:
        return bernoulli(self.hidden_probs(v), generator)

    def sample_visible(self, h: torch.Tensor, generator=None) -> torch.Tensor:
        return bernoulli(self.visible_probs(h), generator)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) [B]: -log p(v) up to log Z."""
        return self.free_energy_from_logits(v, self.hidden_logits(v))

    def free_energy_from_logits(self, v: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """F(v) [B] given v's hidden logits [B, H]."""
        return -(v @ self.visible_bias) - F.softplus(logits).sum(1)

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, steps: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """`steps` >= 1 rounds v -> h -> v; returns (v [B, V], h [B, H]) binary, h being the state v
        was drawn from, so `visible_probs(h)` is the final visible state's mean."""
        h = self.sample_hidden(v, generator)
        v = self.sample_visible(h, generator)
        for _ in range(steps - 1):
            h = self.sample_hidden(v, generator)
            v = self.sample_visible(h, generator)
        return v, h

    # -- learning ------------------------------------------------------------------------
    @torch.no_grad()
    def cd_gradients(self, v_data: torch.Tensor, k: int = 1, persistent_chain: torch.Tensor | None = None,
                     generator=None, monitor_rows: int | None = None, mean_field: bool = False) -> CDEstimate:
        """CD-k (the chain starts at the data) or PCD-k (it continues from `persistent_chain` [N, V]).

        Hidden statistics use probabilities, not samples (less noise, same expectation); so does
        the last visible state if `mean_field` (PCD's chain then carries on from a sample of it).
        The free energies reuse the phases' hidden logits, so the gap costs no extra product.
        The reconstruction and the gap, which CD does not need, are measured on the first
        `monitor_rows` rows (all if None).
        """
        logits_data = self.hidden_logits(v_data)  # [B, H]
        h_data = torch.sigmoid(logits_data)
        rows = slice(monitor_rows)
        recon = self.visible_probs(h_data[rows])  # [R, V]
        chain = persistent_chain  # [N, V] or None
        h = bernoulli(h_data, generator) if chain is None else self.sample_hidden(chain, generator)
        for step in range(k):
            v_probs = self.visible_probs(h)  # [N, V]
            v_model = v_probs if mean_field and step == k - 1 else bernoulli(v_probs, generator)
            logits_model = self.hidden_logits(v_model)  # [N, H]
            h_model = torch.sigmoid(logits_model)
            if step < k - 1:
                h = bernoulli(h_model, generator)
        gap = self.free_energy_from_logits(v_data[rows], logits_data[rows]).mean() - \
            self.free_energy_from_logits(v_model[rows], logits_model[rows]).mean()
        negatives = bernoulli(v_model, generator) if mean_field and chain is not None else v_model
        return CDEstimate(self.gradients(v_data, h_data, v_model, h_model), negatives, recon, gap)

    @staticmethod
    def gradients(v_data, h_data, v_model, h_model) -> dict[str, torch.Tensor]:
        """<.>_model - <.>_data from the two phases' visible states [B, V], [N, V] and hidden
        probabilities [B, H], [N, H]; the weight's in one product and one in-place multiply-add."""
        n, m = v_data.shape[0], v_model.shape[0]
        weight = (h_model.t() @ v_model).addmm_(h_data.t(), v_data, beta=1 / m, alpha=-1 / n)  # [H, V]
        return {"weight": weight, "visible_bias": v_model.mean(0) - v_data.mean(0),
                "hidden_bias": h_model.mean(0) - h_data.mean(0)}

    def fantasy_particles(self, v_data: torch.Tensor, generator=None) -> torch.Tensor:
        """PCD's chain, started on the first batch (binary samples of it) and kept at that size."""
        if self.chain.shape[0] == 0:
            self.chain = bernoulli(v_data.detach().float(), generator)
        return self.chain

    # -- measurements [B, V] -> [B] -------------------------------------------------------
    @torch.no_grad()
    def pseudo_log_likelihood(self, v: torch.Tensor, generator=None,
                              logits: torch.Tensor | None = None) -> torch.Tensor:
        """V log sigmoid(F(v') - F(v)), v' = v with one random unit flipped (v_i -> 1 - v_i): the
        usual one-sample estimate of sum_i log p(v_i | v_-i), exact in expectation for binary v.
        v's hidden logits [B, H] may be given; v' differs in one unit, so its logits are those
        plus one weight column, and the estimate costs no matrix product of its own."""
        rows = torch.arange(v.shape[0], device=v.device)
        cols = torch.randint(v.shape[1], (v.shape[0],), device=v.device, generator=generator)
        logits = self.hidden_logits(v) if logits is None else logits
        delta = 1 - 2 * v[rows, cols]  # [B]: v'_i - v_i
        flipped_logits = logits + delta[:, None] * self.weight.t()[cols]  # [B, H]
        gap = delta * self.visible_bias[cols] + F.softplus(flipped_logits).sum(1) - F.softplus(logits).sum(1)
        return -v.shape[1] * F.softplus(gap)  # gap = F(v) - F(v')

    def reconstruction_error(self, v: torch.Tensor) -> torch.Tensor:
        """Squared error of one mean-field up-down pass, summed over the pixels."""
        return (self.visible_probs(self.hidden_probs(v)) - v).square().sum(1)


# Rows of each training batch that the logged train terms (the mean-field reconstruction error,
# which is the train loss, and the free-energy gap) are measured on. CD needs neither: on the whole
# batch they would cost one more [B, H] x [H, V] product and two softplus passes per step, over a
# fifth of it. Batches are shuffled, so these rows' mean is an unbiased estimate of the batch's,
# and an epoch's train loss still averages thousands of images.
TRAIN_MONITOR_ROWS = 16


@torch.no_grad()
def contrastive_divergence_step(rbm: BernoulliRBM, v: torch.Tensor, k: int, persistent: bool, binarize: bool,
                                step, name: str, mean_field: bool) -> dict[str, torch.Tensor]:
    """One CD/PCD update of `rbm` on data v [B, V] through optimizer `name`; returns the terms
    (0-dim) measured before the update on the batch's first TRAIN_MONITOR_ROWS images: recon
    (mean-field error per image, against the grey levels) and free_energy_gap = mean F(data) -
    mean F(negatives); `mean_field` as in `BernoulliRBM.cd_gradients`."""
    sample = bernoulli(v) if binarize else v
    chain = rbm.fantasy_particles(sample) if persistent else None
    estimate = rbm.cd_gradients(sample, k, chain, monitor_rows=TRAIN_MONITOR_ROWS, mean_field=mean_field)
    if persistent:
        rbm.chain.copy_(estimate.negatives)
    error = (estimate.recon - v[:TRAIN_MONITOR_ROWS]).square().sum(1).mean()
    for param_name, param in rbm.named_parameters():
        param.grad = step.scaled(estimate.grads[param_name].to(param.dtype))
    step.apply_gradients(name)
    return {"loss": error, "recon": error, "free_energy_gap": estimate.free_energy_gap}


def mean_field_reconstruction(reconstruction, persistent: bool) -> bool:
    """model.reconstruction (an enum or its name) -> whether CD keeps the last visible state at
    p(v | h); auto: yes for CD, no for PCD."""
    name = getattr(reconstruction, "value", reconstruction)
    if name not in ("auto", "probabilities", "binary"):
        raise ValueError(f"reconstruction must be auto, probabilities or binary, got {reconstruction!r}")
    return name == "probabilities" or (name == "auto" and not persistent)


def rbm_param_groups(rbm: BernoulliRBM) -> list[dict]:
    """Weight decay on the weights only (Hinton's guide, section 10): biases get none."""
    return [{"params": [rbm.weight]}, {"params": [rbm.visible_bias, rbm.hidden_bias], "weight_decay": 0.0}]


class RBM(Autoencoder):
    """`model=rbm`: one Bernoulli RBM. The code is p(h | x) [B, hidden_units]; decoding a code
    gives p(v | h); samples come from Gibbs chains (`gibbs_samples`), not from a code prior.

    `loss` (what best.pt is chosen by) is the squared error of one mean-field up-down pass,
    summed per image; CD does not minimise it, but it tracks learning and needs no Z."""

    has_prior = True
    supports_ddp = False  # gradients are written by hand and stepped, no backward to synchronise
    default_loss = "mse"
    prior_name = "a Gibbs chain from random visible units"
    GIBBS_STEPS = 1000  # for sample_codes / gibbs_samples when no step count is given
    GAP_WARNING_NATS_PER_UNIT = 0.5

    def __init__(self, input_shape, hidden_units: int = 500, cd_k: int = 1, persistent: bool = False,
                 binarize: bool = False, reconstruction: str = "auto", latent_dim: int | None = None):
        if latent_dim is not None and int(latent_dim) != int(hidden_units):
            raise ValueError(f"latent_dim ({latent_dim}) must equal hidden_units ({hidden_units}): "
                             f"the code is the hidden layer")
        if int(cd_k) < 1:
            raise ValueError(f"cd_k must be >= 1, got {cd_k}")
        super().__init__(input_shape, int(hidden_units), output_activation="sigmoid")
        self.cd_k, self.persistent, self.binarize = int(cd_k), bool(persistent), bool(binarize)
        self.mean_field = mean_field_reconstruction(reconstruction, self.persistent)
        self.rbm = BernoulliRBM(self.input_dim, int(hidden_units))

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).float()  # [B, C, H, W] -> [B, V]

    def encode(self, x, labels=None):
        return self.rbm.hidden_probs(self.flat(x))  # [B, C, H, W] -> [B, H]

    def decode_raw(self, z, labels=None):
        return self.rbm.visible_logits(z).view(-1, *self.input_shape)  # [B, H] -> [B, C, H, W]

    def parameter_groups(self):
        return {"model": rbm_param_groups(self.rbm)}

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        return contrastive_divergence_step(self.rbm, self.flat(batch.target), self.cd_k, self.persistent,
                                           self.binarize, step, "model", self.mean_field)

    @torch.no_grad()
    def eval_metrics(self, batch: Batch, recon_loss: str, autocast) -> dict[str, torch.Tensor]:
        """Batch sums, in float32 whatever the precision (a free energy adds up V + H terms):
        loss = recon (mean-field squared error per image), mse/bce/psnr of that reconstruction,
        free_energy, pseudo_log_likelihood, and free_energy_gap (F(data) - F(one Gibbs step))."""
        v = self.flat(batch.target)
        logits = self.rbm.hidden_logits(v)  # [B, H]: shared by all but a noisy input's reconstruction
        h_data = torch.sigmoid(logits)
        recon = self.decode(h_data if batch.inputs is batch.target else self.encode(batch.inputs))  # [B, C, H, W]
        error = (recon.reshape_as(v) - v).square().sum(1).sum()
        one_step = self.rbm.sample_visible(bernoulli(h_data))  # one Gibbs step from the data
        free_energy = self.rbm.free_energy_from_logits(v, logits)
        pseudo_log_likelihood = self.rbm.pseudo_log_likelihood(v, logits=logits)
        sums = {"loss": error, "recon": error, **reconstruction_sums(recon, batch.target),
                "free_energy": free_energy.sum(), "pseudo_log_likelihood": pseudo_log_likelihood.sum(),
                "free_energy_gap": (free_energy - self.rbm.free_energy(one_step)).sum()}
        return sums

    def epoch_warnings(self, val: dict) -> list[str]:
        gap = val.get("free_energy_gap")
        if gap is None:
            return []
        limit = self.GAP_WARNING_NATS_PER_UNIT * self.input_dim
        if not math.isfinite(gap) or abs(gap) > limit:
            return [f"the free-energy gap between the data and one Gibbs step from it is {gap:.4g} nats "
                    f"(over {limit:g}): the RBM may be diverging; try a lower optim.lr or more weight decay"]
        return []

    @torch.no_grad()
    def sample_codes(self, n: int, generator=None, steps: int | None = None) -> torch.Tensor:
        """The hidden state [n, H] that the last visible state of a Gibbs chain was drawn from:
        `decode` of it gives that state's mean, i.e. `gibbs_samples`."""
        v = random_visible(n, self.rbm.n_visible, self.rbm.weight.device, generator)
        return self.rbm.gibbs(v, steps or self.GIBBS_STEPS, generator)[1]

    @torch.no_grad()
    def gibbs_samples(self, n: int, steps: int = GIBBS_STEPS, generator=None) -> torch.Tensor:
        """[n, C, H, W] in [0, 1]: the final visible probabilities of n chains from random units."""
        return self.decode(self.sample_codes(n, generator, steps))

    @torch.no_grad()
    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        """F(v) [B] of images [B, C, H, W] in [0, 1] (grey levels as mean-field visible units):
        the anomaly score of `aerun anomaly score=free_energy`, low where the RBM puts mass."""
        return self.rbm.free_energy(self.flat(x))

    @torch.no_grad()
    def filters(self) -> torch.Tensor:
        """The hidden units' weights as images [H, C, H, W], each scaled to [0, 1] (filters.png)."""
        return weights_as_images(self.rbm.weight, self.input_shape)


def weights_as_images(weight: torch.Tensor, shape) -> torch.Tensor:
    """[K, V] weights -> [K, C, H, W] images, each min-max scaled to [0, 1]."""
    w = weight.detach().float()
    low, high = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
    return ((w - low) / (high - low).clamp_min(1e-12)).view(-1, *shape)
