"""The Recurrent Attention Model: where each loss's gradient goes, and end to end (the sensor: test_glimpse.py)."""

from pathlib import Path

import pytest
import torch

from cli import main
from datamodules.synthetic import ParityDataModule
from datamodules.vision import VisionDataModule
from modules.errors import ConfigError
from modules.glimpse import LocationPolicy
from modules.ram import RecurrentAttentionModel
from tests.cli_runs import assert_resumed_run_matches_straight_run, fit_on_two_cpu_processes
from tests.trainers import quiet_trainer

ROOT = Path(__file__).resolve().parents[2]
CLUTTERED = str(ROOT / "configs/ram_fashion_cluttered60.yaml")
PLAIN = str(ROOT / "configs/ram_fashion_28.yaml")
SMOKE = str(ROOT / "configs/presets/smoke.yaml")
FAST = ["--trainer.max_epochs=1", "--data.init_args.train_subset=256", "--data.init_args.val_size=128",
        "--data.init_args.batch_size=64", "--progress_bar.refresh_rate=0", "--model.init_args.hidden_size=32",
        "--model.init_args.glimpse_features=32", "--model.init_args.what_size=16", "--model.init_args.where_size=16"]


# --- where each loss's gradient goes -------------------------------------------------------------

def small_model(**kwargs) -> RecurrentAttentionModel:
    options = dict(image_shape=(1, 28, 28), num_glimpses=4, glimpse_size=6, num_scales=2, hidden_size=32,
                   glimpse_features=32, what_size=16, where_size=16)
    return RecurrentAttentionModel(**{**options, **kwargs})


def gradients(model: RecurrentAttentionModel, part: str, module: torch.nn.Module, **kwargs) -> list[torch.Tensor | None]:
    torch.manual_seed(0)
    images, labels = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    model.zero_grad(set_to_none=True)
    _, parts, _ = model.hybrid_loss(images, labels)
    parts[part].backward()
    return [p.grad for p in module.parameters()]


def is_zero(grads) -> bool:
    return all(g is None or torch.count_nonzero(g) == 0 for g in grads)


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_cross_entropy_gives_the_location_network_exactly_zero_gradient(core):
    model = small_model(core=core, learn_std=True, policy_detach_state=False)
    assert is_zero(gradients(model, "cross_entropy", model.location_policy))
    assert is_zero([p.grad for p in model.baseline_net.parameters()])
    assert not is_zero([model.glimpse.what.weight.grad]) and not is_zero([p.grad for p in model.core.parameters()])


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_reinforce_reaches_the_location_network_only_unless_told_otherwise(core):
    model = small_model(core=core, learn_std=True)  # default: the policy reads a detached state
    assert is_zero(gradients(model, "reinforce", model.core))
    assert is_zero([p.grad for p in model.glimpse.parameters()]) and is_zero([model.classifier.weight.grad])
    assert not is_zero([model.location_policy.mean_head.weight.grad, model.location_policy.log_std.grad])
    coupled = small_model(core=core, policy_detach_state=False)  # the paper's all-parameter gradient
    assert not is_zero(gradients(coupled, "reinforce", coupled.core))


def test_normalised_policy_input_makes_the_mean_independent_of_the_state_scale():
    torch.manual_seed(0)
    hidden = torch.relu(torch.randn(8, 32))
    plain, normalised = LocationPolicy(32, 0.1), LocationPolicy(32, 0.1, normalize_input=True)
    assert torch.allclose(normalised(10.0 * hidden).mean, normalised(hidden).mean, atol=1e-4)
    assert not torch.allclose(plain(10.0 * hidden).mean, plain(hidden).mean, atol=1e-2)
    model = small_model(policy_input_norm=True)
    assert isinstance(model.location_policy.norm, torch.nn.LayerNorm)
    assert is_zero(gradients(model, "reinforce", model.core))  # still the location network alone


def test_baseline_regression_trains_the_baseline_alone():
    model = small_model()
    assert not is_zero(gradients(model, "baseline_loss", model.baseline_net))
    assert is_zero([p.grad for p in model.core.parameters()]) and is_zero([p.grad for p in model.location_policy.parameters()])


def test_reinforce_term_is_the_sum_over_steps_of_advantage_times_log_prob():
    """-sum_t (R - b_t) log pi(l_t | h_t), averaged over images (eq. 2), from the rollout's own pieces."""
    model = small_model()
    torch.manual_seed(1)
    images, labels = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    torch.manual_seed(2)
    _, parts, rollout = model.hybrid_loss(images, labels)
    reward = (rollout.logits.argmax(-1) == labels).float()
    expected = -((reward - rollout.baseline) * rollout.log_prob).sum(0).mean()
    torch.testing.assert_close(parts["reinforce"], expected)
    assert rollout.log_prob.shape == rollout.baseline.shape == (3, 16)  # T - 1 decisions
    assert rollout.locations.shape == (4, 16, 2) and torch.equal(rollout.locations[0], torch.zeros(16, 2))


