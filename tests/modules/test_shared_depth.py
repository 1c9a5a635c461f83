"""The weight-shared depth network: sharing, the halting distributions against closed forms, early exit, learning, CLI."""

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, seed_everything

from cli import main
from datamodules.synthetic import ParityDataModule, ToyDataModule, sample_parity
from datamodules.vision import VisionDataModule
from modules.errors import ConfigError
from modules.halting import (
    AdaptiveComputationTime,
    PonderNetHalting,
    Readout,
    ReinforceHalting,
    answer_confidence,
    crelu,
    halting_distribution,
)
from modules.policy_gradient import ScoreFunctionEstimator
from modules.shared_depth import SharedDepthNetwork
from tests.cli_runs import assert_resumed_run_matches_straight_run, fit_on_two_cpu_processes
from tests.trainers import quiet_trainer

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs/presets/smoke.yaml")
MOONS = str(ROOT / "configs/depth_moons.yaml")
CONTROLLERS = ["fixed", "reinforce", "act", "pondernet"]
NO_VALIDATION = dict(limit_val_batches=0, num_sanity_val_steps=0)


def small_network(**kwargs) -> SharedDepthNetwork:
    args = dict(input_shape=(6,), state_dim=16, hidden_dim=16, max_steps=5, halt_bias_init=0.0)
    return SharedDepthNetwork(**{**args, **kwargs})


# --- sharing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", ["residual_mlp", "gru"])
def test_tied_network_has_one_parameter_set_whatever_its_depth(block):
    tied = [small_network(block=block, max_steps=n).parameter_counts() for n in (1, 4, 12)]
    untied = [small_network(block=block, max_steps=n, tied=False).parameter_counts() for n in (1, 4, 12)]
    assert tied[0] == tied[1] == tied[2]
    assert [c["params/blocks"] for c in untied] == [n * tied[0]["params/blocks"] for n in (1, 4, 12)]
    model = small_network(block=block, max_steps=4)
    assert len(model.blocks.blocks) == 1
    # every step really runs the same module: one set of weights receives the gradient of all steps
    calls = []
    model.blocks.blocks[0].register_forward_hook(lambda *_: calls.append(1))
    model.trace(torch.randn(3, 6))
    assert len(calls) == 4


@pytest.mark.parametrize("tied", [True, False])
def test_gru_step_with_the_input_gates_read_once_is_the_gru_cell(tied):
    model = small_network(block="gru", tied=tied, max_steps=3)
    inputs = torch.randn(4, 6)
    trace = model.trace(inputs)
    state = model.embedding(inputs)
    for step in range(1, 4):
        cell = model.blocks.blocks[0 if tied else step - 1].cell
        state = cell(model.embedding(inputs), state)  # nn.GRUCell recomputes the input's share at every step
        torch.testing.assert_close(trace.states[step], state)


def test_untied_fixed_depth_network_owns_only_the_blocks_it_runs():
    model = small_network(depth_controller="fixed", fixed_depth=3, tied=False, max_steps=8)
    assert len(model.blocks.blocks) == 3 and model.max_steps == 3
    assert model.halting_policy is None


# --- halting distributions against closed forms ---------------------------------------------------


def test_pondernet_halting_probabilities_sum_to_one_and_follow_eq_2():
    torch.manual_seed(0)
    halt_prob = torch.rand(7, 50)
    p = halting_distribution(halt_prob)
    assert torch.allclose(p.sum(0), torch.ones(50), atol=1e-6)
    expected_3 = halt_prob[2] * (1 - halt_prob[0]) * (1 - halt_prob[1])
    assert torch.allclose(p[2], expected_3, atol=1e-6)
    # through the controller, from logits, for a trained-looking network
    model = small_network(depth_controller="pondernet", max_steps=9)
    trace = model.trace(torch.randn(11, 6))
    terms = model.controller.training_terms(trace.step_logits, trace.halt_logits, torch.randint(0, 2, (11,)))
    assert torch.allclose(terms.halt_distribution.sum(0), torch.ones(11), atol=1e-6)


