"""Building blocks of the weight-shared depth network and the rules that decide its depth.

A depth-``N`` network is read as a policy applied step after step: the embedded input is the state
``s_0``, one block maps ``s_{n-1}`` to ``s_n`` (shared across steps as in ALBERT, Lan et al. 2020,
sec. 3.1, or one block per step, the untied baseline), a readout answers at every step and a
halting policy ``lambda_n = pi(halt | s_n)`` proposes to stop. How ``lambda_n`` becomes a depth,
and what trains it, is the job of a :class:`DepthController`:

- :class:`FixedDepth`: always ``depth`` steps, nothing to learn about halting.
- :class:`ReinforceHalting`: halt/continue are sampled actions rewarded by the task reward at the
  halting step minus a cost per step, trained by the shared score-function estimator.
- :class:`AdaptiveComputationTime`: Graves 2016, eqs. 6-12 (cumulative halting units, remainder,
  ponder cost ``tau * (N + R)``).
- :class:`PonderNetHalting`: Banino et al. 2021, eqs. 2-6 (halting distribution ``p_n``, expected
  loss ``sum_n p_n L_n`` plus ``beta * KL(p || p_G(lambda_p))``).

Every controller exposes the same three things: ``training_terms`` (the loss on all ``N`` steps at
once), ``decide`` (the per-step inference rule, run inside the early-exit loop) and ``train_steps``.
Nothing here knows about Lightning; :mod:`modules.shared_depth` composes these pieces.
"""

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from modules.classifier import ClassificationReward, classification_reward
from modules.errors import require
from modules.policy_gradient import ScoreFunctionEstimator

BlockKind = Literal["residual_mlp", "gru", "conv"]
ControllerKind = Literal["fixed", "reinforce", "act", "pondernet"]
InputFeatures = Literal["identity", "crelu"]


def state_features(state: Tensor) -> Tensor:
    """A state as a flat vector ``[B, F]``: vectors pass through, feature maps ``[B, C, H, W]`` are average-pooled."""
    return state.mean(dim=(-2, -1)) if state.dim() == 4 else state


# --- the step: one block, applied again and again ---------------------------------------------------


