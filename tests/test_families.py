"""The families added on the training core: shapes at any image size, and what each one promises
(tied weights share one storage, each pretraining stage trains only its layer, unpooling uses the
encoder's switches, the VAE-GAN's optimizers step only their own network, a conditional model's
label decides the class, the S-VAE's codes live on the sphere)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from aerun.engine import StepContext, StepOptions
from aerun.models import (DBN, RBM, SVAE, VAE, VAEGAN, ConvAutoencoder, ConvVAE, SequenceAutoencoder, SequenceVAE,
                          StackedAutoencoder)
from aerun.errors import UserError
from aerun.models.base import Batch
from tests.conftest import compose, run_aerun, tiny_overrides

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 13, 11)]
BUILDERS = {
    "svae_mlp": lambda s: SVAE(s, latent_dim=3, hidden=[32]),
    "svae_conv": lambda s: SVAE(s, latent_dim=5, network="conv", channels=[4, 8], trunk_dim=16),
    "vaegan": lambda s: VAEGAN(s, latent_dim=4, channels=[4, 8], trunk_dim=16, discriminator_channels=[4, 8],
                               discriminator_features=16),
    "stacked": lambda s: StackedAutoencoder(s, latent_dim=4, layers=[32, 16]),
    "stacked_tied": lambda s: StackedAutoencoder(s, latent_dim=4, layers=[32, 16], tied_weights=True),
    "seq_lstm": lambda s: SequenceAutoencoder(s, latent_dim=4, cell="lstm", hidden=16),
    "seq_gru": lambda s: SequenceAutoencoder(s, latent_dim=4, cell="gru", hidden=16, layers=2),
    "seq_transformer": lambda s: SequenceAutoencoder(s, latent_dim=4, cell="transformer", hidden=16, heads=2),
    "seq_vae": lambda s: SequenceVAE(s, latent_dim=4, cell="lstm", hidden=16),
    "rbm": lambda s: RBM(s, hidden_units=4),
    "dbn": lambda s: DBN(s, layers=[16, 4], epochs_per_layer=1),
    "cnn_maxpool_unpool": lambda s: ConvAutoencoder(s, latent_dim=4, channels=[4, 8], downsample="maxpool",
                                                    upsample="unpool"),
    "cnn_nearest": lambda s: ConvAutoencoder(s, latent_dim=4, channels=[4, 8], upsample="nearest"),
}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_new_family_has_the_shapes_of_its_input(name, shape):
    torch.manual_seed(0)
    model = BUILDERS[name](shape)
    x = torch.rand(3, *shape)
    z = model.encode(x)
    assert z.shape == (3, 4 if name not in ("svae_mlp", "svae_conv") else model.latent_dim)
    assert model(x).recon.shape == (3, *shape)
    image = model.decode(z)
    assert image.shape == (3, *shape) and image.min() >= 0 and image.max() <= 1
    assert model.reconstruct(x).shape == (3, *shape)
    if model.has_prior:
        assert model.decode(model.sample_codes(2, torch.Generator().manual_seed(0))).shape == (2, *shape)


# ----------------------------------------------------------------------------- stacked AEs
def test_tied_weights_are_one_storage_and_their_gradients_add_up():
    torch.manual_seed(0)
    tied = StackedAutoencoder((1, 8, 8), latent_dim=4, layers=[16], tied_weights=True)
    untied = StackedAutoencoder((1, 8, 8), latent_dim=4, layers=[16])
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    weights = sum(layer.weight.numel() for layer in untied.decoder_layers)
    assert n(untied) - n(tied) == weights  # the decoder adds only its biases
    assert not any("decoder_layers" in name for name, _ in tied.named_parameters())
    # the same numbers in the untied net, its decoder weights copied from the tied transposes
    with torch.no_grad():
        for i, layer in enumerate(tied.encoder_layers):
            untied.encoder_layers[i].load_state_dict(layer.state_dict())
            untied.decoder_layers[i].weight.copy_(layer.weight.t())
            untied.decoder_layers[i].bias.copy_(tied.decoder_biases[i])
    x = torch.rand(5, 1, 8, 8)
    for model in (tied, untied):
        model.zero_grad()
        model(x).recon.square().sum().backward()
    for i in range(tied.n_layers):  # one weight, two uses: its gradient is the sum of both
        summed = untied.encoder_layers[i].weight.grad + untied.decoder_layers[i].weight.grad.t()
        torch.testing.assert_close(tied.encoder_layers[i].weight.grad, summed)


def _step_context(model):
    from aerun.build import build_optimizers

    optimizers = build_optimizers(model, {"_target_": "torch.optim.Adam", "lr": 1e-2, "weight_decay": 0.0,
                                          "l1_weight": 0.0, "scheduler": {"_target_": None}})
    return StepContext(model, optimizers, torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"),
                       StepOptions("mse"))


@pytest.mark.parametrize("pretrain", ["greedy", "rbm"])
def test_each_pretraining_stage_trains_only_its_layer(pretrain):
    torch.manual_seed(0)
    model = StackedAutoencoder((1, 8, 8), latent_dim=4, layers=[16, 8], pretrain=pretrain, pretrain_epochs=2)
    step = _step_context(model)
    x = torch.rand(16, 1, 8, 8)
    assert [model.stage_at(p) for p in (0, 1.99, 2, 4.5, 6, 99)] == [0, 0, 1, 2, 3, 3]
    for stage in range(3):
        model.unroll_below(stage)  # rbm: entering stage i first copies encoder i - 1's transpose into its mirror
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        step.begin(2 * stage + 0.5)
        model.training_step(Batch(x, x, None), step)
        own = {id(p) for p in model.layer_parameters(stage)}
        for name, p in model.named_parameters():
            if id(p) not in own:  # every other layer is bit-equal
                assert torch.equal(before[name], p), (stage, name)
        assert not torch.equal(before[f"encoder_layers.{stage}.weight"], model.encoder_layers[stage].weight)
        if pretrain == "rbm":  # the mirror follows the RBM step by step, so val loss reads the stack so far
            assert torch.equal(model.decoder_layers[stage].weight, model.encoder_layers[stage].weight.t())
    if pretrain == "rbm":  # unrolled: decoder layer i starts as encoder layer i transposed
        step.begin(6.0)
        model.training_step(Batch(x, x, None), step)
        assert bool(model.unrolled.all())
    assert not model.counts_for_best(6) and model.counts_for_best(7)  # best.pt only from fine-tuning


@pytest.mark.slow
def test_a_kill_9_in_pretraining_stage_2_resumes_in_stage_2(data_root, tmp_path):
    common = ["model=stacked_ae", "model.pretrain=greedy", "model.layers=[32,16]", "model.latent_dim=4",
              "trainer.max_epochs=4", "trainer.deterministic=true", "trainer.checkpoint_every_n_steps=2"]
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    assert run_aerun("train", *tiny_overrides(data_root, *common), f"hydra.run.dir={reference}").returncode == 0
    # 7 steps an epoch: step 17 is in epoch 3, stage 2 (layers 0, 1, 2 = 784-32, 32-16, 16-4)
    proc = run_aerun("train", *tiny_overrides(data_root, *common), f"hydra.run.dir={crashed}",
                     env={"AERUN_TEST_FAULTS": "SIGKILL@step#17"})
    assert proc.returncode == -9
    proc = run_aerun("train", f"resume={crashed}")
    assert proc.returncode == 0 and "resuming from" in proc.stderr + proc.stdout and "epoch 3" in proc.stderr + proc.stdout
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (reference, crashed))
    assert a["test"] == b["test"]


# ----------------------------------------------------------------------------- pooling
def test_unpooling_puts_values_where_the_encoder_found_its_maxima():
    from aerun.models.pooling import PoolingEncoder, UpsamplingDecoder

    torch.manual_seed(0)
    encoder = PoolingEncoder((1, 28, 28), [4, 8], 6, "relu", "identity")
    decoder = UpsamplingDecoder((1, 28, 28), [4, 8], 6, "relu", "unpool")
    x = torch.rand(2, 1, 28, 28)
    z, switches = encoder(x, keep_switches=True)
    assert [tuple(s.shape[-2:]) for s in switches] == [(14, 14), (7, 7)]
    seen = []
    hook = decoder.unpool.register_forward_hook(lambda module, args, out: seen.append(out))
    decoder(z, switches)
    hook.remove()
    for out, indices in zip(seen, reversed(switches)):  # 7 -> 14 with stage 2's switches, then 14 -> 28
        flat = out.flatten(2)
        nonzero = flat != 0
        allowed = torch.zeros_like(nonzero)
        allowed.scatter_(2, indices.flatten(2), True)
        assert not (nonzero & ~allowed).any()  # nothing lands outside the recorded maxima
    with_switches = decoder(z, switches)
    assert not torch.equal(with_switches, decoder(z))  # a code alone uses fixed switches instead


def test_unpool_needs_maxpool():
    from aerun.errors import UserError
    from aerun.config import validate_train

    with pytest.raises(UserError, match="needs model.downsample=maxpool"):
        validate_train(compose("train", ["model.upsample=unpool"]))


# ----------------------------------------------------------------------------- sequences
def test_a_sequence_ae_reads_one_row_per_step():
    model = SequenceAutoencoder((3, 32, 32), latent_dim=4, hidden=8)
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    rows = model.net.rows(x)
    assert rows.shape == (2, 32, 96)  # CIFAR: 32 steps of 3 x 32
    assert torch.equal(rows[1, 5], x[1, :, 5, :].reshape(-1))  # step 5 is row 5, every channel of it
    assert SequenceAutoencoder((1, 28, 28), latent_dim=4, hidden=8).net.rows(torch.zeros(1, 1, 28, 28)).shape == (1, 28, 28)


def test_sequence_ae_trains_on_masked_inputs(trained_run):
    metrics = json.loads((trained_run("model=seq_ae", "model.hidden=32", "data.noise.kind=masking",
                                      "data.noise.level=0.3") / "metrics.json").read_text())
    assert metrics["model"] == "SequenceAutoencoder" and "psnr_gain" in metrics["test"]


# ----------------------------------------------------------------------------- VAE-GAN
def test_each_vaegan_optimizer_steps_only_its_own_network():
    torch.manual_seed(0)
    model = BUILDERS["vaegan"]((1, 12, 12))
    step = _step_context(model)
    groups = {name: {id(p) for p in opt.param_groups[0]["params"]} for name, opt in step.optimizers.items()}
    assert set(groups) == {"encoder", "decoder", "discriminator"}
    assert sum(map(len, groups.values())) == len(list(model.parameters()))  # every parameter, once
    x = torch.rand(8, 1, 12, 12)
    stepped = []
    for name, opt in step.optimizers.items():
        original = opt.step

        def recording(*args, _name=name, _original=original, **kwargs):
            # when optimizer `_name` steps, only its own parameters may hold gradients from this backward
            grads = {id(p) for p in model.parameters() if p.grad is not None}
            stepped.append((_name, grads <= groups[_name] | set().union(*[groups[n] for n, _ in stepped])))
            return _original(*args, **kwargs)

        opt.step = recording
    step.begin(0.0)
    terms = model.training_step(Batch(x, x, None), step)
    assert [name for name, _ in stepped] == ["discriminator", "encoder", "decoder"]
    assert all(ok for _, ok in stepped)
    assert {"dis_loss", "dis_acc_real", "dis_acc_recon", "dis_acc_sampled", "llike", "kl"} <= set(terms)


def test_vaegan_equilibrium_rests_the_winning_side_and_never_both():
    model = BUILDERS["vaegan"]((1, 12, 12))  # margin 0.35 around 0.68: [0.33, 1.03]
    rule = lambda real, fake: model.equilibrium(torch.tensor(real), torch.tensor(fake))  # noqa: E731
    assert rule(0.7, 0.7) == (True, True)
    assert rule(0.1, 0.7) == (False, True)  # the discriminator wins on real images: it rests
    assert rule(0.7, 1.5) == (True, False)  # it loses on fakes: the decoder rests
    assert rule(0.1, 1.5) == (True, True)  # both would rest: both train
    model.equilibrium_margin = None
    assert rule(0.01, 5.0) == (True, True)
    # a resting discriminator's optimizer does not step, and the step says so
    model.equilibrium_margin = 0.35
    model.equilibrium = lambda real, fake: (False, True)
    step = _step_context(model)
    stepped = []
    for name, opt in step.optimizers.items():
        opt.step = lambda *a, _name=name, **k: stepped.append(_name)
    step.begin(0.0)
    x = torch.rand(8, 1, 12, 12)
    terms = model.training_step(Batch(x, x, None), step)
    assert stepped == ["encoder", "decoder"] and terms["dis_trained"] == 0 and terms["dec_trained"] == 1


@pytest.mark.slow
def test_a_resumed_vaegan_continues_all_three_optimizers(data_root, tmp_path):
    common = ["model=vaegan", "model.channels=[8,16]", "model.discriminator_channels=[8,16]", "trainer.max_epochs=2",
              "trainer.deterministic=true", "trainer.checkpoint_every_n_steps=3"]
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    assert run_aerun("train", *tiny_overrides(data_root, *common), f"hydra.run.dir={reference}").returncode == 0
    assert run_aerun("train", *tiny_overrides(data_root, *common), f"hydra.run.dir={crashed}",
                     env={"AERUN_TEST_FAULTS": "SIGKILL@step#10"}).returncode == -9
    assert set(torch.load(crashed / "last.pt", weights_only=True)["optimizers"]) == {"encoder", "decoder",
                                                                                    "discriminator"}
    assert run_aerun("train", f"resume={crashed}").returncode == 0
    wa = torch.load(reference / "last.pt", weights_only=True)
    wb = torch.load(crashed / "last.pt", weights_only=True)
    for key in wa["model"]:
        assert torch.equal(wa["model"][key], wb["model"][key]), key


# ----------------------------------------------------------------------------- conditional
def _block_column(image: torch.Tensor) -> int:
    """Which of the tiny MNIST's 5 block columns is brightest (each class is a block at its own place)."""
    columns = image.reshape(28, 28).mean(0)  # [28]
    return int(torch.stack([columns[1 + 5 * k:7 + 5 * k].mean() for k in range(5)]).argmax())


