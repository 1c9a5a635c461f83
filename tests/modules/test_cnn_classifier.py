"""The CNN built from a hyperparameter configuration, the function that trains it, and its CLI runs."""

from pathlib import Path

import pytest
import torch

import cli
from datamodules.vision import VisionDataModule
from modules.cnn_classifier import CNNClassifier, network_identity, train_classifier
from modules.errors import ConfigError
from tests.cli_runs import assert_resumed_run_matches_straight_run, fit_on_two_cpu_processes
from tests.conftest import write_learnable_digits

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "cnn_fashion.yaml")
SMOKE = str(REPO / "configs" / "presets" / "smoke.yaml")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_follows_the_configuration():
    model = CNNClassifier(conv_layers=2, filters=8, kernel_size=3, dense_layers=1, dense_width=32)
    # conv 1->8 (3x3): 80; conv 8->16: 1168; 16*7*7=784 features -> 32: 25120; 32 -> 10: 330
    assert count_parameters(model) == 80 + 1168 + 25120 + 330
    no_dense = CNNClassifier(conv_layers=2, filters=8, kernel_size=3, dense_layers=0)
    assert count_parameters(no_dense) == 80 + 1168 + 784 * 10 + 10
    deep = CNNClassifier(conv_layers=1, filters=4, kernel_size=5, dense_layers=2, dense_width=16)
    # conv 1->4 (5x5): 104; 4*14*14=784 -> 16: 12560; 16 -> 16: 272; 16 -> 10: 170
    assert count_parameters(deep) == 104 + 12560 + 272 + 170
    assert deep(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("dense_layers", [0, 1])
def test_configurations_with_one_identity_build_the_same_network(dense_layers):
    config = dict(conv_layers=1, filters=4, kernel_size=3, dense_layers=dense_layers, dropout=0.0)
    torch.manual_seed(0)
    narrow = CNNClassifier(**config, dense_width=8)
    torch.manual_seed(0)
    wide = CNNClassifier(**config, dense_width=32)
    images = torch.rand(5, 1, 28, 28)
    same = count_parameters(narrow) == count_parameters(wide) and torch.equal(narrow(images), wide(images))
    assert same == (dense_layers == 0)
    assert (network_identity({**config, "dense_width": 8}) == network_identity({**config, "dense_width": 32})) == (dense_layers == 0)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "elu"])
def test_activation_is_used_after_every_layer(activation):
    model = CNNClassifier(conv_layers=3, dense_layers=2, activation=activation)
    expected = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU, "elu": torch.nn.ELU}[activation]
    assert sum(isinstance(m, expected) for m in model.modules()) == 3 + 2


@pytest.mark.parametrize(
    ("optimizer", "kind"),
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop)],
)
def test_optimizer_and_learning_rate_are_the_configured_ones(optimizer, kind):
    configured = CNNClassifier(optimizer=optimizer, lr=0.03).configure_optimizers()
    assert type(configured) is kind and configured.param_groups[0]["lr"] == 0.03


def test_bad_configuration_is_named():
    with pytest.raises(ConfigError, match="conv_layers must lie in \\[1, 4\\]"):
        CNNClassifier(conv_layers=5)
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        CNNClassifier(kernel_size=4)
    with pytest.raises(ConfigError, match="image_shape"):
        CNNClassifier().check_datamodule(VisionDataModule(variant="translated", canvas_size=60))


def test_training_learns_and_leaves_the_callers_random_state_alone(tmp_path, fashion_source):
    """One epoch on 2,000 real images beats by far the 10% an untrained network scores."""
    data = VisionDataModule(data_dir=str(tmp_path / "data"), system_dir=str(fashion_source), train_subset=2000, val_size=1000, batch_size=64)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    config = {"conv_layers": 1, "filters": 8, "dense_layers": 0, "lr": 3e-3}
    result = train_classifier(config, data, max_epochs=1, seed=0)
    assert torch.equal(torch.rand(3), expected)  # the caller draws what it would have drawn without the run
    assert result["val_acc"] > 0.6, result
    assert train_classifier(config, data, max_epochs=1, seed=0)["val_acc"] == result["val_acc"]  # seeded


def test_cli_fits_a_configuration_stacked_on_the_full_training_config(tmp_path, vision_args):
    best = tmp_path / "best_config.yaml"
    best.write_text("model:\n  init_args:\n    conv_layers: 1\n    filters: 4\n    optimizer: sgd\n    lr: 0.01\n")
    run = cli.main(["fit", "--config", CONFIG, "--config", str(best), "--config", SMOKE, *vision_args])
    assert run.model.hparams.conv_layers == 1 and run.model.hparams.optimizer == "sgd"
    assert run.model.hparams.dense_width == 128  # not in the stacked file: the config's value


def small_run(tmp_path: Path) -> list[str]:
    """A 4-filter CNN on 256 fake images in batches of 64 (4 steps an epoch), written below ``tmp_path / "runs"``."""
    source = write_learnable_digits(tmp_path / "fake", num_train=600, num_test=100)  # small: each process loads it
    return [
        "--config", CONFIG, "--trainer.callbacks", "[]", "--trainer.limit_val_batches", "1", "--progress_bar.refresh_rate", "0",
        "--model.init_args.filters", "4", "--model.init_args.dense_width", "16",
        "--data.init_args.train_subset", "256", "--data.init_args.val_size", "128", "--data.init_args.batch_size", "64",
        f"--data.init_args.data_dir={tmp_path / 'data'}", f"--data.init_args.system_dir={source}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]  # fmt: skip


def test_ddp_on_two_cpu_processes(tmp_path):
    checkpoint = fit_on_two_cpu_processes(small_run(tmp_path), tmp_path)
    assert checkpoint["global_step"] == 2  # 256 images shared by 2 ranks in batches of 64: 2 steps each (4 unshared)


def test_resume_continues_the_same_run(tmp_path):
    """Stopped after one epoch and resumed from last.ckpt, the run (weights, Adam moments, dropout masks, batch
    order) ends where a straight two-epoch run does."""
    straight, _ = assert_resumed_run_matches_straight_run(small_run(tmp_path))
    assert straight.trainer.global_step == 2 * 4
