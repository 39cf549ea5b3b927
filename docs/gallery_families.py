"""The gallery rows of the later model families and applications (docs/gallery.py runs them).

`H` is docs/gallery.py itself (set there before the rows run): its Gallery runner, figure
helpers and number formats.
"""

from __future__ import annotations

H = None  # docs/gallery.py's module, set by it


def _panels_of(g, row, name, panels, columns, width, height, title=None):
    H.image_panels(g.figure(name), panels, columns=columns, width=width, height=height, title=title)


def svae_vs_nvae(g, row) -> None:
    svae, nvae = g.out / "svae_vs_nvae", g.out / "svae_vs_nvae_nvae"
    m = g.train(svae, "experiment=svae_vs_nvae")
    g.train(nvae, "experiment=svae_vs_nvae", "model=vae", "model.latent_dim=2")
    numbers, panels = [], []
    for run, label in ((nvae, "N-VAE, z in R^2"), (svae, "S-VAE, z on the sphere S^2 (Hammer projection)")):
        ev = g.evaluate(run, run.parent / f"{run.name}_eval", variational=True)
        enc = run.parent / f"{run.name}_encode"
        g.aerun(["encode", g.rel(run), f"hydra.run.dir={g.rel(enc)}"], enc / "latent.png", after=[run / "metrics.json"])
        v = ev["vae"]
        numbers.append(f"{label.split(',')[0]}: IW-NLL {v['iw_nll']:.1f} nats (ELBO {v['elbo']:.1f}), probe acc "
                       f"{H.f4(ev['features']['model']['probe_accuracy'])}")
        panels.append((enc / "latent.png", label))
    row.epochs = H.epochs_of(m)
    row.numbers = numbers + ["the paper's d-sweep and k-NN table: benchmarks/paper_tables.md (svae)"]
    _panels_of(g, row, "svae_vs_nvae", panels, columns=2, width=12, height=5.2)


def vaegan_mnist(g, row) -> None:
    gan, vae = g.out / "vaegan_mnist", g.out / "vaegan_mnist_vae"
    m = g.train(gan, "experiment=vaegan_mnist")
    g.train(vae, "experiment=vaegan_mnist", "model=conv_vae", "model.latent_dim=32")
    panels, numbers = [], []
    for run, label in ((vae, "conv VAE"), (gan, "VAE-GAN")):
        gen = run.parent / f"{run.name}_generate"
        g.aerun(["generate", g.rel(run), "n=2000", "sampler=prior", "generate.grid_max=64",
                 f"hydra.run.dir={g.rel(gen)}"], gen / "quality.json", after=[run / "metrics.json"])
        q = H.read_json(gen / "quality.json")
        metrics = H.read_json(run / "metrics.json")
        numbers.append(f"{label}: Frechet distance {q['frechet_distance']:.1f}, precision {q['precision']:.2f}, "
                       f"recall {q['recall']:.2f}; test MSE {metrics['test']['mse']:.4f}")
        panels.append((gen / "samples.png", f"{label}: prior samples (FD {q['frechet_distance']:.1f})"))
    row.epochs = H.epochs_of(m)
    row.numbers = numbers
    _panels_of(g, row, "vaegan_mnist", panels, columns=2, width=10, height=5.2)


def cvae_digits(g, row) -> None:
    run = g.out / "cvae_digits"
    m = g.train(run, "experiment=cvae_digits")
    ev = g.evaluate(run, g.out / "cvae_digits_eval", variational=True)
    gen, seven = g.out / "cvae_digits_generate", g.out / "cvae_digits_generate_7"
    g.aerun(["generate", g.rel(run), "n=100", f"hydra.run.dir={g.rel(gen)}"], gen / "samples.png",
            after=[run / "metrics.json"])
    g.aerun(["generate", g.rel(run), "n=1000", "class=7", "generate.grid_max=64", f"hydra.run.dir={g.rel(seven)}"],
            seven / "quality.json", after=[run / "metrics.json"])
    counts = H.read_json(seven / "quality.json")["class_histogram"]["counts"]
    row.epochs = H.epochs_of(m)
    row.numbers = [H.vae_numbers(ev), f"`class=7`: the judge calls {100 * counts[7] / sum(counts):.1f}% of 1,000 "
                                      f"samples a 7 (every class: benchmarks/paper_tables.md, cvae)"]
    _panels_of(g, row, "cvae_digits", [(gen / "samples.png", "rows: class 0-9; columns: one style code each")],
               columns=1, width=6, height=6.4)


def rbm_mnist(g, row) -> None:
    run = g.out / "rbm_mnist"
    m = g.train(run, "experiment=rbm_mnist")
    ev = g.evaluate(run, g.out / "rbm_mnist_eval")
    gen = g.out / "rbm_mnist_generate"
    g.aerun(["generate", g.rel(run), "n=64", "generate.quality=false", f"hydra.run.dir={g.rel(gen)}"],
            gen / "samples.png", after=[run / "metrics.json"])
    r = ev["rbm"]
    row.epochs = H.epochs_of(m)
    row.numbers = [f"AIS test log-likelihood {r['log_likelihood']:.1f} nats (log Z {r['log_z']:.1f} ± "
                   f"{r['log_z_std_error']:.2f}; {r['ais_chains']} chains x {r['ais_betas']} temperatures)",
                   f"test MSE of one up-down pass {ev['reconstruction']['mse']:.4f}",
                   "CD-1 / CD-3 / PCD against Salakhutdinov & Murray: benchmarks/paper_tables.md (rbm)"]
    _panels_of(g, row, "rbm_mnist", [(run / "filters.png", "filters: 100 hidden units' weights"),
                                     (gen / "samples.png", "Gibbs samples: 1,000 steps from random units")],
               columns=2, width=11, height=5.4)


