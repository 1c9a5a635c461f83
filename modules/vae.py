"""Variational autoencoder whose sampling step is bridged two ways: reparameterisation or REINFORCE.

The model (Kingma & Welling 2014; Burda et al. 2016, "Importance Weighted Autoencoders"):

    p(z) = N(0, I),    p_theta(x | z) = Bernoulli(decoder(z))    (or continuous Bernoulli, Gaussian)
    q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2)

trained on the importance-weighted bound (Burda et al., eq. 6), in nats per image:

    log w_k = log p(x, z_k) - log q(z_k | x),   z_1..z_K ~ q(z | x)
    L_K(x)  = log (1/K) sum_k w_k                      (K = 1: the ELBO; K > 1: the IWAE bound)

For ``K = 1`` the loss is the usual ``-ELBO = reconstruction + KL`` with the KL in closed form
(Kingma & Welling, appendix B). The two estimators differ ONLY in the gradient of the encoder phi:

- ``reparam``: ``z = mu + sigma * eps`` is differentiable, backprop goes through the sample.
- ``score_function``: ``z`` is sampled without gradient, the sample is an action, and the encoder is
  trained by the shared :class:`~modules.policy_gradient.ScoreFunctionEstimator`. Differentiating
  ``L_K`` with the samples held fixed gives (Mnih & Rezende 2016, VIMCO, eq. 5)

      grad_phi L_K = E[ sum_k (L_K - w~_k) grad_phi log q(z_k | x) ],   w~_k = w_k / sum_j w_j

  (the ``- w~_k`` is the part of the gradient through ``log q`` inside ``log w_k``; for ``K = 1``
  it is the constant 1 and the signal is the ELBO integrand ``log p(x, z) - log q(z | x)``, NVIL's
  learning signal, Mnih & Gregor 2014, eq. 7). The reward of sample ``k`` is ``L_K - w~_k``.
  NVIL's control variates (sec. 3.3) are used with it: a moving average of the signal (the
  estimator's own ``reward_mean`` state) plus a learned input-dependent baseline ``C_psi(x)`` fitted
  to the residual, and variance normalisation by the running std of the advantage.

The decoder is trained by backprop in both cases (with the samples fixed, the bound is an ordinary
differentiable function of theta).
"""

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.distributions import ContinuousBernoulli
from torchmetrics import MeanMetric, Metric

from modules.errors import ConfigError, require
from modules.networks import _ACTIVATIONS, Activation, ImageEncoder, mlp
from modules.step_logging import step_logs_due
from modules.policy_gradient import AdvantageNormalization, ScoreFunctionEstimator, gradient_variance

Likelihood = Literal["bernoulli", "continuous_bernoulli", "gaussian"]
Network = Literal["mlp", "cnn"]
_LOG_2PI = math.log(2 * math.pi)


# --- building blocks: plain nn.Modules ---------------------------------------------------------


