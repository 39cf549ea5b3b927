"""Stacked autoencoders: a deep MLP AE (Hinton & Salakhutdinov 2006: 784-1000-500-250-30), with
tied weights (the decoder uses the encoder's transposed weights: one storage, gradients summed)
and layer-wise pretraining before the whole is fine-tuned.

pretrain=none    train the whole network from the start.
pretrain=greedy  stage i trains one shallow AE: encoder layer i and its mirror, on the codes of
                 the layers below (frozen), `pretrain_epochs` epochs a stage; then fine-tuning.
pretrain=rbm     stage i trains encoder layer i as an RBM by CD-1 (Bernoulli hidden units, the
                 code layer's linear), then the stack is unrolled into the AE (Hinton &
                 Salakhutdinov): decoder layer i starts as the transpose of encoder layer i.

The stages are a pure function of training progress (`stage_at`), so a checkpoint taken in any
stage resumes in that stage; each stage has its own optimizer, over its layer's parameters only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aerun import losses
from aerun.models.base import Autoencoder, Batch, Step
from aerun.models.layers import activation as make_activation
from aerun.models.rbm import BernoulliRBM, bernoulli


class StackedAutoencoder(Autoencoder):
    supports_ddp = False  # one optimizer per stage, and RBM stages set their own gradients

    def __init__(self, input_shape, latent_dim: int = 30, layers=(1000, 500, 250), activation: str = "sigmoid",
                 tied_weights: bool = False, pretrain: str = "none", pretrain_epochs: int = 1, sparsity=None):
        super().__init__(input_shape, latent_dim, sparsity=sparsity, output_activation="sigmoid")
        self.sizes = [self.input_dim, *[int(h) for h in layers], int(latent_dim)]  # 784-1000-500-250-30
        self.activation, self.tied, self.pretrain = activation, bool(tied_weights), pretrain
        self.pretrain_epochs = int(pretrain_epochs)
        self.latent_activation = "identity"  # a linear code layer, as in the paper
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        self.encoder_layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        if self.tied:  # decoder layer i = encoder layer i transposed, with its own bias
            self.decoder_biases = nn.ParameterList(nn.Parameter(torch.zeros(a)) for a, _ in pairs)
        else:
            self.decoder_layers = nn.ModuleList(nn.Linear(b, a) for a, b in pairs)
        self.act = make_activation(activation)
        self.register_buffer("unrolled", torch.zeros(len(pairs), dtype=torch.bool))  # rbm: decoder i set from encoder i
        self._unrolled_below = 0  # unroll_below has seen the buffer up to this stage (not saved: re-read after a load)

    @property
    def n_layers(self) -> int:
        return len(self.encoder_layers)

    def pretrain_stages(self) -> int:
        return 0 if self.pretrain == "none" else self.n_layers

    def stage_at(self, progress: float) -> int:
        """The stage after `progress` epochs: 0..L-1 pretrain layer i, L (or 0 with pretrain=none) fine-tunes."""
        if self.pretrain == "none":
            return 0
        return min(self.n_layers, int(progress // self.pretrain_epochs))

    # -- the network -----------------------------------------------------------------------
    def encode_layer(self, i: int, h: torch.Tensor) -> torch.Tensor:
        out = self.encoder_layers[i](h)
        return out if i == self.n_layers - 1 else self.act(out)  # the code layer is linear

    def decode_layer(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Decoder layer i maps layer i + 1's units back to layer i's (raw: no activation)."""
        if self.tied:
            return F.linear(h, self.encoder_layers[i].weight.t(), self.decoder_biases[i])
        return self.decoder_layers[i](h)

    def encode(self, x, labels=None, depth: int | None = None):
        h = x.flatten(1)  # [B, C, H, W] -> [B, P]
        for i in range(self.n_layers if depth is None else depth):
            h = self.encode_layer(i, h)
        return h

    def decode_raw(self, z, labels=None):
        h = z
        for i in reversed(range(self.n_layers)):
            h = self.decode_layer(i, h)
            if i > 0:
                h = self.act(h)
        return h.view(-1, *self.input_shape)  # [B, P] -> [B, C, H, W] logits

    # -- training ----------------------------------------------------------------------------
    def parameter_groups(self) -> dict:
        groups = {"model": list(self.parameters())}
        for i in range(self.pretrain_stages()):
            groups[f"layer{i}"] = self.layer_parameters(i)
        return groups

    def layer_parameters(self, i: int) -> list[nn.Parameter]:
        mirror = [self.decoder_biases[i]] if self.tied else list(self.decoder_layers[i].parameters())
        return [*self.encoder_layers[i].parameters(), *mirror]

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        stage = self.stage_at(step.progress)
        self.unroll_below(stage)
        if stage >= self.pretrain_stages():  # fine-tuning (or no pretraining): the whole network
            return super().training_step(batch, step)
        with torch.no_grad():  # the layers below are frozen: their codes are this layer's data
            inputs = self.encode(batch.inputs, depth=stage)
            target = inputs if stage else batch.target.flatten(1)
        if self.pretrain == "rbm":
            return self.rbm_step(stage, target, step)
        with step.autocast():
            raw = self.decode_layer(stage, self.encode_layer(stage, inputs))
        kind = step.recon_loss if stage == 0 else "mse"  # deeper layers reconstruct activations
        recon = losses.reconstruction_per_image(raw, target, kind, stage == 0).mean()
        terms = {"loss": recon, "recon": recon}
        step.optimize(f"layer{stage}", recon, terms)
        return terms

    def rbm_step(self, i: int, v: torch.Tensor, step: Step) -> dict[str, torch.Tensor]:
        """One CD-1 update of layer i as an RBM (visible = layer i's input, hidden = its units)."""
        layer = self.encoder_layers[i]
        visible_bias = self.decoder_biases[i] if self.tied else self.decoder_layers[i].bias
        linear = i == self.n_layers - 1  # the code layer: Gaussian (linear) hidden units
        with torch.no_grad():
            v0 = v.float()
            h0 = layer(v0) if linear else torch.sigmoid(layer(v0))
            h_sample = h0 + torch.randn_like(h0) if linear else bernoulli(h0)
            v1 = torch.sigmoid(F.linear(h_sample, layer.weight.t(), visible_bias))
            h1 = layer(v1) if linear else torch.sigmoid(layer(v1))
            # the negative log-likelihood gradient estimate, so the optimizer's step climbs the likelihood
            grads = BernoulliRBM.gradients(v0, h0, v1, h1)
            layer.weight.grad, layer.bias.grad = step.scaled(grads["weight"]), step.scaled(grads["hidden_bias"])
            visible_bias.grad = step.scaled(grads["visible_bias"])
            error = (v0 - v1).square().sum(1).mean()
        step.apply_gradients(f"layer{i}")
        if not self.tied:  # keep the mirror unrolled as the RBM learns, so val reads the stack so far
            with torch.no_grad():
                self.decoder_layers[i].weight.copy_(layer.weight.t())
        return {"loss": error, "recon": error}

    def unroll_below(self, stage: int) -> None:
        """pretrain=rbm: once layer i's RBM stage is over, decoder layer i starts as its transpose."""
        if self.pretrain != "rbm" or self.tied or stage <= self._unrolled_below:
            return  # read the buffer (a device sync on a GPU) once per stage, not every step
        for i in range(min(stage, self.n_layers)):
            if not self.unrolled[i]:
                with torch.no_grad():
                    self.decoder_layers[i].weight.copy_(self.encoder_layers[i].weight.t())
                self.unrolled[i] = True
        self._unrolled_below = stage

    def counts_for_best(self, epochs_done: int) -> bool:
        """Only fine-tuning epochs may give best.pt: during pretraining the whole net is unfinished."""
        return self.stage_at(epochs_done - 1) >= self.pretrain_stages()