def test_changing_only_the_label_changes_the_decoded_class(trained_run, tmp_path):
    from aerun import runs

    run = trained_run("model=vae", "model.conditional=true", "model.hidden=[128]", "model.latent_dim=2",
                      "trainer.max_epochs=15", "optim.lr=3e-3")
    model = runs.load_run(run).model
    z = torch.zeros(10, 2)  # one code, every class
    images = model.decode(z, torch.arange(10))
    # the tiny MNIST puts class k's block in column k % 5 (rows: k // 5)
    assert [_block_column(images[k]) for k in range(10)] == [k % 5 for k in range(10)]


def test_class_is_refused_on_an_unconditional_run_and_outside_the_classes(trained_run):
    plain = trained_run("model=vae", "model.hidden=[32]")
    proc = run_aerun("generate", str(plain), "class=7")
    assert proc.returncode == 2 and "is not conditional" in proc.stderr and "Traceback" not in proc.stderr
    conditional = trained_run("model=vae", "model.hidden=[32]", "model.conditional=true")
    proc = run_aerun("generate", str(conditional), "class=11")
    assert proc.returncode == 2 and "class=11: no such class; classes are 0, 1" in proc.stderr


def test_a_conditional_grid_has_a_row_per_class_and_a_code_per_column(trained_run, tmp_path):
    from aerun.commands.generate import generate

    run = trained_run("model=vae", "model.hidden=[32]", "model.conditional=true")
    result = generate(compose("generate", [f"run={run}", "device=cpu", "n=30"]), tmp_path)
    labels = np.load(tmp_path / "labels.npy")
    assert labels.tolist() == [k for k in range(10) for _ in range(3)]
    assert np.load(result["samples"]).shape == (30, 1, 28, 28)
    codes = result["codes"].reshape(10, 3, -1)
    assert np.array_equal(codes[0], codes[7])  # every class row decodes the same three codes