def _reconstruction_row(g, row, name: str, *overrides: str, note: str = "") -> dict:
    run = g.out / name
    m = g.train(run, f"experiment={name}", *overrides)
    ev = g.evaluate(run, g.out / f"{name}_eval")
    images, k = H.recon_vs_pca(run, n=12)
    row.epochs = H.epochs_of(m)
    row.numbers = [H.recon_numbers(ev), f"{m['params']:,} parameters" + note]
    _panels_of(g, row, name, [(H.grid_to_array(images, nrow=12), f"test images / {name} / PCA-{k}")],
               columns=1, width=6.2, height=2.0)
    return ev


def deep_ae_hinton(g, row) -> None:
    smoke = ["trainer.max_epochs=5"] if g.smoke else []  # 4 pretraining stages, then at least one epoch
    ev = _reconstruction_row(g, row, "deep_ae_hinton", *smoke)
    row.numbers.insert(0, f"squared error per test image {784 * ev['reconstruction']['mse']:.2f} (Hinton & "
                          f"Salakhutdinov: 3.00; PCA-30 here {784 * ev['pca']['mse']:.2f}, theirs 13.87)")


def unpool_mnist(g, row) -> None:
    _reconstruction_row(g, row, "unpool_mnist")


def seq_lstm_mnist(g, row) -> None:
    _reconstruction_row(g, row, "seq_lstm_mnist")


def cabessa_recipe(g, row) -> None:
    _reconstruction_row(g, row, "cabessa_recipe", note=" (Adam 1e-3, weight decay 7.84e-3 = 1e-5 x 784 pixels)")


def watermark_removal(g, row) -> None:
    run = g.out / "watermark_removal"
    m = g.train(run, "experiment=watermark_removal")
    ev = g.evaluate(run, g.out / "watermark_removal_eval")
    d = ev["denoising"]
    row.epochs = H.epochs_of(m)
    row.numbers = [f"inside the stamps ({100 * d['stamped_fraction']:.1f}% of pixels): PSNR {d['psnr_region_noisy']:.1f} "
                   f"→ {d['psnr_region']:.1f} dB (**{d['psnr_region'] - d['psnr_region_noisy']:+.1f} dB**)",
                   f"whole image: {d['psnr_noisy']:.1f} → {d['psnr_denoised']:.1f} dB; test words never seen in "
                   f"training"]
    _panels_of(g, row, "watermark_removal", [(run / "denoising.png", "stamped test input / output / clean")],
               columns=1, width=7.5, height=2.6)


def fashion_vae_2d(g, row) -> None:
    """FashionMNIST for real: a 2-d VAE's codes with the class names, a path between classes, samples."""
    from aerun.data.idx import FASHION_MNIST_CLASSES

    run = g.out / "fashion_vae_2d"
    m = g.train(run, "experiment=vae_2d", "data=fashion_mnist")
    ev = g.evaluate(run, g.out / "fashion_vae_2d_eval", variational=True)
    enc, interp, man = (g.out / f"fashion_vae_2d_{s}" for s in ("encode", "interp", "manifold"))
    after = [run / "metrics.json"]
    g.aerun(["encode", g.rel(run), f"hydra.run.dir={g.rel(enc)}"], enc / "codes.npz", after)
    g.aerun(["interpolate", g.rel(run), "from_class=Sandal", "to_class=Sneaker", f"hydra.run.dir={g.rel(interp)}"],
            interp / "interpolation.png", after)
    g.aerun(["interpolate", g.rel(run), "mode=manifold", f"hydra.run.dir={g.rel(man)}"], man / "manifold.png", after)
    row.epochs = H.epochs_of(m)
    row.numbers = [H.vae_numbers(ev), H.feature_numbers(ev)]
    fig = H._figure(13, 5.6)
    ax = fig.add_subplot(1, 2, 1)
    _named_scatter(ax, enc / "codes.npz", list(FASHION_MNIST_CLASSES))
    ax = fig.add_subplot(2, 2, 2)
    ax.imshow(H._image(interp / "interpolation.png"), interpolation="antialiased")
    ax.set_title("Sandal → Sneaker through the code space", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(2, 2, 4)
    ax.imshow(H._image(man / "manifold.png"), interpolation="antialiased")
    ax.set_title("decoded manifold over N(0, 1) quantiles", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    H._save(fig, g.figure("fashion_vae_2d"))


def _named_scatter(ax, codes_npz, names: list[str], max_points: int = 4000) -> None:
    import matplotlib
    import numpy as np

    data = np.load(codes_npz)
    codes, labels = data["codes"], data["labels"]
    chosen = np.random.default_rng(0).permutation(len(codes))[:max_points]
    cmap = matplotlib.colormaps["tab10"]
    for c, name in enumerate(names):
        pick = chosen[labels[chosen] == c]
        ax.scatter(codes[pick, 0], codes[pick, 1], s=2, color=cmap(c), label=name, rasterized=True)
    ax.set_title("2-d VAE codes of FashionMNIST test images", fontsize=9)
    ax.legend(markerscale=4, fontsize=7, loc="best")


FAMILY_ROWS = [svae_vs_nvae, vaegan_mnist, cvae_digits, rbm_mnist, deep_ae_hinton, unpool_mnist, seq_lstm_mnist,
               cabessa_recipe, watermark_removal, fashion_vae_2d]
