"""VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric").

A conv VAE whose reconstruction is measured in the feature space of a discriminator, which
is trained beside it to tell real images from reconstructions and from prior samples. Three
networks, three optimizers, stepped in turn in one training step:

    discriminator  <- L_GAN = BCE(D(x), 1) + BCE(D(x~), 0) + BCE(D(x_p), 0)
    encoder        <- beta * KL(q(z|x) || N(0, I)) + L_llike (+ pixel term)
    decoder        <- gamma * L_llike + L_gen (+ pixel term),  L_gen = BCE(D(x~), 1) + BCE(D(x_p), 1)

with L_llike = 1/2 ||Dis_l(x) - Dis_l(x~)||^2 summed over the features of the discriminator's
last conv layer (a Gaussian likelihood there), x~ the reconstruction and x_p a decoded prior
sample. The generator uses the non-saturating loss -log D instead of log(1 - D). Every term
is summed per image and averaged over the batch, like the rest of aerun.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aerun import losses
from aerun.models.base import AEOutput, Batch, Step
from aerun.models.conv import conv_decoder, conv_encoder, downsampled_sizes
from aerun.models.layers import activation as make_activation
from aerun.models.variational import VariationalAutoencoder, kl_warmup


class Discriminator(nn.Module):
    """Strided convs (batch-normalised after the first, as in DCGAN and Larsen et al.) whose last
    feature map is Dis_l, the similarity space; then a hidden layer and one real/fake logit."""

    def __init__(self, input_shape, channels: list[int], features: int):
        super().__init__()
        in_ch, height, width = input_shape
        layers = []
        for i, ch in enumerate(channels):
            layers.append(nn.Conv2d(in_ch, ch, 3, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.LeakyReLU(0.2))
            in_ch = ch
        self.convs = nn.Sequential(*layers)
        out_h, out_w = downsampled_sizes(height, width, len(channels))[-1]
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(in_ch * out_h * out_w, features), nn.LeakyReLU(0.2),
                                  nn.Linear(features, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, H, W] -> (logits [B], Dis_l features [B, C_l * h * w])."""
        h = self.convs(x)
        return self.head(h).squeeze(1), h.flatten(1)

    def judge(self, *batches: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Real, reconstructed and sampled images in one pass, so that batch norm normalises them
        alike and their features are comparable: (logits per batch, features per batch)."""
        logits, features = self(torch.cat(batches))
        sizes = [b.shape[0] for b in batches]
        return list(logits.split(sizes)), list(features.split(sizes))


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


class VAEGAN(VariationalAutoencoder):
    supports_ddp = False  # three optimizers stepped in turn: DDP would synchronise only one backward

    def __init__(self, input_shape, latent_dim: int = 32, channels=(32, 64), trunk_dim: int = 256,
                 activation: str = "relu", beta: float = 1.0, kl_warmup_epochs: float = 0.0, gamma: float = 0.1,
                 pixel_weight: float = 0.0, discriminator_channels=(32, 64), discriminator_features: int = 256,
                 discriminator_lr_scale: float = 1.0, equilibrium_margin: float | None = 0.35):
        super().__init__(input_shape, latent_dim, beta=beta, kl_warmup_epochs=kl_warmup_epochs)
        channels = [int(c) for c in channels]
        self.gamma, self.pixel_weight = float(gamma), float(pixel_weight)
        self.discriminator_lr_scale = float(discriminator_lr_scale)
        self.equilibrium_margin = None if equilibrium_margin is None else float(equilibrium_margin)
        self.encoder = conv_encoder(self.input_shape, channels, trunk_dim, activation, activation)
        self.to_stats = nn.Linear(trunk_dim, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, trunk_dim), make_activation(activation))
        self.decoder = conv_decoder(self.input_shape, channels, trunk_dim, activation)
        self.discriminator = Discriminator(self.input_shape, [int(c) for c in discriminator_channels],
                                           int(discriminator_features))

    def encode_stats(self, x, labels=None):
        mu, raw_logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, self.safe_logvar(raw_logvar)

    def decode_raw(self, z, labels=None):
        return self.decoder(self.from_latent(z))

    # -- training -------------------------------------------------------------------------
    def parameter_groups(self) -> dict:
        encoder = [*self.encoder.parameters(), *self.to_stats.parameters()]
        decoder = [*self.from_latent.parameters(), *self.decoder.parameters()]
        return {"encoder": encoder, "decoder": decoder,
                "discriminator": [{"params": list(self.discriminator.parameters()),
                                   "lr_scale": self.discriminator_lr_scale}]}

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        x = batch.target
        with step.autocast():
            out = self(batch.inputs)
            prior_raw = self.decode_raw(torch.randn_like(out.z))
            recon, sampled = torch.sigmoid(out.recon), torch.sigmoid(prior_raw)
            (d_real, d_rec, d_prior), _ = self.discriminator.judge(x, recon.detach(), sampled.detach())
        real_cost, fake_cost = _bce(d_real, 1.0), 0.5 * (_bce(d_rec, 0.0) + _bce(d_prior, 0.0))
        dis_loss = real_cost + 2 * fake_cost
        train_dis, train_dec = self.equilibrium(real_cost, fake_cost)
        if train_dis:
            step.optimize("discriminator", dis_loss)
        with step.autocast():  # the networks are judged by the discriminator as it is now
            (_, d_rec, d_prior), (features_real, features_rec, _) = self.discriminator.judge(x, recon, sampled)
            features_real = features_real.detach()
        terms = self.generator_terms(out, x, features_rec, features_real, d_rec, d_prior,
                                     kl_warmup(step.progress, self.kl_warmup_epochs))
        step.optimize("encoder", terms["encoder_loss"], retain_graph=train_dec)
        if train_dec:
            step.optimize("decoder", terms["decoder_loss"])
        on = dis_loss.device  # every term on the batch's device: the accumulator stacks them
        terms.update(dis_loss=dis_loss.detach(), dis_trained=torch.tensor(float(train_dis), device=on),
                     dec_trained=torch.tensor(float(train_dec), device=on), dis_acc_real=(d_real > 0).float().mean(),
                     dis_acc_recon=(d_rec.detach() < 0).float().mean(),
                     dis_acc_sampled=(d_prior.detach() < 0).float().mean())
        return terms

    EQUILIBRIUM = 0.68  # the discriminator's BCE near chance (ln 2 = 0.69), as in Larsen et al.'s code

    def equilibrium(self, real_cost: torch.Tensor, fake_cost: torch.Tensor) -> tuple[bool, bool]:
        """(train the discriminator?, train the decoder?): Larsen et al.'s balance. A discriminator
        whose loss on real or fake images is below EQUILIBRIUM - margin is winning and rests; one
        above EQUILIBRIUM + margin is losing, and the decoder rests; never both (one host read a step)."""
        if self.equilibrium_margin is None:
            return True, True
        real, fake = torch.stack([real_cost.detach(), fake_cost.detach()]).float().tolist()
        low, high = self.EQUILIBRIUM - self.equilibrium_margin, self.EQUILIBRIUM + self.equilibrium_margin
        train_dis, train_dec = not (real < low or fake < low), not (real > high or fake > high)
        return (True, True) if not (train_dis or train_dec) else (train_dis, train_dec)

    def generator_terms(self, out: AEOutput, x, features_rec, features_real, d_rec, d_prior,
                        kl_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The encoder's and decoder's losses and their parts (batch means of per-image sums)."""
        kl = losses.gaussian_kl_per_dim(out.mu, out.logvar).sum(1).mean()
        llike = 0.5 * (features_rec.float() - features_real.float()).square().sum(1).mean()
        gen = _bce(d_rec, 1.0) + _bce(d_prior, 1.0)
        pixel = losses.reconstruction_per_image(out.recon, x, "bce", True).mean()
        pixel_term = self.pixel_weight * pixel if self.pixel_weight else 0.0
        encoder_loss = self.beta * kl_scale * kl + llike + pixel_term
        decoder_loss = self.gamma * llike + gen + pixel_term
        return {"loss": encoder_loss, "encoder_loss": encoder_loss, "decoder_loss": decoder_loss, "kl": kl,
                "llike": llike, "gen_loss": gen, "recon": pixel}

    # -- evaluation -----------------------------------------------------------------------
    def eval_metrics(self, batch: Batch, recon_loss: str, autocast) -> dict[str, torch.Tensor]:
        """The losses, the discriminator's accuracy on real / reconstructed / sampled images, the
        pixel metrics of the mean reconstruction, and how varied prior samples are against real images."""
        from aerun.models.base import reconstruction_sums

        x, b = batch.target, batch.target.shape[0]
        with autocast():
            out = self(batch.inputs)
            mean_image = torch.sigmoid(self.decode_raw(out.mu)).float()
            sampled = torch.sigmoid(self.decode_raw(torch.randn_like(out.z)))
            (d_real, d_rec, d_prior), (features_real, features_rec, _) = self.discriminator.judge(
                x, torch.sigmoid(out.recon), sampled)
        terms = self.generator_terms(out, x, features_rec, features_real, d_rec, d_prior)
        sums = {name: value.float() * b for name, value in terms.items()}
        nll = losses.decoder_nll_per_image(out.recon, x, "bce", True)
        elbo = -(nll + losses.gaussian_kl_per_dim(out.mu, out.logvar).sum(1))  # [B]
        # val/loss, what picks best.pt: the pixel -ELBO, a yardstick that does not move with the discriminator
        sums["loss"], sums["elbo"] = -elbo.sum(), elbo.sum()
        sums["dis_loss"] = (_bce(d_real, 1.0) + _bce(d_rec, 0.0) + _bce(d_prior, 0.0)) * b
        sums["dis_acc_real"] = (d_real > 0).float().sum()
        sums["dis_acc_recon"] = (d_rec < 0).float().sum()
        sums["dis_acc_sampled"] = (d_prior < 0).float().sum()
        sums.update(reconstruction_sums(mean_image, x))
        spread = lambda images: (images.float() - images.float().mean(0)).square().flatten(1).sum(1).mean()  # noqa: E731
        sums["sample_spread"], sums["real_spread"] = spread(sampled) * b, spread(x) * b
        return sums

    def epoch_warnings(self, val: dict) -> list[str]:
        """Name the two ways a GAN fails: the discriminator wins outright (no gradient for the
        generator), or the prior samples collapse onto a few images (mode collapse)."""
        warnings = []
        if not val:
            return warnings
        if min(val["dis_acc_real"], val["dis_acc_recon"], val["dis_acc_sampled"]) > 0.99:
            warnings.append("the discriminator wins outright (>99% right on real, reconstructed and sampled "
                            "images): the decoder gets almost no gradient from it; try a smaller "
                            "model.discriminator_lr_scale or a larger model.gamma")
        if val["real_spread"] > 0 and val["sample_spread"] < 0.1 * val["real_spread"]:
            warnings.append(f"mode collapse: prior samples vary {val['sample_spread'] / val['real_spread']:.1%} as "
                            f"much as real images; try a larger model.gamma or model.pixel_weight")
        return warnings
