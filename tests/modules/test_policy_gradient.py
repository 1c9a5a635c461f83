"""The shared score-function estimator against analytic gradients."""

import pytest
import torch
from torch.distributions import Categorical, Normal

from modules.errors import ConfigError
from modules.policy_gradient import ScoreFunctionEstimator, gradient_variance

REWARDS = torch.tensor([6.0, 8.0, 3.0, 5.5])  # far from 0 on average: a baseline has work to do


def categorical_estimates(estimator, logits, num_batches=400, batch=64):
    """``num_batches`` independent estimates of grad E[R] for a categorical policy with fixed rewards."""
    estimates = []
    for _ in range(num_batches):
        theta = logits.clone().requires_grad_(True)
        policy = Categorical(logits=theta.expand(batch, -1))
        actions = policy.sample()
        terms = estimator(policy.log_prob(actions), REWARDS[actions])
        (grad,) = torch.autograd.grad(-terms.policy_loss, theta)  # -loss: ascent direction
        estimates.append(grad)
    return torch.stack(estimates)


def true_categorical_gradient(logits):
    theta = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((theta.softmax(-1) * REWARDS).sum(), theta)
    return grad


@pytest.mark.parametrize("baseline", ["none", "moving_average"])
def test_categorical_estimate_is_unbiased(baseline):
    torch.manual_seed(0)
    logits = torch.tensor([0.2, -0.4, 0.9, 0.0])
    estimates = categorical_estimates(ScoreFunctionEstimator(baseline=baseline), logits)
    mean, stderr = estimates.mean(0), estimates.std(0) / len(estimates) ** 0.5
    error = (mean - true_categorical_gradient(logits)).abs()
    assert torch.all(error < 4 * stderr + 1e-3), (mean, true_categorical_gradient(logits), stderr)


def test_baseline_lowers_variance_without_moving_the_mean():
    torch.manual_seed(0)
    logits = torch.tensor([0.2, -0.4, 0.9, 0.0])
    truth = true_categorical_gradient(logits)
    plain = categorical_estimates(ScoreFunctionEstimator(baseline="none"), logits)
    with_baseline = categorical_estimates(ScoreFunctionEstimator(baseline="moving_average"), logits)
    # rewards average ~5, so subtracting the running mean removes most of the variance
    assert with_baseline.var(0).sum() < 0.5 * plain.var(0).sum()
    for estimates in (plain, with_baseline):
        stderr = estimates.std(0) / len(estimates) ** 0.5
        assert torch.all((estimates.mean(0) - truth).abs() < 4 * stderr + 1e-3)


def test_gaussian_estimate_matches_analytic_gradient():
    # a ~ N(mu, sigma^2 I), R = -|a - c|^2  =>  E[R] = -|mu - c|^2 - d sigma^2,
    # dE/dmu = -2 (mu - c),  dE/dlog_sigma = -2 d sigma^2
    torch.manual_seed(0)
    target = torch.tensor([1.0, -0.5])
    mu = torch.tensor([0.3, 0.2], requires_grad=True)
    log_sigma = torch.tensor(-0.5, requires_grad=True)
    estimator = ScoreFunctionEstimator(baseline="moving_average")
    grads_mu, grads_sigma = [], []
    for _ in range(300):
        policy = Normal(mu.expand(128, 2), log_sigma.exp())
        actions = policy.sample()
        reward = -(actions - target).pow(2).sum(-1)
        terms = estimator(policy.log_prob(actions).sum(-1), reward)
        g_mu, g_sigma = torch.autograd.grad(-terms.policy_loss, [mu, log_sigma])
        grads_mu.append(g_mu)
        grads_sigma.append(g_sigma)
    grads_mu, grads_sigma = torch.stack(grads_mu), torch.stack(grads_sigma)
    true_mu = -2 * (mu.detach() - target)
    true_sigma = -2 * 2 * (2 * log_sigma.detach()).exp()
    assert torch.allclose(grads_mu.mean(0), true_mu, atol=4 * grads_mu.std(0).max().item() / 300**0.5 + 1e-3)
    assert abs(grads_sigma.mean() - true_sigma) < 4 * grads_sigma.std() / 300**0.5 + 1e-3


