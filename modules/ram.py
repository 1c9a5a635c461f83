"""The Recurrent Attention Model (Mnih et al. 2014, "Recurrent Models of Visual Attention"): hard attention by REINFORCE.

The network looks at an image through ``T = num_glimpses`` small multi-resolution glimpses. At each step

    g_t = f_g(x, l_{t-1}),   h_t = f_h(h_{t-1}, g_t),   l_t ~ pi(. | h_t) = N(tanh(W h_t), std^2 I),

and after the last glimpse ``f_a(h_T)`` classifies. Where to look is sampled, so the classification loss
cannot reach the location network; it is trained by the score-function estimator on the reward
``R = 1[argmax f_a(h_T) = y]`` (Sec. 3.2, eq. 2 with the baseline ``b_t`` of the same section):

    grad J ~= sum_{t=1}^{T-1} grad log pi(l_t | h_t) (R - b_t),    b_t = Linear(h_t) regressed onto R,

or, with ``train_samples = S`` paths per image and ``baseline="leave_one_out"``, ``b`` = the mean reward of
the image's other ``S - 1`` paths (Kool et al. 2019; what the cluttered configs use, see the README),

while the glimpse, core and action networks are trained by backprop on the cross-entropy (the hybrid
loss of Sec. 4). The sampled locations are detached before they enter the glimpse network, so the
cross-entropy never reaches the policy; by default the policy and the baseline read a detached
``h_t``, so REINFORCE never reaches the core either (``policy_detach_state=False`` lets it, as in the
paper's all-parameter gradient).
"""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from modules.classifier import ClassificationReward, Classifier, LrSchedule, classification_reward, require_optimizer_options
from modules.errors import require
from modules.glimpse import BaselineNetwork, CoreKind, CoreNetwork, GlimpseNetwork, GlimpseSensor, LocationPolicy
from modules.policy_gradient import ScoreFunctionEstimator
from modules.step_logging import step_logs_due

RAMBaseline = Literal["learned", "moving_average", "leave_one_out", "none"]


@dataclass
class Rollout:
    """One pass of ``T`` glimpses over a batch."""

    logits: Tensor  # [B, K] class scores after the last glimpse
    locations: Tensor  # [T, B, 2] where each glimpse looked (l_0 .. l_{T-1}), detached
    log_prob: Tensor | None  # [T-1, B] log pi(l_t | h_t) of the chosen locations (None for random glimpses)
    baseline: Tensor | None  # [T-1, B] b_t (learned baseline only)
    location_mean: Tensor | None  # [T-1, B, 2] the policy's means, detached


