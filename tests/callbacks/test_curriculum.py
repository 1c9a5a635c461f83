"""The nonzero curriculum: it widens the range only when the model masters it, and survives a resume."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from callbacks.curriculum import NonzeroCurriculum
from cli import main
from datamodules.synthetic import ParityDataModule, ToyDataModule
from modules.errors import ConfigError
from modules.shared_depth import SharedDepthNetwork
from tests.cli_runs import fit_on_two_cpu_processes
from tests.trainers import quiet_trainer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PARITY = str(CONFIGS / "depth_parity_reinforce.yaml")


def parity_network(lr: float = 3e-3) -> SharedDepthNetwork:
    return SharedDepthNetwork(input_shape=(8,), state_dim=32, max_steps=3, depth_controller="fixed", lr=lr)


def parity_data() -> ParityDataModule:
    return ParityDataModule(num_bits=8, train_size=128 * 50, val_size=64, test_size=64, batch_size=128)


def test_the_range_grows_as_the_model_learns_and_the_draws_follow_it():
    torch.manual_seed(0)
    data = parity_data()
    curriculum = NonzeroCurriculum(start=1, increment=1, threshold=0.9, every_n_steps=25, eval_size=500)
    quiet_trainer(max_epochs=8, callbacks=[curriculum], limit_val_batches=0).fit(parity_network(), datamodule=data)
    # 1 nonzero is the sign of one entry: mastered (90% of 500 vectors, out of a chance model's reach) within
    # the first checks; 8 epochs take the range to 3 or 4 (seeds 0-2)
    assert curriculum.max_nonzero >= 2
    assert data.max_nonzero == curriculum.max_nonzero
    inputs, _ = data.sample_train(2000, torch.Generator().manual_seed(1))
    assert (inputs != 0).sum(1).max().item() == curriculum.max_nonzero


def test_a_model_at_chance_stays_on_the_first_range():
    torch.manual_seed(0)
    data = parity_data()
    curriculum = NonzeroCurriculum(start=4, increment=2, threshold=0.9, every_n_steps=10, eval_size=500)
    quiet_trainer(max_steps=60, callbacks=[curriculum], limit_val_batches=0).fit(parity_network(lr=1e-9), datamodule=data)
    assert curriculum.max_nonzero == 4 and data.max_nonzero == 4


class Recorder(Logger):
    """A logger that keeps every (step, metrics) it is given."""

    name, version = "recorder", 0

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.points.append((step, metrics))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def test_each_check_is_logged_once():
    recorder = Recorder()
    curriculum = NonzeroCurriculum(start=4, increment=2, threshold=0.9, every_n_steps=10, eval_size=100)
    quiet_trainer(max_steps=35, callbacks=[curriculum], limit_val_batches=0, logger=recorder, log_every_n_steps=1).fit(
        parity_network(), datamodule=parity_data())
    checks = [(step, sorted(m)) for step, m in recorder.points if any(k.startswith("train/curriculum") for k in m)]
    assert checks == [(step, ["train/curriculum_acc", "train/curriculum_max_nonzero"]) for step in (10, 20, 30)]


class AnswersUpTo(torch.nn.Module):
    """A parity oracle for vectors with at most ``known`` nonzeros; beyond them it answers 0 (right half the time)."""

    device = torch.device("cpu")

    def __init__(self, known: int) -> None:
        super().__init__()
        self.known = known

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        answer = ((inputs == 1).sum(1) % 2) * ((inputs != 0).sum(1) <= self.known)
        return torch.nn.functional.one_hot(answer, 2).float()


@pytest.mark.parametrize("eval_window, expected", [(None, 0.875), (1, 0.5), (2, 0.75)])
def test_the_gate_measures_the_whole_range_or_its_top_counts(eval_window, expected):
    # range 1..4, a model that answers up to 3 nonzeros: 3/4 + 1/4 * 1/2 over the range, 1/2 on count 4 alone
    data = parity_data()
    curriculum = NonzeroCurriculum(start=4, eval_size=20_000, eval_window=eval_window)
    curriculum.max_nonzero = 4
    accuracy = curriculum.accuracy(SimpleNamespace(datamodule=data, global_step=0), AnswersUpTo(known=3))
    assert accuracy == pytest.approx(expected, abs=0.015)


def test_the_range_is_restored_from_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = NonzeroCurriculum(start=1, increment=1, threshold=0.9, every_n_steps=25, eval_size=500)
    quiet_trainer(max_epochs=4, callbacks=[first, checkpoint], enable_checkpointing=True, limit_val_batches=0).fit(
        parity_network(), datamodule=parity_data())
    assert first.max_nonzero > 1
    resumed, data = NonzeroCurriculum(start=1, increment=1, threshold=1.0, every_n_steps=10_000), parity_data()
    quiet_trainer(max_epochs=5, callbacks=[resumed], limit_val_batches=0).fit(
        parity_network(), datamodule=data, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.max_nonzero == first.max_nonzero and data.max_nonzero == first.max_nonzero


def test_other_data_is_refused_with_a_message():
    network = SharedDepthNetwork(input_shape=(2,), block="residual_mlp", state_dim=8, max_steps=2, depth_controller="fixed")
    with pytest.raises(ConfigError, match="NonzeroCurriculum needs a ParityDataModule"):
        quiet_trainer(max_steps=1, callbacks=[NonzeroCurriculum()]).fit(network, datamodule=ToyDataModule(num_samples=128, val_size=32, test_size=32))


@pytest.mark.parametrize("options", [dict(start=0), dict(threshold=1.5), dict(every_n_steps=0), dict(eval_window=0)])
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigError, match="NonzeroCurriculum"):
        NonzeroCurriculum(**options)


@pytest.mark.parametrize("config, top", [("depth_parity_reinforce.yaml", 64), ("depth_parity_extrapolation.yaml", 48)])
def test_the_parity_configs_train_on_a_curriculum(config, top):
    cli = main(["fit", f"--config={CONFIGS / config}", f"--config={CONFIGS / 'presets/smoke.yaml'}", "--data.init_args.train_size=1280"])
    curriculum = next(callback for callback in cli.trainer.callbacks if isinstance(callback, NonzeroCurriculum))
    assert (curriculum.max_nonzero, curriculum.target) == (8, top)
    assert cli.datamodule.max_nonzero == 8


def test_ddp_with_two_cpu_processes_keeps_one_range(tmp_path):
    # every rank evaluates the same vectors with the same weights; rank 0's range is the one saved
    checkpoint = fit_on_two_cpu_processes([
        f"--config={PARITY}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", f"--trainer.default_root_dir={tmp_path / 'runs'}",
        "--trainer.callbacks=[]", "--trainer.callbacks+=callbacks.curriculum.NonzeroCurriculum", "--trainer.callbacks.start=2",
        "--trainer.callbacks.threshold=0.01", "--trainer.callbacks.every_n_steps=1", "--trainer.callbacks.eval_size=64",
        "--trainer.limit_val_batches=1", "--data.init_args.num_bits=8", "--model.init_args.input_shape=[8]",
        "--model.init_args.state_dim=16", "--model.init_args.max_steps=3", "--data.init_args.batch_size=16"], tmp_path)
    states = [state for key, state in checkpoint["callbacks"].items() if "NonzeroCurriculum" in key]
    assert states == [{"max_nonzero": 8}]  # 2, then +4 at each of the 3 steps, capped at the 8 bits