# ----------------------------------------------------------------------------- S-VAE
def test_svae_codes_samples_and_paths_live_on_the_sphere():
    torch.manual_seed(0)
    model = SVAE((1, 12, 12), latent_dim=3, hidden=[16])
    x = torch.rand(4, 1, 12, 12)
    assert torch.allclose(model.encode(x).norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(model(x).z.norm(dim=1), torch.ones(4), atol=1e-5)
    samples = model.sample_codes(2000, torch.Generator().manual_seed(0))
    assert torch.allclose(samples.norm(dim=1), torch.ones(2000), atol=1e-5)
    assert samples.mean(0).norm() < 0.1  # uniform: no preferred direction
    path = model.path_between(samples[0], samples[1], 7)
    assert torch.allclose(path.norm(dim=1), torch.ones(7), atol=1e-5)
    from aerun.analysis.likelihood import importance_weighted_bound

    out = importance_weighted_bound(model, x, 20, 1000, generator=torch.Generator().manual_seed(0))
    assert (out["iw_log_likelihood"] >= out["elbo_mc"] - 1e-4).all()


def test_rbm_runs_evaluate_with_ais_and_generate_by_gibbs(trained_run, tmp_path):
    from aerun.commands.evaluate import evaluate_run
    from aerun.commands.generate import generate

    run = trained_run("model=rbm", "model.hidden_units=12", "optim=sgd", "optim.lr=0.05")
    assert (run / "filters.png").is_file()
    report = evaluate_run(compose("evaluate", [f"run={run}", "device=cpu", "evaluate.ais_betas=500",
                                               "evaluate.ais_chains=20"]))
    assert report["rbm"]["log_likelihood"] < 0 and report["rbm"]["log_z"] > 0
    result = generate(compose("generate", [f"run={run}", "device=cpu", "n=4", "generate.gibbs_steps=20"]), tmp_path)
    assert np.load(result["samples"]).shape == (4, 1, 28, 28)


def test_hammer_projection_is_equal_area_and_encode_uses_it_for_an_svae(trained_run, tmp_path):
    from aerun.commands.encode import encode
    from aerun.figures import hammer, project_2d

    points = np.array([[1, 0, 0], [0, 0, 1], [0, 0, -1], [-1, 1e-9, 0]], dtype=float)
    mapped = hammer(points)
    assert np.allclose(mapped[0], [0, 0]) and np.allclose(mapped[1], [0, np.sqrt(2)])
    assert np.allclose(mapped[2], [0, -np.sqrt(2)]) and np.isclose(abs(mapped[3, 0]), 2 * np.sqrt(2), atol=1e-6)
    # equal area: uniform points on the sphere fill the ellipse (area 4 pi x y-semiaxes) evenly
    rng = np.random.default_rng(0)
    uniform = rng.normal(size=(40000, 3))
    xy = hammer(uniform)
    left, right = (xy[:, 0] < 0).mean(), (np.abs(xy[:, 1]) < np.sqrt(2) / 2).mean()
    assert abs(left - 0.5) < 0.01 and right > 0.5  # the equator band holds more than half, as on the sphere
    assert project_2d(uniform[:10], "auto", 0, on_sphere=True)[3].startswith("Hammer")
    assert project_2d(uniform[:10], "auto", 0, on_sphere=False)[3].startswith("PCA")
    with pytest.raises(UserError, match="hammer: maps codes on the sphere"):
        project_2d(rng.normal(size=(10, 4)), "hammer", 0)
    run = trained_run("model=svae", "model.latent_dim=3", "model.hidden=[32]")
    out = encode(compose("encode", [f"run={run}", "device=cpu", "encode.embedding=false"]), tmp_path)
    assert out["plot"].is_file() and np.allclose(np.linalg.norm(np.load(out["codes"])["codes"], axis=1), 1, atol=1e-4)


def test_encode_kmeans_writes_clusters_and_their_confusion_with_the_classes(trained_run, tmp_path):
    import json

    from aerun.analysis.features import cluster_report
    from aerun.commands.encode import encode

    report = cluster_report(np.array([1, 1, 0, 0, 2]), np.array([0, 0, 1, 1, 1]), ["a", "b"])
    assert report["confusion"] == [[0, 2], [2, 0], [0, 1]] and report["matched_accuracy"] == 0.8
    assert report["cluster_to_class"] == {0: "b", 1: "a"} and report["purity"] == 1.0
    run = trained_run("model=linear_ae", "model.latent_dim=4")
    encode(compose("encode", [f"run={run}", "device=cpu", "encode.kmeans=10", "encode.embedding=false"]), tmp_path)
    clusters, labels = np.load(tmp_path / "codes.npz")["clusters"], np.load(tmp_path / "codes.npz")["labels"]
    found = json.loads((tmp_path / "kmeans.json").read_text())
    assert clusters.shape == labels.shape and found["k"] == 10 and np.array(found["confusion"]).sum() == len(labels)
    with pytest.raises(UserError, match="encode.kmeans: the number of clusters must be >= 2"):
        encode(compose("encode", [f"run={run}", "device=cpu", "encode.kmeans=1"]), tmp_path)


def test_a_conditional_run_encodes_with_its_labels_and_finetune_refuses_it(trained_run, tmp_path):
    from aerun.commands import finetune
    from aerun.commands.encode import encode

    run = trained_run("model=vae", "model.hidden=[32]", "model.conditional=true")
    out = encode(compose("encode", [f"run={run}", "device=cpu", "encode.embedding=false"]), tmp_path)
    assert np.load(out["codes"])["codes"].shape[1] == 16
    with pytest.raises(UserError, match="finetune: this run's model is conditional"):
        finetune.validate(compose("finetune", [f"run={run}", "device=cpu"]))


def test_finetune_starts_its_classifier_from_a_dbn_and_fine_tunes_its_weights(trained_run, tmp_path):
    import json
    from types import SimpleNamespace

    from aerun import runs
    from aerun.commands import finetune

    run = trained_run("model=dbn", "model.layers=[32,16]", "model.latent_dim=16", "model.epochs_per_layer=1",
                      "trainer.max_epochs=2", "optim=sgd", "optim.lr=0.05")
    before = {k: v.clone() for k, v in runs.load_run(run).model.state_dict().items()}
    cfg = compose("finetune", [f"run={run}", "device=cpu", "labels_per_class=[5]", "finetune.steps=20",
                               "finetune.freeze_encoder=false"])
    finetune.run(cfg, SimpleNamespace(out_dir=tmp_path))
    row = json.loads((tmp_path / "finetune.json").read_text())["results"][0]
    assert 0 <= row["pretrained_accuracy"] <= 1 and 0 <= row["scratch_accuracy"] <= 1
    after = runs.load_run(run).model.state_dict()  # the run on disk is left as it was
    assert all(torch.equal(before[k], after[k]) for k in before)
    from aerun.analysis.classifier import EncoderClassifier, train_classifier

    dbn = runs.load_run(run).model
    classifier = EncoderClassifier(dbn, 10, "linear", 0, freeze_encoder=False)
    images, labels = torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8), torch.arange(32) % 10
    train_classifier(classifier, images, labels, steps=3, batch_size=16, lr=1e-2, seed=0, device="cpu")
    assert not torch.equal(dbn.rbms[0].weight, before["rbms.0.weight"])  # gradients reach the DBN's own weights


