"""Plain building blocks shared by the models: they know nothing of Lightning or of losses."""

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

Activation = Literal["relu", "tanh", "gelu", "elu"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "elu": nn.ELU}


def mlp(sizes: Sequence[int], activation: Activation = "relu", activate_last: bool = False) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with ``activation`` between them."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or activate_last:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """Image ``[B, C, H, W]`` to a feature vector ``[B, out_features]``: an MLP on the pixels or a small CNN.

    ``cnn`` is two 3x3 conv blocks (32, 64 channels) with max-pooling, then one hidden layer, the
    usual small network for 28x28 digits; ``mlp`` flattens and applies ``hidden_sizes``.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        kind: Literal["mlp", "cnn"] = "mlp",
        hidden_sizes: Sequence[int] = (256, 256),
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        act = _ACTIVATIONS[activation]
        if kind == "mlp":
            self.net = nn.Sequential(nn.Flatten(), mlp([channels * height * width, *hidden_sizes], activation, activate_last=True))
            self.out_features = hidden_sizes[-1] if hidden_sizes else channels * height * width
        else:
            conv = nn.Sequential(
                nn.Conv2d(channels, 32, 3, padding=1), act(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), act(), nn.MaxPool2d(2),
                nn.Flatten(),
            )
            with torch.no_grad():
                flat = conv(torch.zeros(1, channels, height, width)).shape[1]
            hidden = list(hidden_sizes[-1:])  # one dense layer after the convolutions
            self.net = nn.Sequential(conv, mlp([flat, *hidden], activation, activate_last=True))
            self.out_features = hidden[-1] if hidden else flat

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)
