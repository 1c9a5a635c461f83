"""Classification as a one-step RL problem, trained by REINFORCE alone on the 0/1 reward.

State ``s`` = an image, action ``a ~ pi_theta(. | s) = softmax(f_theta(s))`` = a class, reward
``R = 1[a = y]``. The expected reward ``E[R] = pi_theta(y | s)`` is what accuracy measures, but the
sampled 0/1 reward has no gradient; the score-function estimator (Williams 1992, eq. 11)

    grad E[R] ~= 1/S sum_i (R_i - b_i) grad log pi_theta(a_i | s),   a_i ~ pi_theta(. | s), i = 1..S

trains the same network anyway. ``objective="cross_entropy"`` trains it by backprop for comparison.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical
from torchmetrics import MeanMetric

from modules.classifier import Classifier
from modules.errors import require
from modules.networks import Activation, ImageEncoder
from modules.policy_gradient import AdvantageNormalization, Baseline, ScoreFunctionEstimator, gradient_variance
from modules.step_logging import step_logs_due


class ReinforceClassifier(Classifier):
    """An image classifier whose only training signal is the sampled 0/1 reward (or cross-entropy).

    Args:
        num_classes: number of classes (must match the datamodule's).
        image_shape: ``[channels, height, width]`` of the input images (must match the datamodule's).
        network: ``mlp`` on the pixels or a small ``cnn``.
        hidden_sizes: widths of the hidden layers (the ``cnn`` uses the last one after its convolutions).
        activation: nonlinearity between layers.
        objective: ``reinforce`` (score-function estimator on the 0/1 reward) or ``cross_entropy``.
        num_samples: actions sampled per image for the estimator (``leave_one_out`` needs >= 2).
        baseline: control variate of the estimator, see :mod:`modules.policy_gradient`.
        entropy_coef: entropy bonus weight; keeps the policy from committing to a class too early.
        normalize_advantage: advantage normalisation of the estimator.
        baseline_momentum: decay of the moving-average baseline.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        grad_variance_every: measure the estimator's gradient variance every this many training steps (0: never);
            use a multiple of the trainer's ``log_every_n_steps`` (default 50), or it is never written.
        grad_variance_repeats: independent re-samplings of the actions used for that measurement.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        network: Literal["mlp", "cnn"] = "mlp",
        hidden_sizes: tuple[int, ...] = (256, 256),
        activation: Activation = "relu",
        objective: Literal["reinforce", "cross_entropy"] = "reinforce",
        num_samples: int = 32,
        baseline: Baseline = "leave_one_out",
        entropy_coef: float = 0.1,
        normalize_advantage: AdvantageNormalization = "none",
        baseline_momentum: float = 0.9,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        grad_variance_every: int = 200,
        grad_variance_repeats: int = 8,
    ) -> None:
        super().__init__(num_classes, image_shape)
        require(num_samples >= 1, f"--model.init_args.num_samples must be >= 1, got {num_samples}")
        require(
            baseline != "leave_one_out" or num_samples >= 2 or objective == "cross_entropy",
            "--model.init_args.baseline leave_one_out needs --model.init_args.num_samples >= 2",
        )
        require(lr > 0, f"--model.init_args.lr must be > 0, got {lr}")
        self.save_hyperparameters()
        self.encoder = ImageEncoder(image_shape, network, hidden_sizes, activation)
        self.policy_head = nn.Linear(self.encoder.out_features, num_classes)
        # input-dependent baseline V(s) ~ E[R | s]; reads detached features so it never shapes them
        self.value_head = nn.Linear(self.encoder.out_features, 1) if baseline == "learned" else None
        self.estimator = ScoreFunctionEstimator(
            baseline=baseline,
            baseline_momentum=baseline_momentum,
            entropy_coef=entropy_coef,
            normalize_advantage=normalize_advantage,
        )
        self.val_expected_reward = MeanMetric()
        self.test_expected_reward = MeanMetric()

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.policy_head(self.encoder(images))

    def _policy_terms(self, images: Tensor, labels: Tensor, update_statistics: bool = True):
        """Sample ``S`` classes per image, reward them and build the estimator's surrogate."""
        features = self.encoder(images)
        logits = self.policy_head(features)  # [B, K]
        policy = Categorical(logits=logits)
        actions = policy.sample((self.hparams.num_samples,))  # [S, B]
        log_prob = policy.log_prob(actions)  # [S, B]
        reward = (actions == labels).float()  # [S, B], 1 if the sampled class is right
        value = self.value_head(features.detach()).squeeze(-1) if self.value_head is not None else None
        greedy_reward = (logits.argmax(-1) == labels).float() if self.hparams.baseline == "self_critical" else None
        terms = self.estimator(
            log_prob, reward, entropy=policy.entropy(), value=value, greedy_reward=greedy_reward,
            sample_dim=0, update_statistics=update_statistics,
        )
        return logits, terms

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, labels = batch
        if self.hparams.objective == "cross_entropy":
            logits = self(images)
            loss = F.cross_entropy(logits, labels)
            if step_logs_due(self):
                self.log_training(loss, logits, labels)
            return loss
        logits, terms = self._policy_terms(images, labels)
        if step_logs_due(self):
            self.log_training(terms.loss, logits, labels, reward=terms.reward, entropy=terms.entropy,
                              baseline_loss=terms.baseline_loss.detach())
            every = self.hparams.grad_variance_every
            if every and (self.global_step + 1) % every == 0:
                self.log("train/grad_variance", self._estimator_gradient_variance(images, labels))
        return terms.loss

    def _estimator_gradient_variance(self, images: Tensor, labels: Tensor) -> Tensor:
        """Variance of the policy gradient across re-sampled actions on this batch (network fixed)."""
        with torch.enable_grad():
            return gradient_variance(
                lambda: self._policy_terms(images, labels, update_statistics=False)[1].policy_loss,
                [*self.encoder.parameters(), *self.policy_head.parameters()],
                self.hparams.grad_variance_repeats,
            )

    def evaluate(self, batch, stage: str) -> None:
        images, labels = batch
        logits = self(images)
        expected_reward = getattr(self, f"{stage}_expected_reward")
        # the exact expected 0/1 reward of the stochastic policy: pi(y | s)
        expected_reward(logits.softmax(-1).gather(1, labels[:, None]).squeeze(1))
        self.log_evaluation(stage, logits, labels, expected_reward=expected_reward)
