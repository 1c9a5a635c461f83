"""The command line end to end: smoke runs, config round trips, clear errors, DDP, resume."""

import os
import subprocess
import sys
from unittest import mock
from pathlib import Path

import pytest
import torch
import yaml

from cli import main

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = str(ROOT / "configs/reinforce_classifier_fashion.yaml")
SMOKE = str(ROOT / "configs/presets/smoke.yaml")
FAST = ["--trainer.max_epochs=1", "--data.init_args.train_subset=256", "--data.init_args.val_size=256",
        "--progress_bar.refresh_rate=0", "--model.init_args.grad_variance_every=0"]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_smoke_fit_through_cli_writes_nothing(tmp_path, vision_args):
    cli = main(["fit", f"--config={CLASSIFIER}", f"--config={SMOKE}", *vision_args])
    assert cli.trainer.global_step == 1
    assert not (tmp_path / "runs").exists(), sorted(str(p) for p in (tmp_path / "runs").rglob("*"))


def test_the_progress_bar_can_be_switched_off(tmp_path, vision_args):
    # Lightning refuses enable_progress_bar=false beside a progress bar callback: the CLI leaves its own out
    cli = main(["fit", f"--config={CLASSIFIER}", f"--config={SMOKE}", *vision_args, "--trainer.enable_progress_bar=false"])
    assert cli.trainer.global_step == 1 and cli.trainer.progress_bar_callback is None


def test_fit_writes_config_that_reproduces_the_run(tmp_path, vision_args):
    cli = main(["fit", f"--config={CLASSIFIER}", *vision_args, *FAST, "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"])
    log_dir = Path(cli.trainer.log_dir)
    saved = log_dir / "config.yaml"
    assert saved.is_file() and (log_dir / "checkpoints" / "last.ckpt").is_file()
    replay = main(["fit", f"--config={saved}"])
    assert yaml.safe_load(saved.read_text()) == yaml.safe_load((Path(replay.trainer.log_dir) / "config.yaml").read_text())
    assert replay.trainer.global_step == cli.trainer.global_step
    for a, b in zip(cli.model.state_dict().values(), replay.model.state_dict().values()):
        assert torch.equal(a, b)


def run_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """Run cli.main like the shell would and return (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(list(args))
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


def test_print_config_round_trips(tmp_path, vision_args, capsys):
    status, printed, _ = run_in_process(capsys, "fit", f"--config={CLASSIFIER}", *vision_args, "--model.init_args.entropy_coef=0.01", "--print_config")
    assert status == 0
    path = tmp_path / "printed.yaml"
    path.write_text(printed)
    status, again, _ = run_in_process(capsys, "fit", f"--config={path}", "--print_config")
    assert status == 0
    assert yaml.safe_load(again) == yaml.safe_load(printed)
    assert yaml.safe_load(printed)["model"]["init_args"]["entropy_coef"] == 0.01


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.init_args.num_classes=7"], "set --model.init_args.num_classes 10"),
        (["--model.init_args.image_shape=[1, 60, 60]"], "image_shape"),
        (["--data.init_args.system_dir=/nonexistent", "--data.init_args.download=false"], "no Fashion-MNIST"),
        (["--model.init_args.lr=-1"], "--model.init_args.lr must be > 0"),
    ],
)
def test_bad_input_gives_one_clear_message_and_writes_no_run(tmp_path, vision_args, extra, message, capsys):
    status, _, err = run_in_process(capsys, "fit", f"--config={CLASSIFIER}", *vision_args, *extra)
    assert status == 2
    assert message in err
    assert err.strip().count("\n") == 0 and err.startswith("error: ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.class_path=modules.nowhere.NoSuchModel"], "NoSuchModel"),
        (["--model.init_args.num_samples=many"], "num_samples"),
    ],
)
def test_unknown_class_or_wrong_type_is_rejected(tmp_path, vision_args, extra, message, capsys):
    status, _, err = run_in_process(capsys, "fit", f"--config={CLASSIFIER}", *vision_args, *extra)
    assert status != 0
    assert message in err
    assert not (tmp_path / "runs").exists()


def test_ddp_with_two_cpu_processes(tmp_path, vision_args):
    result = run_cli(
        "fit", f"--config={CLASSIFIER}", f"--config={ROOT / 'configs/presets/ddp.yaml'}", *vision_args, *FAST,
        "--trainer.accelerator=cpu", "--data.init_args.batch_size=32", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in result.stderr + result.stdout or "world_size=2" in result.stderr + result.stdout
    checkpoint = torch.load(next((tmp_path / "runs").rglob("last.ckpt")), weights_only=False)
    assert checkpoint["global_step"] == 3


def test_a_finished_ddp_run_destroys_its_process_group(tmp_path, vision_args):
    """Left to the interpreter's exit, a gloo group can abort a process whose fit succeeded (SIGABRT)."""
    with mock.patch.dict(os.environ):  # DDP writes MASTER_ADDR / MASTER_PORT; later tests start clean
        cli = main(["fit", f"--config={CLASSIFIER}", *vision_args, *FAST, "--trainer.accelerator=cpu", "--trainer.devices=1",
                    "--trainer.strategy=ddp", "--trainer.limit_val_batches=1"])
    assert type(cli.trainer.strategy).__name__ == "DDPStrategy" and cli.trainer.global_step == 1  # 256 images, batch 256
    assert not torch.distributed.is_initialized()


def test_resume_continues_the_same_run(tmp_path, vision_args):
    straight = main(["fit", f"--config={CLASSIFIER}", *vision_args, *FAST, "--trainer.max_epochs=2", "--trainer.logger.init_args.version=straight"])
    first = main(["fit", f"--config={CLASSIFIER}", *vision_args, *FAST, "--trainer.max_epochs=1", "--trainer.logger.init_args.version=part"])
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    resumed = main(["fit", f"--config={CLASSIFIER}", *vision_args, *FAST, "--trainer.max_epochs=2",
                    "--trainer.logger.init_args.version=resumed", f"--ckpt_path={last}"])
    assert resumed.trainer.global_step == straight.trainer.global_step == 2 * first.trainer.global_step
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
