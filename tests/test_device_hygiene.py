"""Every family's training step and evaluation keep their tensors on the batch's device.

A tensor made without `device=` inside a step lands on the CPU; on a GPU, mixing it with the
batch's CUDA tensors fails (`torch.stack` in the epoch accumulator: "Expected all tensors to be
on the same device"). CI has no GPU, so the step runs here with the *default* device set to
`meta`: a factory call that names no device then makes a meta tensor, and mixing it with the
CPU batch fails the same way, or shows up as a term on the wrong device.
"""

from __future__ import annotations

import pytest
import torch

from aerun.build import build_model, build_optimizers
from aerun.config import to_plain
from aerun.engine import EpochAccumulator, StepContext, StepOptions
from aerun.models.base import Batch
from tests.conftest import compose

FAMILIES = {
    "cnn_ae": ["model=cnn_ae"], "cnn_ae_unpool": ["model=cnn_ae", "model.downsample=maxpool", "model.upsample=unpool"],
    "linear_ae": ["model=linear_ae"], "shallow_ae": ["model=shallow_ae"], "mlp_ae": ["model=mlp_ae"],
    "sparse_ae": ["model=mlp_ae", "model.sparsity.kind=kl"],
    "vae": ["model=vae"], "conv_vae": ["model=conv_vae"], "cvae": ["model=vae", "model.conditional=true"],
    "svae": ["model=svae"], "svae_16": ["model=svae", "model.latent_dim=16"], "vaegan": ["model=vaegan"],
    "stacked_greedy": ["model=stacked_ae", "model.pretrain=greedy"],
    "stacked_rbm": ["model=stacked_ae", "model.pretrain=rbm"],
    "seq_ae_lstm": ["model=seq_ae", "model.cell=lstm"],
    "seq_ae_transformer": ["model=seq_ae", "model.cell=transformer"],
    "seq_vae": ["model=seq_vae"], "rbm": ["model=rbm", "optim=sgd"],
    "rbm_pcd": ["model=rbm", "optim=sgd", "model.persistent=true"], "dbn": ["model=dbn", "optim=sgd"],
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_training_step_and_its_evaluation_make_no_tensor_off_the_batch_device(name):
    plain = to_plain(compose("train", [*FAMILIES[name], "trainer.device=cpu"]))
    torch.manual_seed(0)
    model = build_model(plain["model"], (1, 28, 28), 10)
    o, t = plain["optim"], plain["trainer"]
    recon_loss = plain["loss"] or model.default_loss
    step = StepContext(model, build_optimizers(model, o), torch.amp.GradScaler("cpu", enabled=False),
                       torch.device("cpu"), StepOptions(recon_loss, t["precision"], t["grad_clip"], o["l1_weight"]))
    x = torch.rand(16, 1, 28, 28).round()
    labels = torch.arange(16) % 10
    accumulator = EpochAccumulator(torch.device("cpu"))
    model.train()
    for i, progress in enumerate((0.0, 0.5, 1e6)):  # in pretraining (stacked, dbn) and after it
        step.begin(progress)
        with torch.device("meta"):
            terms = model.training_step(Batch(x, x, labels if model.uses_labels else None), step)
        step.end()
        wrong = {k: v.device.type for k, v in terms.items() if v.device.type != "cpu"}
        assert not wrong, f"terms made off the batch's device: {wrong}"
        accumulator.add(terms, 16, i + 1)
    model.eval()
    with torch.device("meta"), torch.no_grad():
        metrics = model.eval_metrics(Batch(x, x, labels), recon_loss, step.autocast)
    wrong = {k: v.device.type for k, v in metrics.items() if v.device.type != "cpu"}
    assert not wrong, f"evaluation terms made off the batch's device: {wrong}"