class ResidualMLPBlock(nn.Module):
    """``s_n = s_{n-1} + W_2 relu(W_1 LayerNorm(s_{n-1}))``: a pre-norm transformer feed-forward sublayer.

    ALBERT shares exactly this part across layers (Lan et al. 2020, table 4: most of the loss from
    sharing comes from the feed-forward part). The input reaches it only through ``s_0``.
    """

    def __init__(self, state_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(state_dim)
        self.net = nn.Sequential(nn.Linear(state_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, state_dim))

    def read_context(self, context: Tensor) -> Tensor:
        return context  # not read: the input reaches this block through s_0 only

    def forward(self, state: Tensor, context: Tensor) -> Tensor:
        return state + self.net(self.norm(state))


class GRUStepBlock(nn.Module):
    """``s_n = GRU(context, s_{n-1})``: the recurrent step of ACT and PonderNet on parity.

    The embedded input is fed again at every step (Graves 2016, sec. 2: the input is repeated at each
    ponder step), so the block can re-read what it has not yet integrated. The input's share of the gates,
    ``W_i x + b_i``, is the same at every step: :meth:`read_context` computes it once per forward, and each
    step adds only the state's share (the ``nn.GRUCell`` equations, with its parameters; the parity runs
    train 1.3x faster than with a cell that recomputes the input's share at every step, README).
    """

    def __init__(self, state_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(state_dim, state_dim)

    def read_context(self, context: Tensor) -> Tensor:
        """``[B, 3 state_dim]``: the input's share of the reset, update and candidate gates."""
        return F.linear(context, self.cell.weight_ih, self.cell.bias_ih)

    def forward(self, state: Tensor, input_gates: Tensor) -> Tensor:
        reset_in, update_in, candidate_in = input_gates.chunk(3, dim=-1)
        reset_h, update_h, candidate_h = F.linear(state, self.cell.weight_hh, self.cell.bias_hh).chunk(3, dim=-1)
        reset, update = torch.sigmoid(reset_in + reset_h), torch.sigmoid(update_in + update_h)
        candidate = torch.tanh(candidate_in + reset * candidate_h)
        return torch.lerp(candidate, state, update)  # (1 - z) n + z h


class ConvBlock(nn.Module):
    """``s_n = s_{n-1} + conv(relu(GroupNorm(conv(relu(GroupNorm(s_{n-1}))))))``: a pre-activation residual block.

    GroupNorm, not BatchNorm: a sample's output must not depend on which other samples are still
    computing, or early exit would change the predictions.
    """

    def __init__(self, channels: int, hidden_dim: int) -> None:
        super().__init__()
        groups = math.gcd(channels, 8)
        self.net = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def read_context(self, context: Tensor) -> Tensor:
        return context  # not read: the input reaches this block through s_0 only

    def forward(self, state: Tensor, context: Tensor) -> Tensor:
        return state + self.net(state)


_BLOCKS: dict[str, type[nn.Module]] = {"residual_mlp": ResidualMLPBlock, "gru": GRUStepBlock, "conv": ConvBlock}


class StepBlocks(nn.Module):
    """The step function for steps ``1..max_steps``: one shared block (``tied``) or one block per step.

    With ``tied=True`` the parameter count does not depend on ``max_steps``: this is the point of
    ALBERT's cross-layer sharing, and what makes depth an episode length rather than an architecture.
    """

    def __init__(self, kind: BlockKind, state_dim: int, hidden_dim: int, max_steps: int, tied: bool) -> None:
        super().__init__()
        self.tied = tied
        self.blocks = nn.ModuleList(_BLOCKS[kind](state_dim, hidden_dim) for _ in range(1 if tied else max_steps))

    def read_context(self, context: Tensor) -> Tensor:
        """What every step reads from the embedded input, computed once per forward when one block is shared
        (an untied block reads it at its own step, which it runs once)."""
        return self.blocks[0].read_context(context) if self.tied else context

    def forward(self, step: int, state: Tensor, context: Tensor) -> Tensor:
        """``s_step`` from ``s_{step-1}``; ``step`` counts from 1; ``context`` from :meth:`read_context`."""
        if self.tied:
            return self.blocks[0](state, context)
        block = self.blocks[step - 1]
        return block(state, block.read_context(context))


def crelu(inputs: Tensor) -> Tensor:
    """``[relu(x), relu(-x)]`` along axis 1 (features, or channels of images): each entry's positive and
    negative parts as separate features, the concatenated ReLU of Shang et al. 2016, lossless.

    Why the embedding may want it: a linear map of ``x`` in ``{-1, 0, +1}^D`` adds the +1 and the -1
    entries with opposite signs, so the number of +1 entries (what parity counts) is not a linear feature
    of ``x``, while it is one of ``crelu(x)`` (the sum of its first half). For ternary inputs this is the
    one-hot code of the nonzero values, i.e. a token embedding summed over positions.
    """
    return torch.cat([inputs.clamp(min=0), (-inputs).clamp(min=0)], dim=1)


class Embedding(nn.Module):
    """Input to the initial state ``s_0`` (which the GRU step also reads as its context at every step).

    Vectors, and images for a vector-state block: ``tanh(W flatten(f(x)) + b)``. Images for the ``conv``
    block: a conv stem on ``f(x)``, two 3x3 conv + max-pool stages to ``state_dim`` channels at a quarter
    of the resolution. ``f`` is the identity or :func:`crelu` (``features``), which doubles the inputs.
    """

    def __init__(self, input_shape: tuple[int, ...], state_dim: int, conv_stem: bool = False,
                 features: InputFeatures = "identity") -> None:
        super().__init__()
        self.features = features
        width = 2 if features == "crelu" else 1
        if conv_stem:
            channels = width * input_shape[0]
            self.net = nn.Sequential(
                nn.Conv2d(channels, state_dim // 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(state_dim // 2, state_dim, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )
        else:
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(width * math.prod(input_shape), state_dim), nn.Tanh())

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(crelu(inputs) if self.features == "crelu" else inputs)


class Readout(nn.Module):
    """Class logits from any step's state: ``W norm(state_features(s_n)) + b``, one map for every step.

    ``normalize`` puts a LayerNorm before the linear map, the final norm of a pre-norm residual
    network (GPT-2's ``ln_f``): the residual stream grows with every step, and without the norm one
    linear map must read states of every scale. On Fashion-MNIST with the conv block it lifted every
    step's accuracy of a REINFORCE-halting network by 1.3-5.7 points (README, issue 6).
    """

    def __init__(self, state_dim: int, num_classes: int, normalize: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(state_dim) if normalize else nn.Identity()
        self.linear = nn.Linear(state_dim, num_classes)

    def forward(self, state: Tensor) -> Tensor:
        return self.linear(self.norm(state_features(state)))


class HaltingPolicy(nn.Module):
    """The halting logit ``l_n = w . phi(s_n) + b`` at every step; ``lambda_n = sigmoid(l_n)``.

    ``phi(s_n)`` is ``state_features(s_n)``; with ``reads_answer`` it also holds how sure the answer the
    readout would give at that step is (:func:`answer_confidence`, detached: the halting objective does not
    train the readout). "Halt once the answer is sure" is then one weight, where from the pooled state
    alone a linear policy cannot form a softmax's maximum. The bias starts at ``bias_init`` (negative:
    continue at first), the usual guard against the early collapse to one or two steps.
    """

    def __init__(self, state_dim: int, bias_init: float = -2.0, reads_answer: bool = False) -> None:
        super().__init__()
        self.reads_answer = reads_answer
        self.linear = nn.Linear(state_dim + (2 if reads_answer else 0), 1)
        nn.init.constant_(self.linear.bias, bias_init)

    def forward(self, state: Tensor, logits: Tensor | None = None) -> Tensor:
        features = state_features(state)
        if self.reads_answer:
            require(logits is not None, "HaltingPolicy(reads_answer=True) needs the readout's logits at the step")
            features = torch.cat([features, answer_confidence(logits).to(features.dtype)], dim=-1)
        return self.linear(features).squeeze(-1).float()


def answer_confidence(logits: Tensor, bound: float = 10.0) -> Tensor:
    """``[log p_1 - log(1 - p_1), log p_1 - log p_2]`` [B, 2], detached, each clipped to ``[-bound, bound]``.

    ``p_1 >= p_2`` are the two largest probabilities of ``softmax(logits)``: the log-odds that the answer
    is the top class, and its margin over the runner-up. Log-odds rather than probabilities: a sure
    answer and a coin flip then differ by several units, so a halting policy trained for a few thousand
    Adam steps can put a sharp threshold between them (on ``p_1`` itself the weight would have to grow
    to tens).
    """
    log_p = logits.detach().float().log_softmax(-1)
    top = log_p.topk(2, dim=-1).values
    rest = log_p.scatter(-1, log_p.argmax(-1, keepdim=True), float("-inf")).logsumexp(-1)  # log(1 - p_1)
    return torch.stack([top[:, 0] - rest, top[:, 0] - top[:, 1]], dim=-1).clamp(-bound, bound)


# --- depth controllers -----------------------------------------------------------------------------


@dataclass
class DepthTerms:
    """What a controller's training objective returns.

    ``loss`` trains everything (block, readout, policy); ``halt_distribution`` ``p`` [N, B] is the
    probability of answering at step ``n`` (detached, for logging: ``sum_n n p_n`` is the expected
    depth); ``logits`` [B, K] is the training-time answer (the readout at the most likely halting
    step, or ACT's mixture); ``logs`` holds scalars worth logging.
    """

    loss: Tensor
    task_loss: Tensor
    halt_distribution: Tensor
    logits: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class HaltDecision:
    """The inference rule's verdict at one step for the samples still computing.

    ``halt`` [B] bool; ``weight`` [B]: how much this step's logits count in the answer (1 at the
    halting step and 0 elsewhere, except ACT which mixes the steps); ``carry``: controller state.
    """

    halt: Tensor
    weight: Tensor
    carry: Tensor


def halting_distribution(halt_prob: Tensor) -> Tensor:
    """``p_n = lambda_n prod_{j<n} (1 - lambda_j)`` [N, B] (PonderNet eq. 2) with ``lambda_N`` forced to 1."""
    return halting_log_distribution(halt_prob).exp()


def halting_log_distribution(halt_prob: Tensor) -> Tensor:
    """``log p_n`` [N, B] computed in log space, ``lambda_N`` = 1, so that ``p`` sums to 1 over ``N`` steps."""
    halt_prob = torch.cat([halt_prob[:-1], torch.ones_like(halt_prob[-1:])])
    log_continue = torch.log1p(-halt_prob[:-1].clamp(max=1 - 1e-6))
    survived = torch.cat([torch.zeros_like(halt_prob[:1]), log_continue.cumsum(0)])  # log prod_{j<n} (1 - lambda_j)
    return survived + halt_prob.clamp(min=1e-12).log()


def per_step_cross_entropy(step_logits: Tensor, labels: Tensor) -> Tensor:
    """``L_n`` [N, B]: the cross-entropy of the readout at every step."""
    steps, batch, classes = step_logits.shape
    return F.cross_entropy(step_logits.float().reshape(-1, classes), labels.repeat(steps), reduction="none").view(steps, batch)


def step_numbers(reference: Tensor) -> Tensor:
    """``[1, 2, ..., N]`` [N, 1] on the device of ``reference`` [N, B]."""
    return torch.arange(1, len(reference) + 1, device=reference.device, dtype=torch.float32)[:, None]


class DepthController(nn.Module, ABC):
    """One interface for every way of choosing the depth.

    ``training_terms(step_logits [N, B, K], halt_logits [N, B], labels [B], cost_scale)`` is the
    training objective on all ``N`` computed steps (``cost_scale`` in [0, 1] is the warm-up factor of
    the controller's cost). ``decide(step, halt_logit [B], carry [B], uniform [B], max_steps)`` is the
    inference rule at step ``step`` (from 1): sampled halting passes ``uniform ~ U(0, 1)``, thresholded
    halting passes 0.5, so "halt when ``uniform < lambda_n``" is a Bernoulli draw in one case and
    ``lambda_n > 0.5`` in the other. ``train_steps(max_steps)`` is how many steps training needs.
    """

    uses_policy = True

    def train_steps(self, max_steps: int) -> int:
        return max_steps

    def halt_probability(self, halt_logit: Tensor) -> Tensor:
        return torch.sigmoid(halt_logit)

    def decide(self, step: int, halt_logit: Tensor, carry: Tensor, uniform: Tensor, max_steps: int) -> HaltDecision:
        """Halt with probability ``lambda_n`` (or when ``lambda_n > 0.5``); always at ``max_steps``."""
        halt = (uniform < self.halt_probability(halt_logit)) | (step >= max_steps)
        return HaltDecision(halt, halt.float(), carry)

    @abstractmethod
    def training_terms(self, step_logits: Tensor, halt_logits: Tensor, labels: Tensor, cost_scale: float = 1.0) -> DepthTerms:
        """The training objective of this depth rule on all computed steps."""


class FixedDepth(DepthController):
    """Always ``depth`` steps (``None``: ``max_steps``): the ordinary deep network, trained on its last readout."""

    uses_policy = False

    def __init__(self, depth: int | None = None) -> None:
        super().__init__()
        self.depth = depth

    def train_steps(self, max_steps: int) -> int:
        return max_steps if self.depth is None else self.depth

    def decide(self, step: int, halt_logit: Tensor, carry: Tensor, uniform: Tensor, max_steps: int) -> HaltDecision:
        halt = torch.full_like(uniform, step >= self.train_steps(max_steps), dtype=torch.bool)
        return HaltDecision(halt, halt.float(), carry)

    def training_terms(self, step_logits: Tensor, halt_logits: Tensor, labels: Tensor, cost_scale: float = 1.0) -> DepthTerms:
        loss = F.cross_entropy(step_logits[-1].float(), labels)
        halt_distribution = torch.zeros(step_logits.shape[:2], device=step_logits.device)
        halt_distribution[-1] = 1.0
        return DepthTerms(loss, loss.detach(), halt_distribution, step_logits[-1])


class ReinforceHalting(DepthController):
    """Halting as a sequence of Bernoulli actions, trained by the score-function estimator.

    The episode: at step ``n`` the policy halts with probability ``lambda_n``, clipped to
    ``[halt_prob_min, halt_prob_max]`` so that it can never stop exploring (BlockDrop keeps its
    probabilities in [0.2, 0.8] for the same reason); step ``N`` always halts. The halting step
    ``T`` has probability ``p_T = lambda_T prod_{j<T}(1 - lambda_j)``, so ``log pi(T) = log p_T``.
    The return is ``R = r(T) - step_cost * T`` with ``r`` the correctness of the readout at ``T``
    (``reward="correct"``) or its negative cross-entropy (``"neg_loss"``). ``num_samples`` halting
    steps are drawn per input and fed to :class:`ScoreFunctionEstimator`: its gradient is
    ``(R - b) grad log pi(T)`` (Williams 1992, eq. 11).

    Block and readout are trained by backprop on the expected per-step loss, ``sum_n w_n L_n`` with
    ``w_n = (1 - uniform_mix) sg(p_n) + uniform_mix / N``: the policy's own halting distribution mixed
    with a uniform one. With ``uniform_mix = 0`` this is the expectation under the current policy, and
    it collapses: the steps the policy favours learn fastest, so their reward grows and the policy
    favours them more, ending at one step. The uniform share keeps every step learning to answer.
    """

    def __init__(
        self,
        step_cost: float = 0.01,
        reward: ClassificationReward = "correct",
        num_samples: int = 8,
        halt_prob_min: float = 0.02,
        halt_prob_max: float = 0.98,
        uniform_mix: float = 0.5,
        estimator: ScoreFunctionEstimator | None = None,
    ) -> None:
        super().__init__()
        require(step_cost >= 0, f"--model.init_args.step_cost must be >= 0, got {step_cost}")
        require(num_samples >= 1, f"--model.init_args.num_halting_samples must be >= 1, got {num_samples}")
        require(
            0.0 <= halt_prob_min < halt_prob_max <= 1.0,
            f"halting probability bounds must satisfy 0 <= halt_prob_min < halt_prob_max <= 1, got {halt_prob_min}, {halt_prob_max}",
        )
        require(0.0 <= uniform_mix <= 1.0, f"--model.init_args.uniform_step_mix must be in [0, 1], got {uniform_mix}")
        self.step_cost = step_cost
        self.uniform_mix = uniform_mix
        self.reward = reward
        self.num_samples = num_samples
        self.halt_prob_min, self.halt_prob_max = halt_prob_min, halt_prob_max
        self.estimator = estimator if estimator is not None else ScoreFunctionEstimator(baseline="leave_one_out")

    def halt_probability(self, halt_logit: Tensor) -> Tensor:
        return self.halt_prob_min + (self.halt_prob_max - self.halt_prob_min) * torch.sigmoid(halt_logit)

    def training_terms(self, step_logits: Tensor, halt_logits: Tensor, labels: Tensor, cost_scale: float = 1.0) -> DepthTerms:
        step_losses = per_step_cross_entropy(step_logits, labels)  # [N, B]
        log_p = halting_log_distribution(self.halt_probability(halt_logits))  # [N, B], differentiable
        p = log_p.exp().detach()
        weights = (1 - self.uniform_mix) * p + self.uniform_mix / len(p)
        task_loss = (weights * step_losses).sum(0).mean()

        halting = Categorical(logits=log_p.T)  # over the N halting steps, per input
        halt_step = halting.sample((self.num_samples,))  # [S, B], 0-based
        task_reward = classification_reward(step_logits, labels, self.reward)  # [N, B]
        reward = task_reward.T.gather(1, halt_step.T).T - cost_scale * self.step_cost * (halt_step + 1).float()
        terms = self.estimator(halting.log_prob(halt_step), reward, entropy=halting.entropy(), sample_dim=0)

        logits = step_logits.gather(0, p.argmax(0)[None, :, None].expand(1, -1, step_logits.shape[-1]))[0]
        logs = {"reward": terms.reward, "halting_entropy": terms.entropy, "policy_loss": terms.policy_loss.detach()}
        return DepthTerms(task_loss + terms.loss, task_loss.detach(), p, logits, logs)


class AdaptiveComputationTime(DepthController):
    """Graves 2016, "Adaptive Computation Time for Recurrent Neural Networks", eqs. 6-12.

    Halting units ``h_n = sigmoid(l_n)``; the depth is ``N(x) = min{n : sum_{j<=n} h_j >= 1 - epsilon}``
    (eq. 8, capped at ``max_steps``), the remainder ``R = 1 - sum_{n<N} h_n`` (eq. 9), the halting
    weights ``p_n = h_n`` for ``n < N`` and ``R`` at ``N`` (eq. 10), the answer the mixture
    ``y = sum_n p_n y_n`` (eq. 7; without ``readout_norm`` the readout is linear, so this equals the readout of the mean state)
    and the loss ``L(y) + tau * (N + R)`` (eqs. 11-12: only ``R`` carries a gradient).
    """

    def __init__(self, tau: float = 0.01, epsilon: float = 0.01) -> None:
        super().__init__()
        require(tau >= 0, f"--model.init_args.act_tau must be >= 0, got {tau}")
        require(0 < epsilon < 1, f"--model.init_args.act_epsilon must be in (0, 1), got {epsilon}")
        self.tau = tau
        self.epsilon = epsilon

    def halting_weights(self, halt_logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``p`` [N, B] (eq. 10), ``N(x)`` [B] (1-based) and the remainder ``R`` [B]."""
        h = torch.sigmoid(halt_logits)
        cumulative = h.cumsum(0)
        reached = cumulative >= 1 - self.epsilon
        reached[-1] = True
        depth = reached.float().argmax(0)  # 0-based index of the first step that reaches 1 - epsilon
        steps = torch.arange(len(h), device=h.device)[:, None]
        before = (steps < depth).float()
        remainder = 1 - (h * before).sum(0)
        p = h * before + remainder * (steps == depth).float()
        return p, depth + 1, remainder

    def decide(self, step: int, halt_logit: Tensor, carry: Tensor, uniform: Tensor, max_steps: int) -> HaltDecision:
        """Deterministic: ``carry`` is the cumulative halting sum; sampled and thresholded halting coincide."""
        h = torch.sigmoid(halt_logit)
        halt = (carry + h >= 1 - self.epsilon) | (step >= max_steps)
        weight = torch.where(halt, 1 - carry, h)
        return HaltDecision(halt, weight, carry + h)

    def training_terms(self, step_logits: Tensor, halt_logits: Tensor, labels: Tensor, cost_scale: float = 1.0) -> DepthTerms:
        p, depth, remainder = self.halting_weights(halt_logits)
        logits = (p[..., None] * step_logits.float()).sum(0)  # eq. 7
        task_loss = F.cross_entropy(logits, labels)
        ponder_cost = (depth.float() + remainder).mean()  # eq. 11
        loss = task_loss + cost_scale * self.tau * ponder_cost
        return DepthTerms(loss, task_loss.detach(), p.detach(), logits, {"ponder_cost": ponder_cost.detach()})


class PonderNetHalting(DepthController):
    """Banino et al. 2021, "PonderNet: Learning to Ponder", eqs. 2-6.

    ``p_n = lambda_n prod_{j<n}(1 - lambda_j)`` with ``lambda_N = 1`` (eq. 2 on a finite horizon),
    loss ``L = sum_n p_n L(y, y_n) + beta * KL(p || p_G(lambda_p))`` (eq. 6) where ``p_G`` is the
    geometric prior ``p_G(n) = lambda_p (1 - lambda_p)^(n-1)`` truncated to the ``N`` steps and
    renormalised. The KL is taken in the paper's direction, ``sum_n p_n log(p_n / p_G(n))``; some
    public code computes ``KL(p_G || p)`` instead. Inference samples ``halt ~ Bernoulli(lambda_n)``.
    """

    def __init__(self, lambda_p: float = 0.2, beta: float = 0.01) -> None:
        super().__init__()
        require(0 < lambda_p < 1, f"--model.init_args.ponder_lambda_p must be in (0, 1), got {lambda_p}")
        require(beta >= 0, f"--model.init_args.ponder_beta must be >= 0, got {beta}")
        self.lambda_p = lambda_p
        self.beta = beta

    def log_prior(self, steps: int, device=None) -> Tensor:
        """``log p_G(n)`` [N, 1] for ``n = 1..N``, truncated and renormalised."""
        n = torch.arange(steps, device=device, dtype=torch.float32)
        log_geometric = math.log(self.lambda_p) + n * math.log(1 - self.lambda_p)
        return (log_geometric - torch.logsumexp(log_geometric, 0))[:, None]

    def kl_to_prior(self, log_p: Tensor) -> Tensor:
        """``KL(p || p_G)`` [B] = ``sum_n p_n (log p_n - log p_G(n))``."""
        return (log_p.exp() * (log_p - self.log_prior(len(log_p), log_p.device))).sum(0)

    def training_terms(self, step_logits: Tensor, halt_logits: Tensor, labels: Tensor, cost_scale: float = 1.0) -> DepthTerms:
        step_losses = per_step_cross_entropy(step_logits, labels)
        log_p = halting_log_distribution(torch.sigmoid(halt_logits))
        p = log_p.exp()
        reconstruction = (p * step_losses).sum(0).mean()  # eq. 4
        kl = self.kl_to_prior(log_p).mean()  # eq. 5
        loss = reconstruction + cost_scale * self.beta * kl
        logits = step_logits.gather(0, p.argmax(0)[None, :, None].expand(1, -1, step_logits.shape[-1]))[0]
        return DepthTerms(loss, reconstruction.detach(), p.detach(), logits, {"kl": kl.detach()})