def test_neg_loss_reward_is_the_log_probability_of_the_label():
    """``reward: neg_loss`` rewards each rollout with log p(y | glimpses) (Ba et al. 2015) instead of 1[correct]."""
    model = small_model(reward="neg_loss")
    torch.manual_seed(1)
    images, labels = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    _, parts, rollout = model.hybrid_loss(images, labels)
    reward = rollout.logits.detach().log_softmax(-1)[torch.arange(16), labels]
    torch.testing.assert_close(parts["reward"], reward.mean())
    torch.testing.assert_close(parts["reinforce"], -((reward - rollout.baseline) * rollout.log_prob).sum(0).mean())
    assert is_zero(gradients(model, "reinforce", model.core))  # still the location network alone


def test_leave_one_out_baselines_each_rollout_by_the_other_rollouts_of_its_image():
    """``train_samples`` S: each image glimpsed S times; b = the mean reward of the other S - 1 (Kool et al. 2019)."""
    model = small_model(baseline="leave_one_out", train_samples=3)
    assert model.baseline_net is None
    torch.manual_seed(1)
    images, labels = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    _, parts, rollout = model.hybrid_loss(images, labels)
    assert rollout.logits.shape == (15, 10) and rollout.log_prob.shape == (3, 15)
    reward = (rollout.logits.argmax(-1) == labels.repeat(3)).float().view(3, 5)  # [S, B]: row s B + b
    baseline = (reward.sum(0) - reward) / 2
    expected = -((reward - baseline) * rollout.log_prob.view(3, 3, 5)).sum(0).mean()
    torch.testing.assert_close(parts["reinforce"], expected)
    # an image whose rollouts all earn the same reward teaches the policy nothing
    model.classifier.weight.data.zero_()
    model.classifier.bias.data = torch.nn.functional.one_hot(labels[0], 10).float()
    model.zero_grad(set_to_none=True)
    model.hybrid_loss(images[:1], labels[:1])[1]["reinforce"].backward()
    assert is_zero([p.grad for p in model.location_policy.parameters()])


def test_greedy_rollout_looks_at_the_policy_mean_and_is_repeatable():
    model = small_model(location_std=0.5).eval()
    images = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        first, second = model.rollout(images, greedy=True), model.rollout(images, greedy=True)
        sampled = model.rollout(images)
    assert torch.equal(first.locations, second.locations) and torch.equal(first.logits, second.logits)
    torch.testing.assert_close(first.locations[1:], first.location_mean)
    assert not torch.equal(sampled.locations, first.locations)


def test_several_paths_per_image_are_the_rollouts_of_the_repeated_images():
    """``paths=S`` (training's ``train_samples``, evaluation's M rollouts) draws exactly what repeating the images would."""
    model = small_model(location_std=0.5)
    images = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        torch.manual_seed(3)
        paths = model.rollout(images, paths=3)
        torch.manual_seed(3)
        repeated = model.rollout(images.repeat(3, 1, 1, 1))
    for field in ("logits", "locations", "log_prob", "baseline"):
        assert torch.equal(getattr(paths, field), getattr(repeated, field)), field


@pytest.mark.parametrize("clamp", [True, False])
def test_sampled_locations_are_clamped_onto_the_canvas_unless_told_otherwise(clamp):
    torch.manual_seed(0)
    model = small_model(location_std=1.0, clamp_location=clamp)
    with torch.no_grad():
        rollout = model.rollout(torch.rand(64, 1, 28, 28))
    outside = rollout.locations.abs().amax() > 1.0  # std 1: a quarter of the samples are past the edge
    assert outside != clamp
    if not clamp:  # the sensor then reads zeros wherever the glimpse misses the image
        assert torch.count_nonzero(model.glimpse.sensor(torch.ones(1, 1, 28, 28), torch.tensor([[3.0, 3.0]]))) == 0


@pytest.mark.parametrize("policy", ["learned", "random"])
def test_given_looks_replace_the_policy_and_match_glimpsing_there(policy):
    """``rollout(looks=...)`` glimpses exactly there: the same answer as a policy whose mean is those points."""
    model = small_model(location_policy=policy).eval()
    images = torch.rand(5, 1, 28, 28)
    looks = torch.rand(3, 5, 2) * 2 - 1  # T - 1 = 3 chosen locations per image
    with torch.no_grad():
        forced = model.rollout(images, looks=looks)
        again = model.rollout(images, greedy=True, looks=looks)
        state = model.core.initial_state(5, images)
        for location in (torch.zeros(5, 2), *looks):  # l_0 is the centre, then the given looks
            state = model.core(model.glimpse(images, location), state)
    torch.testing.assert_close(forced.locations[1:], looks, rtol=0, atol=0)
    assert forced.log_prob is None and forced.baseline is None
    torch.testing.assert_close(forced.logits, model.classifier(state[0]))
    torch.testing.assert_close(again.logits, forced.logits)


