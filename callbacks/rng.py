"""Random-number state in every checkpoint, so a resumed run draws what the uninterrupted run would have."""

from typing import Any

import numpy as np
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch import Callback


class RandomStateCheckpoint(Callback):
    """Save the global torch, numpy and Python RNG states with each checkpoint and restore them on resume.

    Lightning restores weights, optimiser and loop progress but not the random streams; without them
    a resumed run shuffles and samples differently from a straight run. (Under DDP the checkpoint
    holds rank zero's states.)
    """

    def state_dict(self) -> dict[str, Any]:
        states = _collect_rng_states(include_cuda=True)
        # plain lists, not a numpy array, so that checkpoints load with torch.load(weights_only=True)
        name, keys, position, has_gauss, cached = states["numpy"]
        states["numpy"] = (name, keys.tolist(), position, has_gauss, cached)
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = dict(state_dict["rng"])
        name, keys, position, has_gauss, cached = states["numpy"]
        states["numpy"] = (name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached)
        _set_rng_states(states)
