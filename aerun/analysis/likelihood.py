"""The importance-weighted bound on log p(x) (Burda et al., 2016), for any model that gives
its posterior and prior densities (`posterior`, `sample_posterior`, `posterior_log_prob`,
`prior_log_prob`, `kl_to_prior`: see `aerun.models.variational`):

    log p(x) >= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x)

The bound tightens with K and is never looser than the ELBO, so NLL <= -ELBO.
"""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger("aerun.analysis")


def decoder_log_likelihood(raw, target, recon_loss: str):
    """log p(x|z) per image in nats: [B, C, H, W] raw decoder outputs -> [B] (see
    `losses.decoder_nll_per_image` for the likelihood behind each loss)."""
    from aerun import losses

    return -losses.decoder_nll_per_image(raw, target, recon_loss, True)


def importance_weighted_bound(model, x, num_samples: int, chunk: int, recon_loss: str = "bce", generator=None,
                              labels=None):
    """The K-sample bound for a batch `x` [B, C, H, W] (float in [0, 1]).

    Returns [B] tensors (nats per image): `iw_log_likelihood` = log (1/K) sum_k w_k, with
    log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x); `elbo_mc` = mean_k log w_k;
    `elbo` = mean_k log p(x|z_k) - KL(q||p) (the KL in closed form, as in training); `recon`
    and `kl`. By Jensen, iw_log_likelihood >= elbo_mc for every image and every draw.

    At most `chunk` decoded samples exist at once: images are taken chunk // K at a time,
    and when K > chunk the samples of one image are split and merged with logaddexp.
    """
    import torch

    with torch.no_grad():
        post = model.posterior(x, labels)  # statistics [B, ...]
        n = x.shape[0]
        kl = model.kl_to_prior(post)  # [B]
        lse = torch.full((n,), -math.inf, device=x.device)
        sum_log_w = torch.zeros(n, dtype=torch.float64, device=x.device)
        sum_log_lik = torch.zeros(n, dtype=torch.float64, device=x.device)
        images_per_chunk = max(1, chunk // num_samples)
        samples_per_chunk = min(num_samples, chunk)
        for i in range(0, n, images_per_chunk):
            part = {name: value[i:i + images_per_chunk] for name, value in post.items()}
            xi = x[i:i + images_per_chunk]
            yi = labels[i:i + images_per_chunk] if labels is not None else None
            b = xi.shape[0]
            for j in range(0, num_samples, samples_per_chunk):
                k = min(samples_per_chunk, num_samples - j)
                z = model.sample_posterior(part, k, generator)  # [b, k, D]
                zk_labels = yi.repeat_interleave(k) if yi is not None else None  # image i's label, k times
                raw = model.decode_raw(z.reshape(b * k, *z.shape[2:]), zk_labels)  # [b*k, C, H, W]
                target = xi[:, None].expand(b, k, *xi.shape[1:]).reshape(b * k, *xi.shape[1:])
                log_lik = decoder_log_likelihood(raw, target, recon_loss).view(b, k)
                log_w = log_lik + model.prior_log_prob(z) - model.posterior_log_prob(z, part)  # [b, k]
                lse[i:i + b] = torch.logaddexp(lse[i:i + b], torch.logsumexp(log_w, 1))
                sum_log_w[i:i + b] += log_w.sum(1).double()
                sum_log_lik[i:i + b] += log_lik.sum(1).double()
        recon = -(sum_log_lik / num_samples).float()
        return {"iw_log_likelihood": lse - math.log(num_samples), "elbo_mc": (sum_log_w / num_samples).float(),
                "elbo": -recon - kl, "recon": recon, "kl": kl}


def likelihood_report(model, images_uint8, recon_loss: str, num_samples: int, chunk: int, batch_size: int,
                      generator, labels=None) -> dict:
    """Means over the images of the bound's terms; NLL = -iw_log_likelihood, checked against -ELBO."""
    from aerun.engine.step import to_float

    model.eval()
    sums: dict[str, float] = {}
    n = images_uint8.shape[0]
    started = time.time()
    for i in range(0, n, batch_size):
        batch_labels = labels[i:i + batch_size] if labels is not None and model.uses_labels else None
        out = importance_weighted_bound(model, to_float(images_uint8[i:i + batch_size]), num_samples, chunk,
                                        recon_loss, generator, batch_labels)
        for name, value in out.items():
            sums[name] = sums.get(name, 0.0) + value.double().sum().item()
        log.info("importance sampling: %d/%d images, K=%d (%.0f s)", min(n, i + batch_size), n, num_samples,
                 time.time() - started)
    mean = {name: value / n for name, value in sums.items()}
    nll, neg_elbo = -mean["iw_log_likelihood"], -mean["elbo"]
    if not nll <= neg_elbo + 1e-3:
        log.warning("IW-NLL %.3f > -ELBO %.3f: the bound should be tighter; raise evaluate.iw_samples", nll, neg_elbo)
    likelihood = "bernoulli" if recon_loss == "bce" else "gaussian(variance=1/2)"
    return {"elbo": mean["elbo"], "neg_elbo": neg_elbo, "recon": mean["recon"], "kl": mean["kl"],
            "elbo_mc": mean["elbo_mc"], "iw_nll": nll, "iw_samples": num_samples, "iw_gap": neg_elbo - nll,
            "nll_le_neg_elbo": bool(nll <= neg_elbo + 1e-3), "likelihood": likelihood, "units": "nats per image"}
