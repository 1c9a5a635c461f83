"""The classifier trained by REINFORCE alone on the 0/1 reward."""

import pytest
import torch

from datamodules.vision import VisionDataModule
from modules.errors import ConfigError
from modules.reinforce_classifier import ReinforceClassifier
from tests.trainers import quiet_trainer


@pytest.mark.parametrize("network", ["mlp", "cnn"])
@pytest.mark.parametrize("baseline", ["none", "moving_average", "learned", "self_critical", "leave_one_out"])
def test_policy_terms_have_the_estimator_shapes(network, baseline):
    model = ReinforceClassifier(network=network, baseline=baseline, num_samples=4, hidden_sizes=(32,))
    images, labels = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    logits, terms = model._policy_terms(images, labels)
    assert logits.shape == (6, 10)
    assert terms.advantage.shape == terms.baseline.shape == (4, 6)
    assert 0.0 <= terms.reward.item() <= 1.0
    terms.loss.backward()
    assert model.policy_head.weight.grad is not None and model.policy_head.weight.grad.abs().sum() > 0


def test_policy_gradient_never_reaches_the_learned_baseline_through_features():
    model = ReinforceClassifier(baseline="learned", hidden_sizes=(16,))
    _, terms = model._policy_terms(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    terms.baseline_loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.value_head.weight.grad is not None


def test_mismatched_datamodule_is_named():
    model = ReinforceClassifier(num_classes=10, image_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="image_shape"):
        model.check_datamodule(VisionDataModule(variant="translated", canvas_size=60))
    with pytest.raises(ConfigError, match="num_classes 10"):
        ReinforceClassifier(num_classes=7).check_datamodule(VisionDataModule())


def test_reinforce_alone_learns_to_classify(tmp_path, fashion_source):
    """A short REINFORCE-only run on 4,000 real images beats what an untrained net can reach (10%)."""
    torch.manual_seed(0)
    data = VisionDataModule(data_dir=str(tmp_path / "data"), system_dir=str(fashion_source), train_subset=4000,
                            val_size=1000, batch_size=64)
    model = ReinforceClassifier(grad_variance_every=0)
    trainer = quiet_trainer(default_root_dir=tmp_path, max_epochs=3, limit_val_batches=0)
    untrained = trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"]
    trainer.fit(model, datamodule=data)
    trained = trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"]
    assert untrained < 0.3
    assert trained > 0.6, trained