class GaussianEncoder(nn.Module):
    """``q(z | x) = N(mu(x), diag exp(log_var(x)))``: an image trunk (:class:`ImageEncoder`) and one linear head."""

    def __init__(self, trunk: ImageEncoder, latent_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.out_features, 2 * latent_dim)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, log_var)``, each ``[B, latent_dim]``."""
        mu, log_var = self.head(self.trunk(images)).chunk(2, dim=-1)
        return mu, log_var


class ImageDecoder(nn.Module):
    """``z [..., latent_dim]`` to the likelihood's per-pixel parameters ``[..., C*H*W]`` (logits or means).

    ``mlp`` mirrors the encoder's hidden sizes; ``cnn`` is a linear layer to 64x(H/4)x(W/4) and two
    stride-2 transposed convolutions (32 channels, then C), the mirror of the small CNN encoder.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int,
        network: Network = "mlp",
        hidden_sizes: Sequence[int] = (200, 200),
        activation: Activation = "tanh",
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.num_pixels = channels * height * width
        if network == "mlp":
            self.net = mlp([latent_dim, *reversed(hidden_sizes), self.num_pixels], activation)
        else:
            act = _ACTIVATIONS[activation]
            self.net = nn.Sequential(
                nn.Linear(latent_dim, 64 * (height // 4) * (width // 4)), act(),
                nn.Unflatten(-1, (64, height // 4, width // 4)),
                nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), act(),
                nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
                nn.Flatten(),
            )
        self.network = network

    def forward(self, z: Tensor) -> Tensor:
        if self.network == "mlp":
            return self.net(z)
        batch_shape = z.shape[:-1]
        return self.net(z.reshape(-1, z.shape[-1])).reshape(*batch_shape, self.num_pixels)


class PixelLikelihood(nn.Module):
    """``log p(x | z)`` summed over pixels, from the decoder's output.

    ``bernoulli`` (binary images; the output is logits), ``continuous_bernoulli`` (grey levels in
    [0, 1], Loaiza-Ganem & Cunningham 2019; logits) or ``gaussian`` (the output is the mean; one
    learned log-scale per pixel, initialised at ``log 1``).
    """

    def __init__(self, kind: Likelihood, num_pixels: int) -> None:
        super().__init__()
        self.kind = kind
        self.log_scale = nn.Parameter(torch.zeros(num_pixels)) if kind == "gaussian" else None

    def forward(self, params: Tensor, x: Tensor) -> Tensor:
        """``params [..., B, D]``, ``x [B, D]`` -> ``log p(x | z) [..., B]``."""
        x = x.expand_as(params)
        if self.kind == "bernoulli":
            return -F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(-1)
        if self.kind == "continuous_bernoulli":
            return ContinuousBernoulli(logits=params, validate_args=False).log_prob(x).sum(-1)
        return -0.5 * (_LOG_2PI + 2 * self.log_scale + ((x - params) * torch.exp(-self.log_scale)).pow(2)).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        """The expected image ``E[x | z]`` (what the pictures show)."""
        if self.kind == "bernoulli":
            return params.sigmoid()
        if self.kind == "continuous_bernoulli":
            return ContinuousBernoulli(logits=params, validate_args=False).mean
        return params


def gaussian_log_density(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """``log N(z; mu, diag exp(log_var))`` summed over the last axis."""
    return -0.5 * (_LOG_2PI + log_var + (z - mu).pow(2) * torch.exp(-log_var)).sum(-1)


def standard_normal_log_density(z: Tensor) -> Tensor:
    return -0.5 * (_LOG_2PI + z.pow(2)).sum(-1)


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """``KL(N(mu, diag exp(log_var)) || N(0, I))`` in closed form (Kingma & Welling 2014, appendix B)."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)


class ActiveUnits(Metric):
    """Number of active latent units (Burda et al. 2016, sec. 5.2): ``A_d = Cov_x(E_q[z_d | x]) > threshold``.

    Accumulates the posterior means over an epoch (sums, so it syncs under DDP) and counts the
    dimensions whose variance across images exceeds ``threshold``; collapsed units stay at the prior.
    """

    full_state_update = False

    def __init__(self, latent_dim: int, threshold: float = 0.01) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("total", torch.zeros(latent_dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros(latent_dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, posterior_mean: Tensor) -> None:
        posterior_mean = posterior_mean.detach().double()
        self.total += posterior_mean.sum(0)
        self.total_sq += posterior_mean.pow(2).sum(0)
        self.count += len(posterior_mean)

    def compute(self) -> Tensor:
        mean = self.total / self.count
        variance = self.total_sq / self.count - mean.pow(2)
        return (variance > self.threshold).sum().float()


@dataclass
class BoundTerms:
    """One evaluation of the bound on a batch; per-image tensors are ``[B]``, per-sample ``[K, B]``."""

    log_w: Tensor  # log p(x, z_k) - log q(z_k | x) (prior term weighted by the KL warm-up)
    bound: Tensor  # L_K = logsumexp_k log_w - log K
    log_q: Tensor  # log q(z_k | x), differentiable w.r.t. the encoder
    reconstruction: Tensor  # -(1/K) sum_k log p(x | z_k)
    kl: Tensor  # KL(q(z | x) || p(z)), analytic
    posterior_mean: Tensor  # mu(x) [B, Z]


# --- the LightningModule --------------------------------------------------------------------------


class VAE(LightningModule):
    """VAE (``k = 1``) or IWAE (``k > 1``) on images, with the encoder trained by either estimator.

    Args:
        image_shape: ``[channels, height, width]`` (must match the datamodule's).
        latent_dim: size of z (Burda et al.: 50; 2 gives the latent-manifold pictures).
        network: ``mlp`` (Burda et al.'s 784-200-200-z) or ``cnn`` (small conv encoder/decoder, 28x28).
        hidden_sizes: hidden widths of the MLP, mirrored in the decoder (``[400]`` for 784-400-z).
        activation: nonlinearity (Burda et al.: tanh).
        likelihood: ``bernoulli`` for binarised images, ``continuous_bernoulli`` or ``gaussian`` for grey.
        estimator: gradient of the encoder: ``reparam`` (pathwise) or ``score_function`` (REINFORCE).
        k: importance samples per image in the training bound (1: ELBO, >1: IWAE).
        baseline: control variates of the score-function path: ``nvil`` (moving average + learned
            input-dependent baseline), ``moving_average`` or ``none``.
        normalize_advantage: ``running`` is NVIL's variance normalisation; see the estimator.
        baseline_momentum: decay of the estimator's moving averages.
        baseline_hidden: hidden width of the learned baseline ``C_psi(x)`` (NVIL: one tanh layer of 100).
        kl_warmup_steps: the prior/posterior term is weighted by ``min(1, step / kl_warmup_steps)`` (0: off).
        lr: Adam learning rate.
        eval_k: importance samples per image for ``test/nll`` (Burda et al.: 5000).
        eval_chunk: samples evaluated at once for ``test/nll``; bounds memory at ``eval_chunk x B x pixels``.
        grad_variance_every: measure the encoder-gradient variance every this many steps (0: never), on
            the first training batch; a multiple of the trainer's ``log_every_n_steps`` (default 50).
        grad_variance_repeats: re-samplings of z on the fixed batch for that measurement.
        compile: ``torch.compile`` the bound (encoder, decoder and loss; the first step compiles). Measured on
            2 shared CPU cores with the 784-200-200-50 MLP it did not pay (benchmarks/vae.py --compile).
    """

    monitor = "val/loss"  # -L_K in nats per image, the objective being trained
    monitor_mode = "min"

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        latent_dim: int = 50,
        network: Network = "mlp",
        hidden_sizes: tuple[int, ...] = (200, 200),
        activation: Activation = "tanh",
        likelihood: Likelihood = "bernoulli",
        estimator: Literal["reparam", "score_function"] = "reparam",
        k: int = 1,
        baseline: Literal["nvil", "moving_average", "none"] = "nvil",
        normalize_advantage: AdvantageNormalization = "running",
        baseline_momentum: float = 0.9,
        baseline_hidden: int = 100,
        kl_warmup_steps: int = 0,
        lr: float = 1e-3,
        eval_k: int = 5000,
        eval_chunk: int = 100,
        grad_variance_every: int = 200,
        grad_variance_repeats: int = 8,
        compile: bool = False,
    ) -> None:
        super().__init__()
        require(len(image_shape) == 3 and min(image_shape) > 0, f"--model.init_args.image_shape must be [C, H, W], got {image_shape}")
        require(latent_dim >= 1, f"--model.init_args.latent_dim must be >= 1, got {latent_dim}")
        require(network in ("mlp", "cnn"), f"--model.init_args.network must be mlp or cnn, got {network!r}")
        require(
            network != "cnn" or (image_shape[1] % 4 == 0 and image_shape[2] % 4 == 0),
            f"--model.init_args.network cnn needs height and width divisible by 4, got {list(image_shape)}",
        )
        require(likelihood in Likelihood.__args__, f"--model.init_args.likelihood must be one of {Likelihood.__args__}, got {likelihood!r}")
        require(estimator in ("reparam", "score_function"), f"--model.init_args.estimator must be reparam or score_function, got {estimator!r}")
        require(baseline in ("nvil", "moving_average", "none"), f"--model.init_args.baseline must be nvil, moving_average or none, got {baseline!r}")
        require(k >= 1, f"--model.init_args.k must be >= 1, got {k}")
        require(eval_k >= 1 and eval_chunk >= 1, f"--model.init_args.eval_k and eval_chunk must be >= 1, got {eval_k}, {eval_chunk}")
        require(kl_warmup_steps >= 0, f"--model.init_args.kl_warmup_steps must be >= 0, got {kl_warmup_steps}")
        require(lr > 0, f"--model.init_args.lr must be > 0, got {lr}")
        self.save_hyperparameters()
        num_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.encoder = GaussianEncoder(ImageEncoder(image_shape, network, hidden_sizes, activation), latent_dim)
        self.decoder = ImageDecoder(image_shape, latent_dim, network, hidden_sizes, activation)
        self.likelihood = PixelLikelihood(likelihood, num_pixels)
        self.score_function = estimator == "score_function"
        # NVIL's input-dependent baseline C_psi(x); reads the pixels, never shapes the encoder
        self.baseline_net = mlp([num_pixels, baseline_hidden, 1], "tanh") if self.score_function and baseline == "nvil" else None
        self.estimator = ScoreFunctionEstimator(
            baseline={"nvil": "learned", "moving_average": "moving_average", "none": "none"}[baseline],
            baseline_momentum=baseline_momentum,
            normalize_advantage=normalize_advantage,
        )
        self.bound_fn = torch.compile(self.bound, dynamic=False) if compile else self.bound
        self._variance_images: Tensor | None = None  # the fixed batch of the gradient-variance measurement
        self.train_active_units = ActiveUnits(latent_dim)
        for stage in ("val", "test"):
            for name in ("loss", "elbo", "reconstruction", "kl"):
                setattr(self, f"{stage}_{name}", MeanMetric())
            setattr(self, f"{stage}_active_units", ActiveUnits(latent_dim))
        self.test_nll = MeanMetric()

    # --- the model ------------------------------------------------------------------------------

    def forward(self, images: Tensor) -> Tensor:
        """The posterior mean ``mu(x) [B, latent_dim]`` (the image's code)."""
        return self.encoder(images)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Expected images ``[N, C, H, W]`` for codes ``z [N, latent_dim]``."""
        return self.likelihood.mean(self.decoder(z)).reshape(-1, *self.hparams.image_shape)

    def reconstruct(self, images: Tensor) -> Tensor:
        """Expected images decoded from the posterior means."""
        return self.decode(self(images))

    def kl_weight(self) -> float:
        warmup = self.hparams.kl_warmup_steps
        return min(1.0, self.global_step / warmup) if warmup and self.training else 1.0

    def bound(self, images: Tensor, k: int, kl_weight: float = 1.0, reparameterize: bool = True) -> BoundTerms:
        """Draw ``k`` samples per image and evaluate ``log w`` and ``L_K`` (Burda et al., eq. 6).

        With ``reparameterize=False`` the samples carry no gradient and ``log w`` is built from a
        detached ``log q``: every gradient the encoder gets must then come from ``log_q`` through the
        score-function estimator.
        """
        x = images.flatten(1)  # [B, D]
        mu, log_var = self.encoder(images)  # [B, Z] each
        eps = torch.randn((k, *mu.shape), device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * log_var) * eps  # [K, B, Z]
        if not reparameterize:
            z = z.detach()
        log_q = gaussian_log_density(z, mu, log_var)  # [K, B]
        log_p_x_given_z = self.likelihood(self.decoder(z), x)  # [K, B]
        log_prior_ratio = standard_normal_log_density(z) - (log_q if reparameterize else log_q.detach())
        log_w = log_p_x_given_z + kl_weight * log_prior_ratio
        bound = torch.logsumexp(log_w, dim=0) - math.log(k)
        return BoundTerms(log_w, bound, log_q, -log_p_x_given_z.mean(0), gaussian_kl(mu, log_var), mu)

    def loss(self, images: Tensor, update_statistics: bool = True) -> tuple[Tensor, BoundTerms, Tensor]:
        """``(loss to minimise, bound terms, encoder surrogate)`` for one batch.

        The encoder surrogate is the part of the loss whose gradient w.r.t. phi is the estimator's
        estimate of ``-grad_phi L_K``: the whole loss for ``reparam``, the estimator's policy loss
        (summed over samples) for ``score_function``.
        """
        k, beta = self.hparams.k, self.kl_weight()
        terms = self.bound_fn(images, k, beta, not self.score_function)
        if not self.score_function:
            # k = 1: the closed-form KL replaces its one-sample estimate (same mean, less variance)
            loss = (terms.reconstruction + beta * terms.kl).mean() if k == 1 else -terms.bound.mean()
            return loss, terms, loss
        decoder_loss = -terms.bound.mean()  # gradient reaches the decoder only: z and log q are detached
        normalized_weights = torch.softmax(terms.log_w.detach(), dim=0)  # w~_k [K, B]
        signal = terms.bound.detach() - normalized_weights  # VIMCO eq. 5 per-sample signal, [K, B]
        value = None
        if self.baseline_net is not None:
            # NVIL: the moving average of the signal centres it; C_psi(x) is fitted to what is left
            started = self.estimator.num_updates > 0
            centre = torch.where(started, self.estimator.reward_mean, signal.mean()).detach()
            value = self.baseline_net(images.flatten(1)).squeeze(-1) + centre  # [B]
        estimate = self.estimator(terms.log_q, signal, value=value, sample_dim=0, update_statistics=update_statistics)
        # the estimator averages over the K*B entries; the gradient of L_K sums over the K samples
        encoder_loss = k * estimate.policy_loss
        loss = decoder_loss + encoder_loss + self.estimator.value_coef * estimate.baseline_loss
        return loss, terms, encoder_loss

    # --- checks ---------------------------------------------------------------------------------

    def check_datamodule(self, datamodule) -> None:
        """Fail before training if the data does not fit the network or the likelihood."""
        image_shape = getattr(datamodule, "image_shape", None)
        if image_shape is None:
            raise ConfigError(
                f"VAE needs an image datamodule with image_shape; {type(datamodule).__name__} has none: "
                "use datamodules.vision.VisionDataModule with --data.init_args.variant binarized"
            )
        require(
            tuple(image_shape) == tuple(self.hparams.image_shape),
            f"model expects images of shape {list(self.hparams.image_shape)} but the data gives {list(image_shape)}: "
            f"set --model.init_args.image_shape '{list(image_shape)}'",
        )
        variant = getattr(datamodule, "variant", "binarized")
        if self.hparams.likelihood == "bernoulli":
            require(
                variant == "binarized",
                f"--model.init_args.likelihood bernoulli needs binary pixels but the data variant is {variant!r}: "
                "set --data.init_args.variant binarized (or likelihood continuous_bernoulli with --data.init_args.normalize false)",
            )
        elif self.hparams.likelihood == "continuous_bernoulli":
            require(
                variant == "binarized" or not getattr(datamodule, "normalize", False),
                "--model.init_args.likelihood continuous_bernoulli needs pixels in [0, 1]: set --data.init_args.normalize false",
            )

    # --- training and evaluation ----------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images = batch[0]
        loss, terms, _ = self.loss(images)
        self.train_active_units.update(terms.posterior_mean)
        if step_logs_due(self):
            self._log_terms("train", loss, terms)
            every = self.hparams.grad_variance_every
            if every and self._variance_images is not None and (self.global_step + 1) % every == 0:
                self.log("train/encoder_grad_variance", self.encoder_gradient_variance(self._variance_images))
        if self._variance_images is None:
            self._variance_images = images.detach().clone()
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/active_units", self.train_active_units.compute())
        self.train_active_units.reset()

    def encoder_gradient_variance(self, images: Tensor) -> Tensor:
        """Variance of the estimate of ``grad_phi L_K`` across re-drawn z on ``images`` (parameters fixed).

        Measured in the units of the bound's gradient for both estimators: the score-function estimate
        is multiplied back by the running-std divisor of the variance normalisation, which only
        rescales the step (Adam is invariant to it) and would otherwise flatter the comparison.
        """
        scale = torch.ones(())
        if self.score_function and self.estimator.normalize_advantage == "running":
            scale = self.estimator.advantage_var.sqrt().clamp(min=1.0)
        with torch.enable_grad():
            return gradient_variance(
                lambda: self.loss(images, update_statistics=False)[2] * scale,
                list(self.encoder.parameters()),
                self.hparams.grad_variance_repeats,
            )

    def _log_terms(self, stage: str, loss: Tensor, terms: BoundTerms) -> None:
        """Per step for ``train``; for ``val``/``test`` through metrics averaged (and synced) over the epoch."""
        values = {
            "loss": loss.detach(),
            "elbo": -(terms.reconstruction + terms.kl).detach(),
            "reconstruction": terms.reconstruction.detach(),
            "kl": terms.kl.detach(),
        }
        if stage == "train":
            self.log_dict({f"train/{name}": value.mean() for name, value in values.items()}, on_step=True, on_epoch=False)
            return
        for name, value in values.items():
            metric = getattr(self, f"{stage}_{name}")
            metric.update(value)
            self.log(f"{stage}/{name}", metric, prog_bar=name == "loss")
        active_units = getattr(self, f"{stage}_active_units")
        active_units.update(terms.posterior_mean)
        self.log(f"{stage}/active_units", active_units)

    def _evaluate(self, images: Tensor, stage: str) -> BoundTerms:
        terms = self.bound(images, self.hparams.k)
        loss = -terms.bound.mean()
        self._log_terms(stage, loss, terms)
        return terms

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch[0], "val")

    def test_step(self, batch, batch_idx: int) -> None:
        images = batch[0]
        self._evaluate(images, "test")
        self.test_nll(self.importance_sampled_nll(images, self.hparams.eval_k, self.hparams.eval_chunk))
        self.log("test/nll", self.test_nll)

    @torch.no_grad()
    def importance_sampled_nll(self, images: Tensor, num_samples: int, chunk: int = 100) -> Tensor:
        """``-log p(x) ~= -log (1/S) sum_s p(x, z_s) / q(z_s | x)`` per image ``[B]`` (Burda et al., sec. 5.1).

        The ``S`` samples are drawn ``chunk`` at a time and combined with one logsumexp at the end.
        """
        x = images.flatten(1)
        mu, log_var = self.encoder(images)
        std = torch.exp(0.5 * log_var)
        log_w = []
        for start in range(0, num_samples, chunk):
            size = min(chunk, num_samples - start)
            z = mu + std * torch.randn((size, *mu.shape), device=mu.device, dtype=mu.dtype)
            log_w.append(self.likelihood(self.decoder(z), x) + standard_normal_log_density(z) - gaussian_log_density(z, mu, log_var))
        return -(torch.logsumexp(torch.cat(log_w), dim=0) - math.log(num_samples))

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
