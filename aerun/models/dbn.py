"""Deep belief nets: a stack of Bernoulli RBMs (`aerun.models.rbm`) trained greedily, layer by
layer, inside the ordinary loop (Hinton, Osindero & Teh 2006)."""

from __future__ import annotations

import torch
from torch import nn

from aerun.models.base import Autoencoder, Batch, Step, reconstruction_sums
from aerun.models.rbm import TRAIN_MONITOR_ROWS, BernoulliRBM, contrastive_divergence_step, \
    mean_field_reconstruction, random_visible, rbm_param_groups, weights_as_images


def stage_at(progress: float, epochs_per_layer: int, n_layers: int) -> int:
    """The layer a DBN trains after `progress` epochs: i while i * epochs_per_layer <= progress <
    (i + 1) * epochs_per_layer; the top layer from then on."""
    return min(int(progress // epochs_per_layer), n_layers - 1)


class DBN(Autoencoder):
    """`model=dbn`: a stack of RBMs (visible size from input_shape, then `layers` hidden sizes)
    trained greedily inside the ordinary loop: layer i for epochs [i, i + 1) * epochs_per_layer
    (`stage_at`), the top one after that, until trainer.max_epochs (`total_epochs()` covers
    every stage once). Layer i learns from the mean-field probabilities of the layers below
    (binarize=True samples its input from them afresh per batch). Only layer i's optimizer
    (`layer{i}`) steps. `loss` is the whole stack's mean-field reconstruction error in pixel
    space, so val loss is comparable across stages and best.pt favours a trained stack (the
    train loss measures it on each batch's first TRAIN_MONITOR_ROWS images, as the RBM does)."""

    has_prior = True
    supports_ddp = False
    default_loss = "mse"
    prior_name = "a Gibbs chain in the top RBM, then a mean-field down pass"
    GIBBS_STEPS = 1000

    def __init__(self, input_shape, layers=(500, 500, 2000), cd_k: int = 1, epochs_per_layer: int = 10,
                 persistent: bool = False, binarize: bool = False, reconstruction: str = "auto",
                 latent_dim: int | None = None):
        layers = [int(h) for h in layers]
        if not layers or min(layers) < 1:
            raise ValueError(f"layers must be a non-empty list of hidden sizes >= 1, got {layers}")
        if latent_dim is not None and int(latent_dim) != layers[-1]:
            raise ValueError(f"latent_dim ({latent_dim}) must equal the top layer's size ({layers[-1]})")
        if int(epochs_per_layer) < 1 or int(cd_k) < 1:
            raise ValueError(f"epochs_per_layer and cd_k must be >= 1, got {epochs_per_layer} and {cd_k}")
        super().__init__(input_shape, layers[-1], output_activation="sigmoid")
        self.layer_sizes = layers
        self.cd_k, self.epochs_per_layer = int(cd_k), int(epochs_per_layer)
        self.persistent, self.binarize = bool(persistent), bool(binarize)
        self.mean_field = mean_field_reconstruction(reconstruction, self.persistent)
        sizes = [self.input_dim, *layers]
        self.rbms = nn.ModuleList(BernoulliRBM(v, h) for v, h in zip(sizes[:-1], sizes[1:]))

    def total_epochs(self) -> int:
        return len(self.rbms) * self.epochs_per_layer

    def stage_at(self, progress: float) -> int:
        return stage_at(progress, self.epochs_per_layer, len(self.rbms))

    def up(self, v: torch.Tensor, n_layers: int) -> torch.Tensor:
        """Mean-field pass through the first n_layers RBMs: [B, V] -> [B, layers[n_layers - 1]]."""
        for rbm in self.rbms[:n_layers]:
            v = rbm.hidden_probs(v)
        return v

    def encode(self, x, labels=None):
        return self.up(x.reshape(x.shape[0], -1).float(), len(self.rbms))  # [B, C, H, W] -> [B, top]

    def decode_raw(self, z, labels=None):
        for rbm in reversed(self.rbms[1:]):
            z = rbm.visible_probs(z)  # [B, layers[i]] -> [B, layers[i - 1]]
        return self.rbms[0].visible_logits(z).view(-1, *self.input_shape)

    def parameter_groups(self):
        return {f"layer{i}": rbm_param_groups(rbm) for i, rbm in enumerate(self.rbms)}

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        i = self.stage_at(step.progress)
        with torch.no_grad():
            v = batch.target.reshape(batch.target.shape[0], -1).float()
            below = self.up(v, i)  # [B, V] -> [B, layer i's visible units]
            first = v[:TRAIN_MONITOR_ROWS]  # as the RBM's train loss: a subsample of each batch
            recon = self.reconstruct(batch.target[:TRAIN_MONITOR_ROWS]).reshape_as(first)
            error = (recon - first).square().sum(1).mean()
        terms = contrastive_divergence_step(self.rbms[i], below, self.cd_k, self.persistent, self.binarize, step,
                                            f"layer{i}", self.mean_field)
        return {"loss": error, "recon": error, "layer_recon": terms["recon"],
                "free_energy_gap": terms["free_energy_gap"], "stage": torch.tensor(float(i), device=v.device)}

    @torch.no_grad()
    def eval_metrics(self, batch: Batch, recon_loss: str, autocast) -> dict[str, torch.Tensor]:
        """Batch sums in float32: loss = recon (the stack's mean-field squared error per image),
        mse/bce/psnr, and layer{i}_recon, each layer's own error on its input's probabilities."""
        v = batch.target.reshape(batch.target.shape[0], -1).float()
        recon = self.decode(self.encode(batch.inputs))
        error = (recon.reshape_as(v) - v).square().sum(1).sum()
        sums = {"loss": error, "recon": error, **reconstruction_sums(recon, batch.target)}
        for i, rbm in enumerate(self.rbms):
            sums[f"layer{i}_recon"] = rbm.reconstruction_error(v).sum()
            v = rbm.hidden_probs(v)
        return sums

    @torch.no_grad()
    def sample_codes(self, n: int, generator=None, steps: int | None = None) -> torch.Tensor:
        """Top hidden states [n, top] of Gibbs chains in the top RBM from random units."""
        top = self.rbms[-1]
        v = random_visible(n, top.n_visible, top.weight.device, generator)
        return top.gibbs(v, steps or self.GIBBS_STEPS, generator)[1]

    @torch.no_grad()
    def gibbs_samples(self, n: int, steps: int = GIBBS_STEPS, generator=None) -> torch.Tensor:
        """[n, C, H, W] in [0, 1]: top-level chains, then probabilities down through the stack."""
        return self.decode(self.sample_codes(n, generator, steps))

    def classifier_init(self) -> list[dict[str, torch.Tensor]]:
        """[{"weight": [H_i, V_i], "bias": [H_i]}, ...] bottom to top: layer i's W and hidden bias,
        i.e. nn.Linear(V_i, H_i) weights, for an MLP Flatten -> (Linear -> Sigmoid) x layers whose
        output is `encode`. Copies, so fine-tuning them leaves the DBN as it was."""
        return [{"weight": rbm.weight.detach().clone(), "bias": rbm.hidden_bias.detach().clone()} for rbm in self.rbms]

    @torch.no_grad()
    def filters(self) -> torch.Tensor:
        """The first layer's hidden units as images [H, C, H, W] (filters.png)."""
        return weights_as_images(self.rbms[0].weight, self.input_shape)

    def classifier_trunk(self) -> nn.Sequential:
        """The MLP that `classifier_init` describes, built and loaded."""
        blocks: list[nn.Module] = [nn.Flatten()]
        for params in self.classifier_init():
            linear = nn.Linear(params["weight"].shape[1], params["weight"].shape[0])
            linear.load_state_dict(params)
            blocks += [linear, nn.Sigmoid()]
        return nn.Sequential(*blocks)