class RecurrentAttentionModel(Classifier):
    """Hard-attention classifier: glimpse sensor + RNN core + Gaussian location policy trained by REINFORCE.

    Args:
        num_classes: number of classes (must match the datamodule's).
        image_shape: ``[channels, height, width]`` of the inputs (must match the datamodule's).
        num_glimpses: glimpses ``T`` per image; ``T - 1`` locations are chosen by the policy.
        glimpse_size: side ``g`` of each retina patch in pixels (paper: 8 on 28x28, 12 on 60x60 and 100x100).
        num_scales: patches per glimpse, each ``scale_factor`` times wider than the last (paper: 1, 3 or 4).
        scale_factor: width ratio of successive patches.
        what_size, where_size, glimpse_features: widths of ``h_g``, ``h_l`` and ``g_t`` (paper: 128, 128, 256).
        hidden_size: core state width (paper: 256).
        core: ``rnn`` (the paper's rectifier RNN) or ``lstm``.
        location_policy: ``learned`` (Gaussian policy trained by REINFORCE) or ``random`` (ablation: every
            glimpse location uniform on ``[-1, 1]^2``, no policy, no REINFORCE term).
        location_std: the policy's standard deviation (initial value when ``learn_std``), in units of half the image.
        learn_std: learn one log-std per coordinate (by REINFORCE) instead of keeping it fixed.
        policy_detach_state: the policy and baseline read a detached ``h_t`` (REINFORCE trains the location network only).
        policy_input_norm: the location network reads ``LayerNorm(h_t)``, independent of the core state's scale
            (an ablation; see :class:`modules.glimpse.LocationPolicy`).
        clamp_location: a sampled location outside ``[-1, 1]^2`` is clamped onto the canvas edge (default); false
            glimpses where it was sampled, and the sensor reads zeros beyond the edge (an ablation: clamped, every
            sample past the edge gives the same glimpse).
        first_location: ``center`` (``l_0 = (0, 0)``) or ``random`` (uniform ``l_0``).
        baseline: control variate of the estimator: ``learned`` (per-step ``b_t = Linear(h_t)``),
            ``moving_average``, ``leave_one_out`` (each rollout's baseline is the mean reward of the other
            ``train_samples - 1`` rollouts of the same image; Kool et al. 2019) or ``none`` (ablation).
        reward: what REINFORCE rewards: ``correct`` (the paper's ``R = 1`` if the final classification is right) or
            ``neg_loss`` (the log-probability of the label, as in Ba et al. 2015, Sec. 3: graded where the 0/1 reward is flat).
        train_samples: rollouts per training image (the batch is repeated ``S`` times): ``S`` glimpse paths
            for the same image, which ``leave_one_out`` needs (``>= 2``); a training step costs ``S`` times more.
        reinforce_weight: weight of the REINFORCE term (summed over the ``T - 1`` decisions) in the hybrid loss.
        baseline_coef: weight of the baseline's squared-error regression onto the reward.
        mc_samples: test-time Monte Carlo rollouts whose class probabilities are averaged; one accuracy each.
        val_mc_samples: the same during validation (kept small: each rollout is a full pass).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        lr_schedule: ``constant``, or ``cosine``: the rate decays to 0 along a half cosine over the fit (per step).
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_glimpses: int = 6,
        glimpse_size: int = 8,
        num_scales: int = 1,
        scale_factor: int = 2,
        what_size: int = 128,
        where_size: int = 128,
        glimpse_features: int = 256,
        hidden_size: int = 256,
        core: CoreKind = "rnn",
        location_policy: Literal["learned", "random"] = "learned",
        location_std: float = 0.1,
        learn_std: bool = False,
        policy_detach_state: bool = True,
        policy_input_norm: bool = False,
        clamp_location: bool = True,
        first_location: Literal["center", "random"] = "center",
        baseline: RAMBaseline = "learned",
        reward: ClassificationReward = "correct",
        train_samples: int = 1,
        reinforce_weight: float = 1.0,
        baseline_coef: float = 1.0,
        mc_samples: tuple[int, ...] = (1, 10),
        val_mc_samples: tuple[int, ...] = (1,),
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: LrSchedule = "constant",
    ) -> None:
        super().__init__(num_classes, image_shape)
        require(num_glimpses >= 1, f"--model.init_args.num_glimpses must be >= 1, got {num_glimpses}")
        require(location_policy in ("learned", "random"), f"--model.init_args.location_policy must be learned or random, got {location_policy!r}")
        require(first_location in ("center", "random"), f"--model.init_args.first_location must be center or random, got {first_location!r}")
        require(baseline in RAMBaseline.__args__, f"--model.init_args.baseline must be one of {RAMBaseline.__args__}, got {baseline!r}")
        require(all(m >= 1 for m in (*mc_samples, *val_mc_samples)),
                f"--model.init_args.mc_samples and val_mc_samples must be >= 1, got {list(mc_samples)} and {list(val_mc_samples)}")
        require(reward in ClassificationReward.__args__,
                f"--model.init_args.reward must be one of {ClassificationReward.__args__}, got {reward!r}")
        require(train_samples >= 1, f"--model.init_args.train_samples must be >= 1, got {train_samples}")
        require(baseline != "leave_one_out" or train_samples >= 2 or location_policy == "random",
                "--model.init_args.baseline leave_one_out needs --model.init_args.train_samples >= 2")
        require(reinforce_weight >= 0 and baseline_coef >= 0, "--model.init_args.reinforce_weight and baseline_coef must be >= 0")
        require_optimizer_options(lr, lr_schedule)
        self.save_hyperparameters()
        channels = image_shape[0]
        self.glimpse = GlimpseNetwork(GlimpseSensor(glimpse_size, num_scales, scale_factor), channels,
                                      what_size, where_size, glimpse_features)
        self.core = CoreNetwork(glimpse_features, hidden_size, core)
        self.classifier = nn.Linear(hidden_size, num_classes)  # the action network f_a
        learned = location_policy == "learned"
        # modules that would get no gradient are not built at all (DDP needs every parameter used)
        self.location_policy = LocationPolicy(hidden_size, location_std, learn_std, policy_detach_state, policy_input_norm) if learned else None
        self.baseline_net = BaselineNetwork(hidden_size) if learned and baseline == "learned" else None
        self.estimator = ScoreFunctionEstimator(baseline=baseline) if learned else None
        # accuracy of the class probabilities averaged over m sampled rollouts, one metric per stage and m
        self.mc_accuracy = nn.ModuleDict({
            f"{stage}_mc{m}": MulticlassAccuracy(num_classes, average="micro")
            for stage, samples in (("val", val_mc_samples), ("test", mc_samples)) for m in samples
        })

    # --- the model ------------------------------------------------------------------------------

    def _uniform_location(self, batch: int, reference: Tensor) -> Tensor:
        return torch.rand(batch, 2, device=reference.device) * 2 - 1

    def rollout(self, images: Tensor, greedy: bool = False, looks: Tensor | None = None, paths: int = 1) -> Rollout:
        """Glimpse ``T`` times; ``greedy`` looks at the policy's mean instead of sampling (random glimpses stay random).

        ``paths``: rollouts of every image, row ``s B + b`` of the result being path ``s`` of image ``b`` (the
        images are not repeated: the sensor reads all paths from one summed-area table per image).
        ``looks`` [T-1, paths B, 2]: glimpse there instead of where the policy (or chance) would, for analysis
        (e.g. on the object itself); no log-probabilities are then returned.
        """
        batch = paths * len(images)
        steps = self.hparams.num_glimpses
        state = self.core.initial_state(batch, images)
        table = self.glimpse.sensor.summed_area_table(images)  # built once: all T glimpses of all paths read from it
        location = (images.new_zeros(batch, 2) if self.hparams.first_location == "center"
                    else self._uniform_location(batch, images))
        locations, log_probs, baselines, means = [location], [], [], []
        for t in range(steps):
            state = self.core(self.glimpse(images, location, table), state)
            if t == steps - 1:
                break
            hidden = state[0]
            if looks is not None:
                location = looks[t]
            elif self.location_policy is None:
                location = self._uniform_location(batch, images)
            else:
                policy = self.location_policy(hidden)
                sample = policy.mean if greedy else policy.sample()  # sample() is drawn without grad: detached
                log_probs.append(policy.log_prob(sample).sum(-1))  # [B]: independent x and y
                means.append(policy.mean.detach())
                # the sensor reads outside the image as zeros; clamping keeps the eye on the canvas
                location = sample.detach().clamp(-1.0, 1.0) if self.hparams.clamp_location else sample.detach()
                if self.baseline_net is not None:
                    baselines.append(self.baseline_net(hidden))
            locations.append(location)
        stack = lambda xs: torch.stack(xs) if xs else None  # noqa: E731
        return Rollout(self.classifier(state[0]), torch.stack(locations), stack(log_probs), stack(baselines), stack(means))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``[B, K]`` of the greedy policy."""
        return self.rollout(images, greedy=True).logits

    def glimpse_path(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Greedy locations ``[B, T, 2]`` and class logits ``[B, K]`` (for pictures)."""
        rollout = self.rollout(images, greedy=True)
        return rollout.locations.transpose(0, 1), rollout.logits

    # --- training -------------------------------------------------------------------------------

    def hybrid_loss(self, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor], Rollout]:
        """Cross-entropy + REINFORCE on the locations + baseline regression (Sec. 4).

        Each image is glimpsed ``train_samples`` times (rollout ``s`` of image ``b`` is row ``s B + b``).
        Returns the loss, its differentiable parts (``cross_entropy``, ``reinforce``, ``baseline_loss``) and
        the detached mean ``reward`` (with ``reward: correct``, the sampled rollouts' accuracy), and the rollout.
        """
        samples = self.hparams.train_samples
        labels = labels.repeat(samples)
        rollout = self.rollout(images, paths=samples)
        logits = rollout.logits.float()
        cross_entropy = F.cross_entropy(logits, labels)
        reward = classification_reward(logits, labels, self.hparams.reward)  # [B]: of the final classification
        parts = {"cross_entropy": cross_entropy, "reward": reward.mean()}
        if self.estimator is None or rollout.log_prob is None:
            return cross_entropy, parts, rollout
        decisions = rollout.log_prob.shape[0]
        per_image = lambda x: x.reshape(decisions, samples, -1)  # noqa: E731  [T-1, S, B]: sample_dim 1
        value = per_image(rollout.baseline) if rollout.baseline is not None else None
        terms = self.estimator(per_image(rollout.log_prob), per_image(reward.expand(decisions, -1)), value=value, sample_dim=1)
        # the estimator averages over steps and images; eq. 2 sums over the T - 1 steps
        parts["reinforce"] = decisions * terms.policy_loss
        parts["baseline_loss"] = terms.baseline_loss
        loss = cross_entropy + self.hparams.reinforce_weight * parts["reinforce"] + self.hparams.baseline_coef * terms.baseline_loss
        return loss, parts, rollout

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, labels = batch
        loss, parts, rollout = self.hybrid_loss(images, labels)
        if step_logs_due(self):
            measures = {name: value.detach() for name, value in parts.items()}
            if self.location_policy is not None:
                measures["location_std"] = self.location_policy.log_std.detach().exp().mean()
                # share of policy means pinned at the border: the "policy collapsing to a corner" failure
                measures["location_saturation"] = (rollout.location_mean.abs() > 0.95).float().mean()
            self.log_training(loss, rollout.logits[: len(labels)], labels, **measures)  # the first rollout of each image
        return loss

    # --- evaluation -----------------------------------------------------------------------------

    def evaluate(self, batch, stage: str) -> None:
        """Accuracy of the greedy rollout, and of the class probabilities averaged over ``m`` sampled rollouts."""
        images, labels = batch
        greedy = self(images)
        mc_samples = self.hparams.val_mc_samples if stage == "val" else self.hparams.mc_samples
        measures = {}
        if mc_samples:
            # M sampled rollouts in one batched pass; accuracy of the first m averaged probabilities for each m
            most = max(mc_samples)
            logits = self.rollout(images, paths=most).logits
            probs = logits.float().softmax(-1).reshape(most, len(images), -1)
            mean_probs = probs.cumsum(0)  # [M, B, K]; the argmax of a sum is the argmax of the mean
            for m in mc_samples:
                accuracy = self.mc_accuracy[f"{stage}_mc{m}"]
                accuracy(mean_probs[m - 1].argmax(-1), labels)
                measures[f"acc_mc{m}"] = accuracy
        self.log_evaluation(stage, greedy, labels, **measures)