def test_pondernet_kl_equals_its_closed_form_in_the_papers_direction():
    """lambda = (0.8, 0.5, [1]) gives p = (0.8, 0.1, 0.1); the prior 2^-n truncated to 3 steps is (4/7, 2/7, 1/7)."""
    controller = PonderNetHalting(lambda_p=0.5, beta=1.0)
    halt_prob = torch.tensor([[0.8], [0.5], [0.3]])  # the last one is ignored: step N always halts
    log_p = torch.log(halting_distribution(halt_prob))
    assert torch.allclose(log_p.exp()[:, 0], torch.tensor([0.8, 0.1, 0.1]))
    kl = controller.kl_to_prior(log_p).item()
    closed_form = 0.8 * math.log(0.8 / (4 / 7)) + 0.1 * math.log(0.1 / (2 / 7)) + 0.1 * math.log(0.1 / (1 / 7))
    reverse = 4 / 7 * math.log((4 / 7) / 0.8) + 2 / 7 * math.log((2 / 7) / 0.1) + 1 / 7 * math.log((1 / 7) / 0.1)
    assert kl == pytest.approx(closed_form, abs=1e-6)
    assert abs(kl - reverse) > 0.02  # the reversed KL some public code computes is a different number
    # the whole loss: sum_n p_n L_n + beta KL, with L_n the cross-entropy of each step's readout
    step_logits = torch.tensor([[[0.0, 0.0]], [[0.0, 2.0]], [[3.0, 0.0]]])  # [N=3, B=1, K=2]
    terms = controller.training_terms(step_logits, torch.logit(halt_prob), torch.tensor([1]))
    losses = [math.log(2), math.log(1 + math.exp(-2)), math.log(1 + math.exp(3))]
    assert terms.loss.item() == pytest.approx(0.8 * losses[0] + 0.1 * losses[1] + 0.1 * losses[2] + closed_form, abs=1e-5)


def test_act_halting_weights_remainder_and_ponder_cost_match_graves_eqs_8_to_12():
    """h = (0.3, 0.5, 0.4, 0.9): the sum passes 0.99 at step 3, R = 1 - 0.8, p = (0.3, 0.5, 0.2, 0), N + R = 3.2."""
    controller = AdaptiveComputationTime(tau=0.1, epsilon=0.01)
    halt_logits = torch.logit(torch.tensor([[0.3], [0.5], [0.4], [0.9]]))
    p, depth, remainder = controller.halting_weights(halt_logits)
    assert torch.allclose(p[:, 0], torch.tensor([0.3, 0.5, 0.2, 0.0]), atol=1e-6)
    assert depth.item() == 3 and remainder.item() == pytest.approx(0.2, abs=1e-6)
    step_logits = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[2.0, 2.0]], [[9.0, 9.0]]])
    terms = controller.training_terms(step_logits, halt_logits, torch.tensor([0]))
    mixed = torch.tensor([0.3 + 0.4, 0.5 + 0.4])  # eq. 7: sum_n p_n y_n
    expected = torch.nn.functional.cross_entropy(mixed[None], torch.tensor([0])).item() + 0.1 * 3.2
    assert terms.loss.item() == pytest.approx(expected, abs=1e-5)
    # only the remainder carries a gradient to the halting units of the steps before N
    halt_logits.requires_grad_(True)
    controller.training_terms(step_logits, halt_logits, torch.tensor([0])).loss.backward()
    assert halt_logits.grad[3].item() == 0.0 and halt_logits.grad[0].item() != 0.0


