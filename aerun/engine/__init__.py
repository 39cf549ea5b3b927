"""The training loop and evaluation, free of Hydra and of files: `loop` (fit, train_one_epoch),
`state` (TrainState), `step` (what a model's training_step gets), `evaluate`, `accumulator`."""

from aerun.engine.accumulator import EpochAccumulator
from aerun.engine.evaluate import evaluate
from aerun.engine.loop import Loop, LoopOptions, epoch_permutation, fit, num_batches, train_one_epoch
from aerun.engine.state import Scheduled, TrainState
from aerun.engine.step import StepContext, StepOptions, autocast, to_float

__all__ = ["EpochAccumulator", "Loop", "LoopOptions", "Scheduled", "StepContext", "StepOptions", "TrainState",
           "autocast", "epoch_permutation", "evaluate", "fit", "num_batches", "to_float", "train_one_epoch"]