def test_ablations_build_only_what_they_train():
    random = small_model(location_policy="random")
    assert random.location_policy is None and random.baseline_net is None and random.estimator is None
    loss, parts, rollout = random.hybrid_loss(torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    assert torch.equal(loss, parts["cross_entropy"]) and rollout.log_prob is None
    assert (rollout.locations.abs() <= 1).all() and rollout.locations[1:].std() > 0.3  # uniform on [-1, 1]
    no_baseline = small_model(baseline="none")
    assert no_baseline.baseline_net is None and no_baseline.estimator.baseline == "none"
    assert isinstance(small_model(learn_std=True).location_policy.log_std, torch.nn.Parameter)
    assert "log_std" in dict(small_model().location_policy.named_buffers())  # fixed std: not trained


def test_bad_configuration_and_mismatched_datamodule_are_named():
    with pytest.raises(ConfigError, match="location_policy"):
        small_model(location_policy="saliency")
    with pytest.raises(ConfigError, match="train_samples >= 2"):
        small_model(baseline="leave_one_out")
    with pytest.raises(ConfigError, match="train_samples"):
        small_model(train_samples=0)
    with pytest.raises(ConfigError, match="reward"):
        small_model(reward="accuracy")
    with pytest.raises(ConfigError, match="lr_schedule"):
        small_model(lr_schedule="linear")
    with pytest.raises(ConfigError, match="glimpse_size"):
        small_model(glimpse_size=0)
    with pytest.raises(ConfigError, match="image datamodule"):
        small_model().check_datamodule(ParityDataModule())
    with pytest.raises(ConfigError, match=r"image_shape '\[1, 60, 60\]'"):
        small_model().check_datamodule(VisionDataModule(variant="cluttered", canvas_size=60))


# --- end to end --------------------------------------------------------------------------------

def test_learned_glimpses_beat_random_glimpses_on_real_images(tmp_path, fashion_source):
    """A random first glimpse of 8x8 pixels, then one chosen by the policy, on 4,000 real 28x28 images.

    After the same two epochs the learned second glimpse beats a uniformly random one (about 27% test
    accuracy when measured on Fashion-MNIST; the learned policy about 43%) by a wide margin.
    """
    data = VisionDataModule(data_dir=str(tmp_path / "data"), system_dir=str(fashion_source), train_subset=4000,
                            val_size=1000, batch_size=64)
    accuracy = {}
    for policy in ("learned", "random"):
        torch.manual_seed(0)
        model = small_model(location_policy=policy, num_glimpses=2, glimpse_size=8, num_scales=1, hidden_size=64,
                            glimpse_features=64, location_std=0.15, first_location="random", lr=3e-3, mc_samples=())
        quiet_trainer(default_root_dir=tmp_path, max_epochs=2, limit_val_batches=0).fit(model, datamodule=data)
        accuracy[policy] = quiet_trainer(default_root_dir=tmp_path).test(model, datamodule=data, verbose=False)[0]["test/acc"]
    assert accuracy["learned"] > 0.36 and accuracy["learned"] > accuracy["random"] + 0.08, accuracy


def test_smoke_fit_through_cli(vision_args):
    cli = main(["fit", f"--config={CLUTTERED}", f"--config={SMOKE}", *vision_args])
    assert cli.trainer.global_step == 1


def test_fit_and_test_log_every_metric_and_the_glimpse_paths(vision_args, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli = main(["fit", f"--config={PLAIN}", *vision_args, *FAST, "--trainer.limit_train_batches=3",
                "--trainer.log_every_n_steps=1", "--model.init_args.learn_std=true", "--model.init_args.lr_schedule=cosine"])
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # 3 steps of a 3-step cosine
    logged = cli.trainer.logged_metrics
    for name in ("train/loss", "train/cross_entropy", "train/reinforce", "train/baseline_loss", "train/reward",
                 "train/location_std", "train/location_saturation", "val/acc", "val/acc_mc1"):
        assert name in logged, name
    cli.trainer.limit_test_batches = 2
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert {"test/acc", "test/acc_mc1", "test/acc_mc10"} <= set(tested)
    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "pictures/glimpse_paths" in events.Tags()["images"]


def test_ddp_with_two_cpu_processes(tmp_path, vision_args):
    checkpoint = fit_on_two_cpu_processes([f"--config={CLUTTERED}", *vision_args, *FAST, "--data.init_args.batch_size=32"], tmp_path)
    assert checkpoint["global_step"] == 3


def test_resume_continues_the_same_run(vision_args):
    """Resumed from last.ckpt, the run (weights, optimiser, sampled locations) ends where a straight run does."""
    assert_resumed_run_matches_straight_run(
        [f"--config={PLAIN}", *vision_args, *FAST, "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
         "--trainer.callbacks=[]", "--model.init_args.learn_std=true"])
