"""The VAE/IWAE and its two encoder estimators against closed forms on a linear-Gaussian model, and end to end."""

import math
from pathlib import Path

import pytest
import torch
from torch.distributions import MultivariateNormal

from cli import main
from datamodules.synthetic import ParityDataModule
from datamodules.vision import VisionDataModule
from modules.errors import ConfigError
from modules.vae import VAE, ActiveUnits
from tests.cli_runs import assert_resumed_run_matches_straight_run, fit_on_two_cpu_processes
from tests.trainers import quiet_trainer

ROOT = Path(__file__).resolve().parents[2]
REPARAM = str(ROOT / "configs/vae_fashion_reparam.yaml")
SCORE_FUNCTION = str(ROOT / "configs/vae_fashion_score_function.yaml")
SMOKE = str(ROOT / "configs/presets/smoke.yaml")
FAST = ["--trainer.max_epochs=1", "--data.init_args.train_subset=300", "--data.init_args.val_size=200",
        "--progress_bar.refresh_rate=0", "--model.init_args.eval_k=10", "--trainer.callbacks=[]"]

# --- a linear-Gaussian model where everything is known -------------------------------------------
# p(z) = N(0, I_2), p(x | z) = N(W z + b, sigma^2 I_4); W has orthogonal columns, so the true posterior
# N(S W^T (x - b) / sigma^2, S), S = (I + W^T W / sigma^2)^-1, is diagonal and q can represent it exactly.
W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
B = torch.tensor([0.5, -0.5, 0.2, 0.0])
SIGMA = 0.7
X = torch.tensor([1.2, -0.3, 0.5, -0.4])


def linear_gaussian_vae(posterior_shift: float = 0.0, posterior_log_var_shift: float = 0.0, **kwargs) -> VAE:
    """The model above as a VAE; q is the exact posterior, moved by the given shifts to make it wrong."""
    model = VAE(image_shape=(1, 2, 2), latent_dim=2, hidden_sizes=(), likelihood="gaussian", **kwargs)
    posterior_cov = torch.linalg.inv(torch.eye(2) + W.T @ W / SIGMA**2)
    with torch.no_grad():
        decoder = model.decoder.net[0]
        decoder.weight.copy_(W)
        decoder.bias.copy_(B)
        model.likelihood.log_scale.fill_(math.log(SIGMA))
        head = model.encoder.head  # [mu; log_var] = head(x)
        head.weight.zero_()
        head.weight[:2] = posterior_cov @ W.T / SIGMA**2
        head.bias[:2] = -(posterior_cov @ W.T @ B) / SIGMA**2 + posterior_shift
        head.bias[2:] = torch.diagonal(posterior_cov).log() + posterior_log_var_shift
    return model


def log_marginal(x: torch.Tensor = X) -> float:
    return MultivariateNormal(B, W @ W.T + SIGMA**2 * torch.eye(4)).log_prob(x).item()


def copies(n: int) -> torch.Tensor:
    return X.reshape(1, 1, 2, 2).expand(n, -1, -1, -1)


def analytic_elbo(model: VAE) -> float:
    """E_q[log p(x | z)] - KL(q || p) in closed form for the linear-Gaussian model."""
    with torch.no_grad():
        mu, log_var = model.encoder(X.reshape(1, 1, 2, 2))
        mu, var = mu[0], log_var[0].exp()
        residual = X - (W @ mu + B)
        expected_sq = residual.pow(2).sum() + (W.pow(2) @ var).sum()  # E||x - Wz - b||^2
        expected_log_lik = -0.5 * 4 * math.log(2 * math.pi * SIGMA**2) - expected_sq / (2 * SIGMA**2)
        kl = 0.5 * (mu.pow(2) + var - 1 - var.log()).sum()
    return (expected_log_lik - kl).item()


def test_elbo_equals_its_closed_form_on_a_linear_gaussian_model():
    torch.manual_seed(0)
    model = linear_gaussian_vae(posterior_shift=0.4, posterior_log_var_shift=0.5)
    with torch.no_grad():
        terms = model.bound(copies(200_000), k=1)
    elbo = -(terms.reconstruction + terms.kl)  # the closed-form KL with a sampled reconstruction
    expected = analytic_elbo(model)
    for estimate in (elbo, terms.bound):  # ... and the pure Monte Carlo integrand log w
        standard_error = estimate.std().item() / math.sqrt(len(estimate))
        assert abs(estimate.mean().item() - expected) < 4 * standard_error + 1e-3, (estimate.mean().item(), expected)
    assert expected < log_marginal() - 0.1  # a wrong q leaves a gap