def test_pretraining_stages_do_not_warn_of_a_collapsed_network(trained_run, caplog):
    """While a staged model pretrains, its upper layers are unset and its output is near the mean
    image by construction: the collapse warning waits for the whole network to train."""
    caplog.set_level(logging.INFO)
    trained_run("model=stacked_ae", "model.layers=[64,32]", "model.latent_dim=8", "model.pretrain=rbm",
                "model.pretrain_epochs=2", "trainer.max_epochs=8")
    messages = [r.getMessage() for r in caplog.records]
    last_pretraining_epoch = next(i for i, m in enumerate(messages) if m.startswith("epoch 6/8"))
    assert not any("barely depend" in m for m in messages[:last_pretraining_epoch + 1])


def test_rbm_pretraining_updates_the_same_under_a_grad_scaler():
    """16-mixed steps every optimizer through the grad scaler, which unscales each .grad: the CD
    gradients a family writes itself must be scaled first, or the update is 1/65,536 of its size."""
    from aerun.build import build_optimizers

    def one_step(scaler_on: bool):
        torch.manual_seed(0)
        model = StackedAutoencoder((1, 8, 8), latent_dim=4, layers=[16, 8], pretrain="rbm", pretrain_epochs=2)
        optimizers = build_optimizers(model, {"_target_": "torch.optim.SGD", "lr": 0.5, "weight_decay": 0.0,
                                              "l1_weight": 0.0, "scheduler": {"_target_": None}})
        scaler = torch.amp.GradScaler("cpu", enabled=scaler_on, init_scale=2.0 ** 16)
        step = StepContext(model, optimizers, scaler, torch.device("cpu"), StepOptions("bce"))
        step.begin(0.5)
        before = model.encoder_layers[0].weight.detach().clone()
        model.training_step(Batch(torch.rand(16, 1, 8, 8), torch.rand(16, 1, 8, 8), None), step)
        step.end()
        return model.encoder_layers[0].weight.detach() - before

    plain, scaled = one_step(False), one_step(True)
    assert plain.abs().max() > 1e-4
    torch.testing.assert_close(scaled, plain)