def test_leave_one_out_baseline_is_unbiased_and_uses_other_samples():
    estimator = ScoreFunctionEstimator(baseline="leave_one_out")
    reward = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])  # [S=3, B=2]
    terms = estimator(torch.zeros(3, 2, requires_grad=True), reward)
    expected = torch.tensor([[0.5, 0.5], [1.0, 0.5], [0.5, 0.0]])
    assert torch.allclose(terms.baseline, expected)
    assert torch.allclose(terms.advantage, reward - expected)
    torch.manual_seed(0)
    logits = torch.tensor([0.2, -0.4, 0.9, 0.0])
    estimates = []
    for _ in range(400):
        theta = logits.clone().requires_grad_(True)
        policy = Categorical(logits=theta.expand(4, 32, -1))  # 4 samples for each of 32 states
        actions = policy.sample()
        (grad,) = torch.autograd.grad(-estimator(policy.log_prob(actions), REWARDS[actions]).policy_loss, theta)
        estimates.append(grad)
    estimates = torch.stack(estimates)
    stderr = estimates.std(0) / len(estimates) ** 0.5
    assert torch.all((estimates.mean(0) - true_categorical_gradient(logits)).abs() < 4 * stderr + 1e-3)


def test_learned_baseline_regresses_value_onto_reward():
    estimator = ScoreFunctionEstimator(baseline="learned", value_coef=0.5)
    value = torch.tensor([0.5, 0.5], requires_grad=True)
    reward = torch.tensor([1.0, 0.0])
    terms = estimator(torch.zeros(2, requires_grad=True), reward, value=value)
    assert terms.baseline_loss.item() == pytest.approx(0.25)
    assert torch.allclose(terms.advantage, torch.tensor([0.5, -0.5]))
    (grad,) = torch.autograd.grad(terms.loss, value)
    assert torch.allclose(grad, 0.5 * 2 * (value.detach() - reward) / 2)


def test_self_critical_baseline_is_the_greedy_reward():
    estimator = ScoreFunctionEstimator(baseline="self_critical")
    terms = estimator(torch.zeros(3, requires_grad=True), torch.tensor([1.0, 0.0, 1.0]), greedy_reward=torch.tensor([1.0, 1.0, 0.0]))
    assert torch.allclose(terms.advantage, torch.tensor([0.0, -1.0, 1.0]))


def test_moving_average_state_lives_in_buffers():
    estimator = ScoreFunctionEstimator(baseline="moving_average", baseline_momentum=0.5)
    estimator(torch.zeros(2, requires_grad=True), torch.tensor([2.0, 2.0]))
    estimator(torch.zeros(2, requires_grad=True), torch.tensor([0.0, 0.0]))
    assert estimator.reward_mean.item() == pytest.approx(1.0)
    restored = ScoreFunctionEstimator(baseline="moving_average", baseline_momentum=0.5)
    restored.load_state_dict(estimator.state_dict())
    assert restored.reward_mean.item() == pytest.approx(1.0) and restored.num_updates.item() == 2


def test_entropy_bonus_enters_the_loss():
    estimator = ScoreFunctionEstimator(baseline="none", entropy_coef=0.1)
    terms = estimator(torch.zeros(2, requires_grad=True), torch.zeros(2), entropy=torch.tensor([1.0, 3.0]))
    assert terms.loss.item() == pytest.approx(-0.2)


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="baseline"):
        ScoreFunctionEstimator(baseline="median")
    with pytest.raises(ConfigError, match="same shape"):
        ScoreFunctionEstimator()(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ConfigError, match="at least 2 samples"):
        ScoreFunctionEstimator(baseline="leave_one_out")(torch.zeros(1, 4), torch.zeros(1, 4))


def test_gradient_variance_is_zero_for_a_deterministic_loss_and_positive_for_sampling():
    theta = torch.zeros(4, requires_grad=True)
    assert gradient_variance(lambda: (theta * torch.arange(4.0)).sum(), [theta], repeats=4).item() == 0.0
    estimator = ScoreFunctionEstimator(baseline="none")

    def surrogate():
        policy = Categorical(logits=theta.expand(8, -1))
        actions = policy.sample()
        return estimator(policy.log_prob(actions), REWARDS[actions], update_statistics=False).policy_loss

    assert gradient_variance(surrogate, [theta], repeats=8).item() > 0.0


def test_group_normalisation_standardises_each_states_samples():
    estimator = ScoreFunctionEstimator(baseline="none", normalize_advantage="group")
    reward = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # [S=4, B=2]; state 1 all wrong
    terms = estimator(torch.zeros(4, 2, requires_grad=True), reward)
    assert torch.allclose(terms.advantage[:, 0].mean(), torch.tensor(0.0), atol=1e-6)
    assert terms.advantage[:, 0].std().item() == pytest.approx(1.0, abs=1e-4)
    assert torch.all(terms.advantage[:, 1] == 0)  # no signal where every sample earned the same