def test_exact_posterior_makes_every_bound_and_the_nll_exact():
    torch.manual_seed(0)
    model = linear_gaussian_vae()
    with torch.no_grad():
        for k in (1, 7):
            terms = model.bound(copies(8), k=k)
            assert torch.allclose(terms.log_w, torch.full_like(terms.log_w, log_marginal()), atol=1e-4)
        # 250 samples in chunks of 100: the last chunk is partial
        nll = model.importance_sampled_nll(copies(3), num_samples=250, chunk=100)
    assert torch.allclose(nll, torch.full_like(nll, -log_marginal()), atol=1e-4)


def test_iwae_bound_rises_with_k_towards_log_likelihood():
    torch.manual_seed(0)
    model = linear_gaussian_vae(posterior_shift=0.6, posterior_log_var_shift=-0.7)
    with torch.no_grad():
        bounds = [model.bound(copies(20_000), k=k).bound for k in (1, 2, 5, 20, 100)]
    means = [b.mean().item() for b in bounds]
    standard_errors = [b.std().item() / math.sqrt(len(b)) for b in bounds]
    for (low, se_low), (high, se_high) in zip(zip(means, standard_errors), zip(means[1:], standard_errors[1:])):
        assert high > low + 2 * (se_low + se_high), means  # strictly rising beyond the noise
    assert means[-1] < log_marginal() + 3 * standard_errors[-1]
    assert log_marginal() - means[-1] < 0.5 * (log_marginal() - means[0]), means  # k = 100 closes most of the gap


def encoder_gradient(model: VAE, batch: int) -> torch.Tensor:
    model.zero_grad()
    model.loss(copies(batch))[0].backward()
    return torch.cat([p.grad.flatten() for p in model.encoder.parameters()])


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("baseline", ["none", "nvil"])
def test_score_function_gradient_matches_reparameterised_in_expectation(k, baseline):
    """Mean over 60 x 2,000 samples: within 10% (relative norm) and 4 standard errors per coordinate."""
    torch.manual_seed(0)
    shifts = dict(posterior_shift=0.5, posterior_log_var_shift=-0.5)
    reparam = linear_gaussian_vae(**shifts, k=k)
    score = linear_gaussian_vae(**shifts, k=k, estimator="score_function", baseline=baseline, normalize_advantage="none")
    estimates = {name: torch.stack([encoder_gradient(model, 2000) for _ in range(60)])
                 for name, model in (("reparam", reparam), ("score", score))}
    mean = {name: e.mean(0) for name, e in estimates.items()}
    standard_error = sum(e.std(0) / math.sqrt(len(e)) for e in estimates.values())
    assert mean["reparam"].norm() > 0.1  # the wrong q has a real gradient to find
    relative_error = ((mean["score"] - mean["reparam"]).norm() / mean["reparam"].norm()).item()
    print(f"k={k} baseline={baseline}: relative error {relative_error:.4f}")
    assert relative_error < 0.1, relative_error
    assert ((mean["score"] - mean["reparam"]).abs() <= 4 * standard_error + 1e-4).all()


