"""A weight-shared deep network whose depth is an episode length chosen by a halting policy.

Each layer is a policy mapping a state ``s_{n-1}`` to ``s_n``; the embedded input is ``s_0`` and the
negative loss at the end is the reward. With one block shared across layers (ALBERT, Lan et al.
2020, sec. 3.1) the network is one policy applied step after step, so its depth is the length of an
episode, and choosing it, a discrete decision backprop cannot cross, is an RL problem:

    T ~ pi(halt | s_1), pi(halt | s_2), ...      R = r(readout(s_T), y) - step_cost * T

``depth_controller`` picks who decides ``T``: ``fixed`` (an ordinary depth), ``reinforce`` (the
score-function estimator of :mod:`modules.policy_gradient` on ``R``), or the differentiable answers
to the same question, ``act`` (Graves 2016) and ``pondernet`` (Banino et al. 2021); see
:mod:`modules.halting`. Block and readout are trained by backprop on every controller's own
objective (for ``reinforce``: the expected per-step loss under the halting distribution).

At inference each sample stops computing at its own halting step (per-sample early exit: halted
samples leave the batch), with halting either sampled (``halt ~ Bernoulli(lambda_n)``) or
thresholded (``lambda_n > 0.5``); both are logged.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from modules.classifier import ClassificationReward, Classifier, LrSchedule, require_optimizer_options
from modules.errors import require
from modules.halting import (
    AdaptiveComputationTime,
    BlockKind,
    ControllerKind,
    DepthController,
    Embedding,
    FixedDepth,
    HaltingPolicy,
    InputFeatures,
    PonderNetHalting,
    ReinforceHalting,
    Readout,
    StepBlocks,
    step_numbers,
)
from modules.policy_gradient import AdvantageNormalization, Baseline, ScoreFunctionEstimator
from modules.step_logging import step_logs_due

HaltingMode = Literal["threshold", "sample"]


@dataclass
class Inference:
    """The answer of the early-exit forward pass: ``logits`` [B, K] and the halting step ``steps`` [B] (1-based)."""

    logits: Tensor
    steps: Tensor


@dataclass
class Trace:
    """Every step of a full forward pass: ``states`` [N + 1, B, ...] (``s_0`` first), ``step_logits`` [N, B, K], ``halt_logits`` [N, B]."""

    states: Tensor
    step_logits: Tensor
    halt_logits: Tensor


class SharedDepthNetwork(Classifier):
    """Embedding, one block applied up to ``max_steps`` times (or ``max_steps`` blocks), a readout at every step.

    Args:
        num_classes: classes of the task (must match the datamodule's).
        input_shape: ``[D]`` for vectors (parity, 2-D toys) or ``[C, H, W]`` for images (must match the data).
        block: the step: ``residual_mlp`` (pre-norm feed-forward sublayer), ``gru`` (GRU cell re-reading
            the embedded input) or ``conv`` (residual conv block on a conv stem; images only).
        input_features: what the embedding reads: ``identity`` (the input as it is) or ``crelu`` (each
            entry's positive and negative parts as separate features, :func:`modules.halting.crelu`; on
            parity it makes the count of +1 entries a linear feature, README, issue 6).
        state_dim: width of the state (channels for ``conv``).
        hidden_dim: hidden width inside the ``residual_mlp`` block.
        tied: one block shared by all steps (ALBERT) or one block per step (the untied baseline).
        max_steps: the most steps any sample may take (``N``).
        depth_controller: ``fixed``, ``reinforce``, ``act`` or ``pondernet``.
        fixed_depth: the depth of ``fixed`` (``None``: ``max_steps``).
        step_cost: cost per step in the REINFORCE return ``R = r(T) - step_cost * T``.
        reward: REINFORCE task reward at the halting step: ``correct`` (0/1) or ``neg_loss`` (-cross-entropy).
        num_halting_samples: halting steps sampled per input for the estimator (``leave_one_out`` needs >= 2).
        baseline: the estimator's control variate (see :mod:`modules.policy_gradient`).
        entropy_coef: entropy bonus on the halting-step distribution.
        normalize_advantage: the estimator's advantage normalisation.
        halt_prob_min: lower bound of the REINFORCE halting probability (keeps it from never halting).
        halt_prob_max: upper bound (keeps it from always halting at step 1: the halting collapse).
        uniform_step_mix: REINFORCE only: share of a uniform distribution over steps in the weights of the
            block's per-step loss (0: the policy's halting distribution alone, which collapses to one step;
            1: every step trained alike, whatever the policy uses). On Fashion-MNIST 0.2 beat 0.5: the
            steps the policy answers at get most of the training (README, issue 6).
        halt_bias_init: initial bias of the halting logit (negative: start by continuing).
        halt_logit_penalty: weight ``c`` of ``c * mean(l_n^2)`` over the halting logits of every step, added to the
            loss. Bounding ``lambda_n`` to ``[halt_prob_min, halt_prob_max]`` keeps the policy sampling both actions,
            but not learning: the score ``d log pi / d l_n`` carries ``sigmoid'(l_n)``, which vanishes as ``|l_n|``
            grows, while Adam, which divides by the gradient's own scale, can go on moving the weights along its
            sign. On 64-bit parity the logits reached +-30..90 and the halting step froze (README, issue 6).
            The penalty gives the logits a restoring pull that REINFORCE's gradient can balance (0: none).
        halting_reads_answer: the halting policy also reads how sure the readout's answer at the step is (the
            top class's log-odds and its log-margin over the runner-up, detached), not only the pooled state;
            see :func:`modules.halting.answer_confidence`.
        detach_halting_input: the halting policy reads ``sg(s_n)``, so the controller's own gradient
            (REINFORCE's score-function term, ACT's ponder cost, PonderNet's KL) trains the policy alone
            and the block, stem and readout learn from the task loss only.
        cost_warmup_steps: the controller's cost (``step_cost``, ACT's ``tau``, PonderNet's ``beta``) is
            scaled by ``min(1, step / cost_warmup_steps)`` (0: no warm-up).
        act_tau: ACT's ponder-cost weight (Graves 2016, eq. 12).
        act_epsilon: ACT's halting threshold ``1 - epsilon`` (eq. 8).
        ponder_lambda_p: PonderNet's geometric prior parameter (prior mean depth ``1 / lambda_p``).
        ponder_beta: PonderNet's KL weight.
        eval_halting: halting rule of ``val/acc`` (the checkpoint metric); both rules are logged.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        readout_norm: LayerNorm before the readout, the final norm of a pre-norm residual network, so one
            linear map reads the states of every step alike (the Fashion-MNIST configs use it).
        lr_schedule: ``constant``, or ``cosine``: the rate decays to 0 over the fit, so the weights tested
            are those of a settled optimiser rather than one Adam step at the full rate.
    """

    shape_option = "input_shape"
    input_ranks = (1, 3)
    data_hint = "use ParityDataModule, ToyDataModule or VisionDataModule"

    def __init__(
        self,
        num_classes: int = 2,
        input_shape: tuple[int, ...] = (64,),
        block: BlockKind = "gru",
        input_features: InputFeatures = "identity",
        state_dim: int = 128,
        hidden_dim: int = 256,
        tied: bool = True,
        max_steps: int = 20,
        depth_controller: ControllerKind = "reinforce",
        fixed_depth: int | None = None,
        step_cost: float = 0.01,
        reward: ClassificationReward = "neg_loss",
        num_halting_samples: int = 8,
        baseline: Baseline = "leave_one_out",
        entropy_coef: float = 0.0,
        normalize_advantage: AdvantageNormalization = "none",
        halt_prob_min: float = 0.02,
        halt_prob_max: float = 0.98,
        uniform_step_mix: float = 0.5,
        halt_bias_init: float = -2.0,
        halt_logit_penalty: float = 0.0,
        halting_reads_answer: bool = False,
        detach_halting_input: bool = False,
        cost_warmup_steps: int = 0,
        act_tau: float = 0.01,
        act_epsilon: float = 0.01,
        ponder_lambda_p: float = 0.2,
        ponder_beta: float = 0.01,
        eval_halting: HaltingMode = "threshold",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        readout_norm: bool = False,
        lr_schedule: LrSchedule = "constant",
    ) -> None:
        super().__init__(num_classes, input_shape)
        require(block in BlockKind.__args__, f"--model.init_args.block must be one of {BlockKind.__args__}, got {block!r}")
        require(block != "conv" or len(input_shape) == 3,
                f"--model.init_args.block conv needs image inputs [C, H, W], got input_shape {list(input_shape)}: use residual_mlp or gru")
        require(input_features in InputFeatures.__args__,
                f"--model.init_args.input_features must be one of {InputFeatures.__args__}, got {input_features!r}")
        require(state_dim >= 2 and hidden_dim >= 1, f"--model.init_args.state_dim must be >= 2 and hidden_dim >= 1, got {state_dim}, {hidden_dim}")
        require(max_steps >= 1, f"--model.init_args.max_steps must be >= 1, got {max_steps}")
        require(depth_controller in ControllerKind.__args__,
                f"--model.init_args.depth_controller must be one of {ControllerKind.__args__}, got {depth_controller!r}")
        require(fixed_depth is None or 1 <= fixed_depth <= max_steps,
                f"--model.init_args.fixed_depth must be in 1..max_steps ({max_steps}), got {fixed_depth}")
        require(reward in ClassificationReward.__args__, f"--model.init_args.reward must be one of {ClassificationReward.__args__}, got {reward!r}")
        require(baseline != "leave_one_out" or num_halting_samples >= 2 or depth_controller != "reinforce",
                "--model.init_args.baseline leave_one_out needs --model.init_args.num_halting_samples >= 2")
        require(baseline not in ("learned", "self_critical"),
                f"--model.init_args.baseline {baseline} is not available for halting: use leave_one_out, moving_average or none")
        require(halt_logit_penalty >= 0, f"--model.init_args.halt_logit_penalty must be >= 0, got {halt_logit_penalty}")
        require(cost_warmup_steps >= 0, f"--model.init_args.cost_warmup_steps must be >= 0, got {cost_warmup_steps}")
        require(eval_halting in ("threshold", "sample"), f"--model.init_args.eval_halting must be threshold or sample, got {eval_halting!r}")
        require_optimizer_options(lr, lr_schedule)
        self.save_hyperparameters()
        self.controller = self._controller()
        steps = self.controller.train_steps(max_steps)  # a fixed-depth untied network owns only the blocks it uses
        self.embedding = Embedding(tuple(input_shape), state_dim, conv_stem=block == "conv", features=input_features)
        self.blocks = StepBlocks(block, state_dim, hidden_dim, steps, tied)
        self.readout = Readout(state_dim, num_classes, readout_norm)
        self.halting_policy = HaltingPolicy(state_dim, halt_bias_init, halting_reads_answer) if self.controller.uses_policy else None
        other = "sample" if eval_halting == "threshold" else "threshold"  # the rule logged beside eval_halting's
        for stage in ("val", "test"):
            setattr(self, f"{stage}_acc_{other}", MulticlassAccuracy(num_classes, average="micro"))
            setattr(self, f"{stage}_mean_steps", MeanMetric())
            setattr(self, f"{stage}_mean_steps_{other}", MeanMetric())

    def _controller(self) -> DepthController:
        h = self.hparams
        if h.depth_controller == "fixed":
            return FixedDepth(h.fixed_depth)
        if h.depth_controller == "act":
            return AdaptiveComputationTime(h.act_tau, h.act_epsilon)
        if h.depth_controller == "pondernet":
            return PonderNetHalting(h.ponder_lambda_p, h.ponder_beta)
        estimator = ScoreFunctionEstimator(baseline=h.baseline, entropy_coef=h.entropy_coef, normalize_advantage=h.normalize_advantage)
        return ReinforceHalting(h.step_cost, h.reward, h.num_halting_samples, h.halt_prob_min, h.halt_prob_max,
                                h.uniform_step_mix, estimator)

    @property
    def max_steps(self) -> int:
        return self.controller.train_steps(self.hparams.max_steps)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters in all, and in the step blocks (independent of ``max_steps`` when tied)."""
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        return {"params/total": count(self), "params/blocks": count(self.blocks)}

    # --- the network ----------------------------------------------------------------------------

    def _halt_logit(self, state: Tensor, logits: Tensor) -> Tensor:
        """``l_n`` [B] from the state ``s_n`` and the readout's ``logits`` at the same step."""
        if self.halting_policy is None:
            return state.new_zeros(len(state), dtype=torch.float32)
        return self.halting_policy(state.detach() if self.hparams.detach_halting_input else state, logits)

    def trace(self, inputs: Tensor, steps: int | None = None) -> Trace:
        """Run all ``steps`` steps on every sample, keeping each state, readout and halting logit."""
        steps = self.max_steps if steps is None else steps
        state = self.embedding(inputs)
        context = self.blocks.read_context(state)
        states, step_logits, halt_logits = [state], [], []
        for step in range(1, steps + 1):
            state = self.blocks(step, state, context)
            states.append(state)
            step_logits.append(self.readout(state))
            halt_logits.append(self._halt_logit(state, step_logits[-1]))
        return Trace(torch.stack(states), torch.stack(step_logits), torch.stack(halt_logits))

    def _uniforms(self, batch: int, mode: HaltingMode, device, generator: torch.Generator | None) -> Tensor:
        """[N, B] uniforms of the halting draws (``sample``), or 0.5 everywhere (``threshold``: ``lambda > 0.5``)."""
        if mode == "threshold":
            return torch.full((self.max_steps, batch), 0.5, device=device)
        return torch.rand((self.max_steps, batch), generator=generator).to(device)

    def infer(self, inputs: Tensor, mode: HaltingMode = "threshold", uniforms: Tensor | None = None,
              generator: torch.Generator | None = None) -> Inference:
        """Per-sample early exit: a sample that halts leaves the batch, so it costs no further steps."""
        batch, num_classes = len(inputs), self.hparams.num_classes
        uniforms = self._uniforms(batch, mode, inputs.device, generator) if uniforms is None else uniforms
        state = self.embedding(inputs)
        context = self.blocks.read_context(state)
        logits = torch.zeros(batch, num_classes, device=inputs.device)
        steps = torch.zeros(batch, dtype=torch.long, device=inputs.device)
        carry = torch.zeros(batch, device=inputs.device)
        active = torch.arange(batch, device=inputs.device)  # indices of the samples still computing
        for step in range(1, self.max_steps + 1):
            state = self.blocks(step, state, context)
            step_logits = self.readout(state)
            decision = self.controller.decide(step, self._halt_logit(state, step_logits), carry, uniforms[step - 1, active], self.max_steps)
            logits.index_add_(0, active, decision.weight[:, None] * step_logits.float())
            steps[active[decision.halt]] = step
            going = ~decision.halt
            if not going.any():
                break
            active, state, context, carry = active[going], state[going], context[going], decision.carry[going]
        return Inference(logits, steps)

    def infer_all_steps(self, inputs: Tensor, mode: HaltingMode = "threshold", uniforms: Tensor | None = None,
                        generator: torch.Generator | None = None) -> Inference:
        """The same answer without early exit: every sample runs every step, then the halting step is selected."""
        uniforms = self._uniforms(len(inputs), mode, inputs.device, generator) if uniforms is None else uniforms
        trace = self.trace(inputs)
        carry = torch.zeros(len(inputs), device=inputs.device)
        done = torch.zeros(len(inputs), dtype=torch.bool, device=inputs.device)
        logits = torch.zeros(len(inputs), self.hparams.num_classes, device=inputs.device)
        steps = torch.zeros(len(inputs), dtype=torch.long, device=inputs.device)
        for step in range(1, self.max_steps + 1):
            decision = self.controller.decide(step, trace.halt_logits[step - 1], carry, uniforms[step - 1], self.max_steps)
            logits += (~done).float()[:, None] * decision.weight[:, None] * trace.step_logits[step - 1].float()
            steps = torch.where(~done & decision.halt, step, steps)
            done, carry = done | decision.halt, decision.carry
        return Inference(logits, steps)

    def forward(self, inputs: Tensor) -> Tensor:
        """Class logits [B, K] with early exit and the ``eval_halting`` rule."""
        return self.infer(inputs, self.hparams.eval_halting).logits

    # --- training and evaluation ----------------------------------------------------------------

    def cost_scale(self) -> float:
        """The warm-up factor of the controller's cost: ``min(1, step / cost_warmup_steps)``."""
        warmup = self.hparams.cost_warmup_steps
        return min(1.0, self.global_step / warmup) if warmup and self.training else 1.0

    def on_fit_start(self) -> None:
        for logger in self.loggers:
            logger.log_metrics({name: float(value) for name, value in self.parameter_counts().items()}, step=0)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        inputs, labels = batch[0], batch[1]
        trace = self.trace(inputs)
        terms = self.controller.training_terms(trace.step_logits, trace.halt_logits, labels, self.cost_scale())
        mean_square_logit = trace.halt_logits.float().square().mean()  # zero without a halting policy
        loss = terms.loss + self.hparams.halt_logit_penalty * mean_square_logit if self.hparams.halt_logit_penalty else terms.loss
        if step_logs_due(self):
            expected_steps = (step_numbers(terms.halt_distribution) * terms.halt_distribution).sum(0).mean()
            logs = dict(terms.logs, halt_logit_rms=mean_square_logit.detach().sqrt()) if self.halting_policy else terms.logs
            self.log_training(loss, terms.logits, labels, task_loss=terms.task_loss, expected_steps=expected_steps,
                              cost_scale=self.cost_scale(), **logs)
        return loss

    def evaluate(self, batch, stage: str) -> None:
        """Accuracy and mean halting step under both halting rules; ``eval_halting``'s are logged unsuffixed."""
        inputs, labels = batch[0], batch[1]
        for mode in ("threshold", "sample"):
            result = self.infer(inputs, mode)
            suffix = "" if mode == self.hparams.eval_halting else f"_{mode}"
            steps = getattr(self, f"{stage}_mean_steps{suffix}")
            steps(result.steps.float())
            self.log_evaluation(stage, result.logits, labels, suffix, mean_steps=steps)
