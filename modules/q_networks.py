"""Q-networks: map an observation to one action value per discrete action. Plain ``nn.Module``s."""

from torch import Tensor, nn


class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (Wang et al. 2016, Eq. 9)."""

    def __init__(self, in_features: int, num_actions: int, hidden: int) -> None:
        super().__init__()
        self.value = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.advantage = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))

    def forward(self, features: Tensor) -> Tensor:
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=1, keepdim=True)


class MLPQNetwork(nn.Module):
    """ReLU MLP over a flat observation; with ``dueling`` the last hidden size feeds both dueling streams."""

    def __init__(self, observation_size: int, num_actions: int, hidden_sizes: tuple[int, ...] = (256, 256), dueling: bool = False) -> None:
        super().__init__()
        layers, width = [], observation_size
        trunk_sizes = hidden_sizes[:-1] if dueling else hidden_sizes
        for size in trunk_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.trunk = nn.Sequential(nn.Flatten(), *layers)
        self.head = DuelingHead(width, num_actions, hidden_sizes[-1]) if dueling else nn.Linear(width, num_actions)

    def forward(self, obs: Tensor) -> Tensor:
        return self.head(self.trunk(obs.float()))


class NatureCNN(nn.Module):
    """The convolutional Q-network of Mnih et al. (2015), over stacked uint8 frames ``[B, 4, 84, 84]``."""

    def __init__(self, in_channels: int, num_actions: int, hidden: int = 512, dueling: bool = False) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        features = 64 * 7 * 7
        self.head = DuelingHead(features, num_actions, hidden) if dueling else nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))

    def forward(self, obs: Tensor) -> Tensor:
        return self.head(self.trunk(obs.float() / 255.0))