def test_score_function_path_gives_the_encoder_only_the_estimators_gradient():
    model = VAE(estimator="score_function", k=3, hidden_sizes=(32,), latent_dim=4)
    images = (torch.rand(6, 1, 28, 28) < 0.3).float()
    terms = model.bound(images, k=3, reparameterize=False)
    (-terms.bound.mean()).backward()  # the decoder's loss
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.decoder.net[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("network", ["mlp", "cnn"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian"])
@pytest.mark.parametrize(("estimator", "k"), [("reparam", 1), ("reparam", 3), ("score_function", 1), ("score_function", 3)])
def test_loss_and_bound_shapes(network, likelihood, estimator, k):
    model = VAE(network=network, likelihood=likelihood, estimator=estimator, k=k, hidden_sizes=(32,), latent_dim=5)
    images = (torch.rand(6, 1, 28, 28) < 0.3).float()
    loss, terms, _ = model.loss(images)
    assert loss.shape == ()
    assert terms.log_w.shape == terms.log_q.shape == (k, 6)
    assert terms.bound.shape == terms.reconstruction.shape == terms.kl.shape == (6,)
    assert terms.posterior_mean.shape == (6, 5)
    assert model(images).shape == (6, 5) and model.reconstruct(images).shape == (6, 1, 28, 28)
    assert model.importance_sampled_nll(images, 7, chunk=3).shape == (6,)
    loss.backward()
    assert model.encoder.head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_kl_warmup_starts_from_the_reconstruction_alone():
    torch.manual_seed(0)
    model = VAE(kl_warmup_steps=100, hidden_sizes=(32,), latent_dim=4)
    images = (torch.rand(6, 1, 28, 28) < 0.3).float()
    loss, terms, _ = model.loss(images)  # step 0 of training: KL weight 0
    assert torch.isclose(loss, terms.reconstruction.mean())
    model.eval()  # evaluation always scores the full bound
    assert model.kl_weight() == 1.0


def test_active_units_counts_dimensions_whose_posterior_mean_varies():
    metric = ActiveUnits(latent_dim=3)
    torch.manual_seed(0)
    means = torch.stack([torch.randn(1000), 0.05 * torch.randn(1000), torch.full((1000,), 3.0)], dim=1)
    for part in means.split(100):
        metric.update(part)
    assert metric.compute().item() == 1.0  # variances ~1, ~0.0025 and 0 against the threshold 0.01


def test_mismatched_datamodule_is_named():
    model = VAE()
    with pytest.raises(ConfigError, match="image datamodule"):
        model.check_datamodule(ParityDataModule())
    with pytest.raises(ConfigError, match="image_shape"):
        model.check_datamodule(VisionDataModule(variant="translated", canvas_size=60))
    with pytest.raises(ConfigError, match="--data.init_args.variant binarized"):
        model.check_datamodule(VisionDataModule(variant="plain"))
    VAE(likelihood="continuous_bernoulli").check_datamodule(VisionDataModule(normalize=False))
    VAE().check_datamodule(VisionDataModule(variant="binarized"))


def validation_loss(model: VAE, data: VisionDataModule) -> float:
    """-L_K in nats per image over the validation split."""
    with torch.no_grad():
        return torch.cat([-model.bound(images, model.hparams.k).bound for images, _ in data.val_dataloader()]).mean().item()


@pytest.mark.parametrize(("estimator", "margin"), [("reparam", 150.0), ("score_function", 100.0)])
def test_vae_learns_binarized_fashion_mnist(tmp_path, fashion_source, estimator, margin):
    """Two epochs on 3,000 real images lower the validation -ELBO (~545 nats untrained) by ``margin``."""
    torch.manual_seed(0)
    data = VisionDataModule(data_dir=str(tmp_path / "data"), system_dir=str(fashion_source), variant="binarized",
                            train_subset=3000, val_size=500, batch_size=100)
    data.prepare_data()
    data.setup("fit")
    model = VAE(estimator=estimator, grad_variance_every=0)
    untrained = validation_loss(model, data)
    quiet_trainer(default_root_dir=tmp_path, max_epochs=2, limit_val_batches=0).fit(model, datamodule=data)
    trained = validation_loss(model, data)
    assert untrained - trained > margin, (untrained, trained)


@pytest.mark.parametrize("config", [REPARAM, SCORE_FUNCTION])
def test_smoke_fit_through_cli(config, vision_args):
    cli = main(["fit", f"--config={config}", f"--config={SMOKE}", *vision_args])
    assert cli.trainer.global_step == 1


def test_fit_and_test_log_every_metric(vision_args):
    cli = main(["fit", f"--config={SCORE_FUNCTION}", *vision_args, *FAST, "--trainer.limit_train_batches=4",
                "--trainer.log_every_n_steps=2", "--model.init_args.grad_variance_every=2"])
    logged = cli.trainer.logged_metrics
    for name in ("val/loss", "val/elbo", "val/reconstruction", "val/kl", "val/active_units", "train/encoder_grad_variance"):
        assert name in logged, name
    assert logged["val/elbo"] < 0 and logged["val/kl"] >= 0
    cli.trainer.limit_test_batches = 2
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert tested["test/nll"] <= -tested["test/elbo"] + 5.0  # the 10-sample bound beats the ELBO, up to noise


def test_ddp_with_two_cpu_processes(tmp_path, vision_args):
    checkpoint = fit_on_two_cpu_processes([f"--config={SCORE_FUNCTION}", *vision_args, *FAST, "--data.init_args.batch_size=32"], tmp_path)
    assert checkpoint["global_step"] == 3


def test_resume_continues_the_same_run(vision_args):
    """Resumed from last.ckpt, the score-function run (estimator statistics, RNG) ends where a straight run does."""
    assert_resumed_run_matches_straight_run(
        [f"--config={SCORE_FUNCTION}", *vision_args, *FAST, "--model.init_args.grad_variance_every=2"])
