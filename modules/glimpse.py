"""Building blocks of the Recurrent Attention Model (Mnih et al. 2014, "Recurrent Models of Visual Attention").

Plain ``nn.Module``s that know nothing of Lightning or of losses; :mod:`modules.ram` composes them.
Locations are ``(x, y)`` in ``[-1, 1]^2``: ``(-1, -1)`` is the top-left corner of the image, ``(1, 1)``
the bottom-right one, ``(0, 0)`` its centre (Sec. 4: "the coordinates of the image centre are (0, 0)").
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal

from modules.errors import require


class GlimpseSensor(nn.Module):
    """The retina ``rho(x, l)`` of Sec. 3.1: ``num_scales`` square patches centred on ``l``, each resized to ``g x g``.

    Patch ``k`` (``k = 0 .. num_scales - 1``) covers ``g * s`` pixels on a side, ``s = scale_factor**k``, and
    is shrunk to ``g x g`` by averaging blocks of ``s x s`` pixels; pixels outside the image read as zero
    (``grid_sample``'s zero padding). The whole batch and every scale are read by ONE ``grid_sample`` call:
    each scale's sampling grid is the batch's locations broadcast onto fixed per-scale offsets (the
    ``affine_grid`` of a translation, without its batched matrix product), the scales' points are
    concatenated, and there is no per-sample Python loop anywhere. Bilinear sampling midway between
    four pixel centres is their mean, so a block of an even ``s`` needs only ``(s/2)^2`` samples (each a
    2x2 mean) and ``avg_pool2d`` finishes the block mean; an odd ``s`` samples every pixel centre.

    When the patch edges fall on pixel edges (e.g. ``l = 0`` with even sizes) the glimpse is exactly the
    zero-padded image's pixels and block means; between pixels it is their bilinear interpolation.
    """

    def __init__(self, glimpse_size: int = 8, num_scales: int = 1, scale_factor: int = 2) -> None:
        super().__init__()
        require(glimpse_size >= 1, f"--model.init_args.glimpse_size must be >= 1, got {glimpse_size}")
        require(num_scales >= 1, f"--model.init_args.num_scales must be >= 1, got {num_scales}")
        require(scale_factor >= 1, f"--model.init_args.scale_factor must be an integer >= 1, got {scale_factor}")
        self.glimpse_size = glimpse_size
        self.num_scales = num_scales
        self.scale_factor = scale_factor
        self.blocks = [scale_factor**k for k in range(num_scales)]  # pixels per output pixel (side)
        self.patch_sizes = [glimpse_size * s for s in self.blocks]  # pixels on a side
        # samples per output pixel (side): each sample of an even block is the mean of 2x2 pixels
        self._pools = [s // 2 if s % 2 == 0 else s for s in self.blocks]
        for k, (s, pool) in enumerate(zip(self.blocks, self._pools)):
            step = s / pool  # pixels between samples: 2 (even s) or 1 (odd s)
            # sample n sits at the centre of the n-th step-wide strip of the patch, in pixels from its centre
            offsets = (torch.arange(glimpse_size * pool) + 0.5) * step - glimpse_size * s / 2
            self.register_buffer(f"_offsets{k}", offsets, persistent=False)

    @property
    def out_features(self) -> int:
        """Values per channel in one glimpse (all scales)."""
        return self.num_scales * self.glimpse_size**2

    def forward(self, images: Tensor, location: Tensor) -> Tensor:
        """``images`` [B, C, H, W], ``location`` [B, 2] as (x, y) in [-1, 1] -> glimpses [B, num_scales, C, g, g]."""
        batch, channels, height, width = images.shape
        # grid_sample's units (align_corners=False): -1 and 1 are the image's outer edges, so a pixel
        # offset d from the centre l is l + 2 d / size
        x_centre, y_centre = location.to(images.dtype).unbind(-1)
        grids = []
        for k in range(self.num_scales):
            offsets = getattr(self, f"_offsets{k}").to(images.dtype)
            x = x_centre[:, None, None] + (2 / width) * offsets[None, None, :]  # [B, 1, n]
            y = y_centre[:, None, None] + (2 / height) * offsets[None, :, None]  # [B, n, 1]
            grids.append(torch.stack(torch.broadcast_tensors(x, y), dim=-1).flatten(1, 2))  # [B, n * n, 2]
        sizes = [grid.shape[1] for grid in grids]
        # every scale's points in one call: [B, C, 1, sum(n * n)]
        samples = F.grid_sample(images, torch.cat(grids, dim=1)[:, None], mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        glimpses = []
        for part, pool in zip(samples.split(sizes, dim=-1), self._pools):
            side = self.glimpse_size * pool
            patch = part.reshape(batch, channels, side, side)
            glimpses.append(F.avg_pool2d(patch, pool) if pool > 1 else patch)
        return torch.stack(glimpses, dim=1)


class GlimpseNetwork(nn.Module):
    """``g_t = f_g(x, l)`` of Sec. 4 (appendix): what and where, combined.

    ``h_g = ReLU(Linear(rho(x, l)))``, ``h_l = ReLU(Linear(l))``, ``g = ReLU(Linear(h_g) + Linear(h_l))``
    (the paper uses 128, 128 and 256 units).
    """

    def __init__(self, sensor: GlimpseSensor, channels: int = 1, what_size: int = 128, where_size: int = 128,
                 out_size: int = 256) -> None:
        super().__init__()
        self.sensor = sensor
        self.what = nn.Linear(channels * sensor.out_features, what_size)
        self.where = nn.Linear(2, where_size)
        self.what_out = nn.Linear(what_size, out_size)
        self.where_out = nn.Linear(where_size, out_size)
        self.out_features = out_size

    def forward(self, images: Tensor, location: Tensor) -> Tensor:
        """``images`` [B, C, H, W], ``location`` [B, 2] -> glimpse features [B, out_size]."""
        h_g = F.relu(self.what(self.sensor(images, location).flatten(1)))
        h_l = F.relu(self.where(location.to(h_g.dtype)))
        return F.relu(self.what_out(h_g) + self.where_out(h_l))


CoreKind = Literal["rnn", "lstm"]


class CoreNetwork(nn.Module):
    """``h_t = f_h(h_{t-1}, g_t)``: the paper's rectifier RNN ``ReLU(Linear(h_{t-1}) + Linear(g_t))`` or an LSTM.

    The state is a tuple: ``(h,)`` for the RNN, ``(h, c)`` for the LSTM; ``h`` is what the heads read.
    """

    def __init__(self, input_size: int = 256, hidden_size: int = 256, kind: CoreKind = "rnn") -> None:
        super().__init__()
        require(kind in ("rnn", "lstm"), f"--model.init_args.core must be rnn or lstm, got {kind!r}")
        self.kind = kind
        self.hidden_size = hidden_size
        if kind == "rnn":
            self.input_to_hidden = nn.Linear(input_size, hidden_size)
            self.hidden_to_hidden = nn.Linear(hidden_size, hidden_size)
        else:
            self.cell = nn.LSTMCell(input_size, hidden_size)

    def initial_state(self, batch: int, reference: Tensor) -> tuple[Tensor, ...]:
        zeros = reference.new_zeros(batch, self.hidden_size)
        return (zeros,) if self.kind == "rnn" else (zeros, zeros)

    def forward(self, glimpse: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if self.kind == "rnn":
            return (F.relu(self.input_to_hidden(glimpse) + self.hidden_to_hidden(state[0])),)
        h, c = self.cell(glimpse, (state[0].to(glimpse.dtype), state[1].to(glimpse.dtype)))
        return h, c


class LocationPolicy(nn.Module):
    """``pi(l_t | h_t) = N(tanh(Linear(h_t)), std^2 I)``, the location network of Sec. 3.1.

    The mean is bounded to ``[-1, 1]`` by ``tanh``; ``std`` is fixed (the paper) or learned (one log-std
    per coordinate, independent of the state). With ``detach_state`` (default) the policy reads a
    detached ``h_t``, so its REINFORCE gradient trains the location network alone and never disturbs
    the core and glimpse networks, which the classification loss trains.
    """

    def __init__(self, hidden_size: int = 256, std: float = 0.1, learn_std: bool = False, detach_state: bool = True) -> None:
        super().__init__()
        require(std > 0, f"--model.init_args.location_std must be > 0, got {std}")
        self.mean_head = nn.Linear(hidden_size, 2)
        self.detach_state = detach_state
        log_std = torch.full((2,), float(torch.tensor(std).log()))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)

    def forward(self, hidden: Tensor) -> Normal:
        """The location distribution for each state: ``Normal`` with batch shape [B, 2], float32."""
        if self.detach_state:
            hidden = hidden.detach()
        mean = torch.tanh(self.mean_head(hidden).float())
        return Normal(mean, self.log_std.float().exp().expand_as(mean))


class BaselineNetwork(nn.Module):
    """``b_t = Linear(h_t)``: the expected final reward predicted from the (detached) state, Sec. 3.2."""

    def __init__(self, hidden_size: int = 256) -> None:
        super().__init__()
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        """``h_t`` [B, H] -> ``b_t`` [B] (float32); never backpropagates into the state."""
        return self.head(hidden.detach()).squeeze(-1).float()