def test_reinforce_halting_gradient_is_the_exact_gradient_of_the_expected_return():
    """With every step's reward known, E[R] = sum_n p_n R_n has an exact gradient; the sampled estimate must match it."""
    torch.manual_seed(0)
    controller = ReinforceHalting(step_cost=0.05, reward="neg_loss", num_samples=20_000, halt_prob_min=0.1, halt_prob_max=0.9,
                                  uniform_mix=0.0, estimator=ScoreFunctionEstimator(baseline="leave_one_out"))
    step_logits = torch.tensor([[[0.0, 0.5]], [[0.0, 2.0]], [[0.0, 2.5]], [[0.0, 3.0]]]).expand(4, 3, 2).contiguous()
    labels = torch.ones(3, dtype=torch.long)
    halt_logits = torch.tensor([[-1.0, 0.0, 1.0], [0.5, 0.0, -0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)

    terms = controller.training_terms(step_logits, halt_logits, labels)
    estimate, = torch.autograd.grad(terms.loss - terms.task_loss, halt_logits)

    log_p = torch.log(halting_distribution(controller.halt_probability(halt_logits)))
    step_reward = -torch.nn.functional.cross_entropy(step_logits.reshape(-1, 2), labels.repeat(4), reduction="none").view(4, 3)
    step_reward = step_reward - 0.05 * torch.arange(1, 5.0)[:, None]
    exact, = torch.autograd.grad(-(log_p.exp() * step_reward).sum(0).mean(), halt_logits)
    assert exact[:3].abs().max() > 0.01
    assert exact[3].abs().max() == 0.0  # the last step always halts: its logit has no say
    assert torch.allclose(estimate, exact, atol=4e-3), (estimate, exact)


def test_reinforce_halting_probabilities_stay_within_their_bounds():
    controller = ReinforceHalting(halt_prob_min=0.2, halt_prob_max=0.8)
    probabilities = controller.halt_probability(torch.tensor([-1e4, 0.0, 1e4]))
    assert torch.allclose(probabilities, torch.tensor([0.2, 0.5, 0.8]))


def saturated_halting_after_training(penalty: float) -> tuple[float, float]:
    """(rms halting logit before, after) 40 Adam steps of a parity network whose policy starts saturated at +40."""
    seed_everything(0, verbose=False)
    model = small_network(block="gru", max_steps=4, step_cost=0.0, halt_logit_penalty=penalty, lr=0.05)
    with torch.no_grad():
        model.halting_policy.linear.bias.fill_(40.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    inputs, labels, _ = sample_parity(64, 6, 1, 6, torch.Generator().manual_seed(0))
    rms = lambda: model.trace(inputs).halt_logits.square().mean().sqrt().item()  # noqa: E731
    before = rms()
    for _ in range(40):
        optimizer.zero_grad()
        model.training_step((inputs, labels), 0).backward()
        optimizer.step()
    return before, rms()


def test_halt_logit_penalty_brings_a_saturated_halting_policy_back_to_where_it_learns():
    # the bounds keep a saturated policy sampling, but its score gradient is sigmoid'(40) ~ 4e-18: nothing moves it
    before, after = saturated_halting_after_training(0.0)
    assert after == pytest.approx(before, rel=0.02) and before > 35
    before, after = saturated_halting_after_training(0.01)
    assert after < 0.5 * before, (before, after)
    # and it adds exactly c * mean(l^2) to the loss
    model = small_network(block="gru", halt_logit_penalty=0.5)
    inputs, labels, _ = sample_parity(8, 6, 1, 6, torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    penalised = model.training_step((inputs, labels), 0)
    model.hparams.halt_logit_penalty = 0.0
    torch.manual_seed(2)
    plain = model.training_step((inputs, labels), 0)
    assert (penalised - plain).item() == pytest.approx(0.5 * model.trace(inputs).halt_logits.square().mean().item(), rel=1e-5)


# --- early exit -----------------------------------------------------------------------------------


@pytest.mark.parametrize("controller", CONTROLLERS)
@pytest.mark.parametrize("mode", ["threshold", "sample"])
@pytest.mark.parametrize("reads_answer", [False, True])
def test_early_exit_answers_like_running_every_step_and_selecting_the_halt_step(controller, mode, reads_answer):
    torch.manual_seed(1)
    model = small_network(depth_controller=controller, max_steps=6, num_classes=3, halting_reads_answer=reads_answer).eval()
    with torch.no_grad():
        if model.halting_policy is not None:  # spread the halting steps (ACT sums its units: start them small)
            model.halting_policy.linear.weight.mul_(4.0)
            model.halting_policy.linear.bias.fill_(-1.5 if controller == "act" else 0.0)
        inputs = torch.randn(64, 6)
        if reads_answer and model.halting_policy is not None:  # the confidence inputs count; centre the logits so the halting steps still spread
            model.halting_policy.linear.weight[0, -2:] = torch.tensor([2.0, 1.0])
            model.halting_policy.linear.bias -= model.trace(inputs).halt_logits.median() + (1.5 if controller == "act" else 0.0)
        uniforms = model._uniforms(64, mode, "cpu", torch.Generator().manual_seed(0))
        early, full = model.infer(inputs, uniforms=uniforms), model.infer_all_steps(inputs, uniforms=uniforms)
    assert torch.equal(early.steps, full.steps)
    assert torch.allclose(early.logits, full.logits, atol=1e-5)
    if controller != "fixed":
        assert len(early.steps.unique()) >= 3, early.steps  # the test is not about one halting step only


def test_early_exit_runs_the_block_only_on_samples_still_computing():
    torch.manual_seed(0)
    model = small_network(depth_controller="reinforce", max_steps=6).eval()
    rows = []
    model.blocks.blocks[0].register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    with torch.no_grad():
        model.halting_policy.linear.weight.mul_(4.0)
        result = model.infer(torch.randn(200, 6))
    assert sum(rows) == result.steps.sum().item() < 200 * 6
    assert rows == sorted(rows, reverse=True)


def test_answer_confidence_is_the_top_class_log_odds_and_margin():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0], [1e4, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0]])
    p = torch.tensor([2.0, 1.0, 0.0, 0.0]).softmax(-1)
    expected = torch.tensor([[-math.log(3.0), 0.0], [0.0, math.log(3.0)], [10.0, 10.0],
                             [math.log(p[0] / (1 - p[0])), 1.0]])
    assert torch.allclose(answer_confidence(logits), expected, atol=1e-5)


def test_halting_policy_that_reads_the_answer_uses_it_but_does_not_train_the_readout():
    model = small_network(halting_reads_answer=True, num_classes=3)
    assert model.halting_policy.linear.in_features == 16 + 2
    model.trace(torch.randn(4, 6)).halt_logits.sum().backward()
    assert model.halting_policy.linear.weight.grad[0, -2:].abs().sum() > 0  # the confidence inputs are used
    assert all(p.grad is None for p in model.readout.parameters())  # and detached from the readout


# --- configuration ----------------------------------------------------------------------------------


def test_mismatched_datamodule_and_bad_options_are_named():
    with pytest.raises(ConfigError, match="input_shape '\\[16\\]'"):
        small_network().check_datamodule(ParityDataModule(num_bits=16))
    with pytest.raises(ConfigError, match="num_classes 10"):
        small_network(input_shape=(1, 28, 28)).check_datamodule(VisionDataModule())
    small_network(input_shape=(2,)).check_datamodule(ToyDataModule())
    with pytest.raises(ConfigError, match="block conv needs image inputs"):
        small_network(block="conv")
    with pytest.raises(ConfigError, match="fixed_depth"):
        small_network(depth_controller="fixed", fixed_depth=9)
    with pytest.raises(ConfigError, match="halt_prob_min"):
        small_network(halt_prob_min=0.6, halt_prob_max=0.5)
    with pytest.raises(ConfigError, match="input_features must be one of"):
        small_network(input_features="one_hot")


def test_crelu_input_makes_the_count_of_positive_entries_linear():
    """Parity counts the +1 entries; a linear map of x cannot count them (the -1 entries enter with the
    opposite sign), a linear map of crelu(x) can: the least-squares fit of the count is exact only on it."""
    inputs, _, _ = sample_parity(500, 16, 1, 16, torch.Generator().manual_seed(0))
    count = (inputs == 1).sum(dim=1, keepdim=True).float()
    ones = torch.ones(len(inputs), 1)
    residual = {name: (count - features @ torch.linalg.lstsq(features, count).solution).abs().max().item()
                for name, features in (("identity", torch.cat([inputs, ones], 1)), ("crelu", torch.cat([crelu(inputs), ones], 1)))}
    assert residual["crelu"] < 1e-3 and residual["identity"] > 1.0, residual
    vectors = small_network(input_shape=(16,), input_features="crelu")
    assert vectors.embedding.net[1].in_features == 32
    assert vectors.infer(inputs[:4]).logits.shape == (4, 2)
    images = SharedDepthNetwork(num_classes=10, input_shape=(1, 28, 28), block="conv", state_dim=8, max_steps=2, input_features="crelu")
    assert images.embedding.net[0].in_channels == 2
    assert images.infer(torch.randn(3, 1, 28, 28)).logits.shape == (3, 10)


@pytest.mark.parametrize("readout_norm", [False, True])
def test_conv_network_runs_on_images_and_keeps_samples_independent(readout_norm):
    model = SharedDepthNetwork(num_classes=10, input_shape=(1, 28, 28), block="conv", state_dim=8, max_steps=3,
                               readout_norm=readout_norm).eval()
    images = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        alone = model.infer(images[:1]).logits
        together = model.infer(images).logits
    assert together.shape == (5, 10)
    assert torch.allclose(alone, together[:1], atol=1e-5)  # GroupNorm, not BatchNorm: no cross-sample leak


def test_normalized_readout_reads_states_of_any_scale_alike():
    # the residual stream grows with the steps; with readout_norm one linear map reads every step's scale
    torch.manual_seed(0)
    states = torch.randn(4, 8, 7, 7)
    plain, normalized = Readout(8, 3), Readout(8, 3, normalize=True)
    assert torch.allclose(normalized(5.0 * states), normalized(states), atol=1e-3)  # up to LayerNorm eps
    assert not torch.allclose(plain(5.0 * states), plain(states), atol=1e-2)
    model = small_network(readout_norm=True)
    assert isinstance(model.readout.norm, torch.nn.LayerNorm) and isinstance(small_network().readout.norm, torch.nn.Identity)


@pytest.mark.parametrize("detach", [False, True])
def test_detached_halting_input_keeps_the_controllers_gradient_out_of_the_network(detach):
    model = small_network(detach_halting_input=detach)
    model.trace(torch.randn(4, 6)).halt_logits.sum().backward()
    assert model.halting_policy.linear.weight.grad.abs().sum() > 0
    network_grads = [p.grad for p in [*model.blocks.parameters(), *model.embedding.parameters()]]
    reached = any(g is not None and g.abs().sum() > 0 for g in network_grads)
    assert reached != detach


# --- learning -------------------------------------------------------------------------------------


def test_reinforce_halting_learns_parity_and_uses_more_than_one_step():
    """6-bit parity: an untrained network is at chance (50%); one GRU step alone does not solve it here."""
    seed_everything(0, verbose=False)
    data = ParityDataModule(num_bits=6, train_size=128 * 300, val_size=100, test_size=1000, batch_size=128)
    model = SharedDepthNetwork(input_shape=(6,), block="gru", state_dim=48, max_steps=5, depth_controller="reinforce",
                               step_cost=0.01, cost_warmup_steps=200, lr=3e-3)
    quiet_trainer(**NO_VALIDATION, max_epochs=1).fit(model, datamodule=data)
    inputs, labels = data.test_set.tensors
    with torch.no_grad():
        result = model.eval().infer(inputs)
    accuracy = (result.logits.argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.9, (accuracy, result.steps.float().mean())
    assert result.steps.float().mean() > 1.5


def test_cosine_schedule_decays_the_rate_to_zero_over_the_fit():
    rates = []

    class RecordRate(Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    data = ToyDataModule("moons", num_samples=320, val_size=50, test_size=50, batch_size=32)  # 10 batches an epoch
    quiet_trainer(**NO_VALIDATION, max_epochs=3, callbacks=[RecordRate()]).fit(small_network(input_shape=(2,), lr=0.01, lr_schedule="cosine"), datamodule=data)
    assert len(rates) == 30
    assert rates == pytest.approx([0.005 * (1 + math.cos(math.pi * step / 30)) for step in range(30)], abs=1e-9)
    with pytest.raises(ConfigError, match="lr_schedule cosine needs a known training length"):
        quiet_trainer(**NO_VALIDATION, max_epochs=-1, max_time={"seconds": 30}).fit(small_network(input_shape=(2,), lr_schedule="cosine"), datamodule=data)


@pytest.mark.parametrize("controller", ["reinforce", "pondernet"])
def test_halting_network_learns_moons(controller):
    seed_everything(0, verbose=False)
    data = ToyDataModule("moons", num_samples=1000, batch_size=64)
    model = SharedDepthNetwork(input_shape=(2,), block="residual_mlp", state_dim=16, hidden_dim=32, max_steps=6,
                               depth_controller=controller, lr=1e-2)
    quiet_trainer(**NO_VALIDATION, max_epochs=6).fit(model, datamodule=data)
    inputs, labels = data.test_set.tensors
    with torch.no_grad():
        accuracy = (model.eval()(inputs).argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.97, accuracy


# --- through the CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("config", sorted(str(p) for p in (ROOT / "configs").glob("depth_*.yaml")))
def test_smoke_fit_through_cli(config, tmp_path, fashion_source):
    args = [f"--trainer.default_root_dir={tmp_path}"]
    if "fashion" in config:
        args += [f"--data.init_args.data_dir={tmp_path / 'data'}", f"--data.init_args.system_dir={fashion_source}"]
    cli = main(["fit", f"--config={config}", f"--config={SMOKE}", *args])
    assert cli.trainer.global_step == 1


def toy_args(tmp_path) -> list[str]:
    return [f"--config={MOONS}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            f"--trainer.default_root_dir={tmp_path / 'runs'}", "--progress_bar.refresh_rate=0",
            "--data.init_args.num_samples=256", "--data.init_args.val_size=64", "--data.init_args.test_size=64"]


def test_fit_and_test_log_accuracy_steps_parameters_and_pictures(tmp_path):
    pictures = '[{"class_path": "callbacks.depth_pictures.DepthPictures", "init_args": {"every_n_epochs": 1, "grid_size": 20}}]'
    cli = main(["fit", *toy_args(tmp_path), "--trainer.max_epochs=1", "--trainer.log_every_n_steps=2", f"--trainer.callbacks={pictures}"])
    logged = cli.trainer.logged_metrics
    for name in ("val/acc", "val/mean_steps", "val/acc_sample", "val/mean_steps_sample", "train/reward", "train/expected_steps"):
        assert name in logged, name
    assert 1 <= logged["val/mean_steps"] <= 8
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert {"test/acc", "test/mean_steps", "test/acc_sample", "test/mean_steps_sample"} <= tested.keys()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert {"params/total", "params/blocks"} <= set(events.Tags()["scalars"])
    assert {"pictures/trajectories", "pictures/halting_map", "pictures/test_trajectories"} <= set(events.Tags()["images"])


def test_ddp_with_two_cpu_processes(tmp_path):
    checkpoint = fit_on_two_cpu_processes([*toy_args(tmp_path), "--trainer.callbacks=[]", "--data.init_args.batch_size=32",
                                           "--trainer.limit_val_batches=1"], tmp_path)
    assert checkpoint["global_step"] == 3


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_resume_continues_the_same_run(tmp_path, lr_schedule):
    """Resumed from last.ckpt, the run (weights, estimator statistics, RNG, the rate's schedule) ends where a straight run does."""
    assert_resumed_run_matches_straight_run([*toy_args(tmp_path), "--trainer.callbacks=[]", "--trainer.limit_val_batches=1",
                                             f"--model.init_args.lr_schedule={lr_schedule}"])


# --- released checkpoints -----------------------------------------------------------------------

# checkpoints/<name>: the range of nonzeros it is read on, and its accuracy in % on those 2,000 vectors when released
RELEASED = {"parity64_seed1.ckpt": (1, 64, 99.30), "parity64_seed3.ckpt": (1, 64, 98.35), "parity64_crelu_seed1.ckpt": (1, 64, 93.85)}


def test_every_released_checkpoint_is_checked():
    assert sorted(path.name for path in (ROOT / "checkpoints").glob("*.ckpt")) == sorted(RELEASED)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_checkpoint_loads_and_answers_as_recorded(name):
    """The weights in checkpoints/ load with the current code and answer 2,000 fresh vectors as they did when released
    (an untrained network is at chance), so a later session can go on training them and cli.py test reads them."""
    low, high, recorded = RELEASED[name]
    model = SharedDepthNetwork.load_from_checkpoint(ROOT / "checkpoints" / name, map_location="cpu").eval()
    inputs, labels, _ = sample_parity(2000, model.hparams.input_shape[0], low, high, torch.Generator().manual_seed(0))
    with torch.no_grad():
        accuracy = 100 * (model.infer(inputs).logits.argmax(-1) == labels).float().mean().item()
    assert accuracy == pytest.approx(recorded, abs=0.5)
