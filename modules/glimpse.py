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
    is shrunk to ``g x g`` by averaging blocks of ``s x s`` pixels; pixels outside the image read as zero.
    Patches lie on the pixel grid (integer crops): each patch's edges are the pixel edges nearest to where ``l``
    puts them, so a glimpse is exactly the zero-padded image's pixels and block means; a location between
    pixel edges is rounded, not interpolated (the location is never differentiated through the sensor).

    Every block sum is four reads of the image's summed-area table ``S`` (``S[r, c]`` = the sum of the pixels
    above and left of pixel edge ``(r, c)``; indices clamped to the image read the zero padding for free):
    the ``g x g`` blocks of one patch have ``(g + 1)^2`` corners, and ONE ``gather`` reads every corner of
    every scale of the whole batch; two differences give the block sums. There is no per-sample Python loop.
    The table is float64, so that differences of large sums keep single pixels exact. A model that glimpses
    the same images ``T`` times builds the table once (:meth:`summed_area_table`) and calls :meth:`read`
    for each glimpse; :meth:`forward` does both.
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
        blocks = torch.tensor(self.blocks)
        # a patch's left (top) edge is the pixel edge nearest to centre - g s / 2, i.e. floor(centre - g s / 2 + 1 / 2);
        # its block corners follow every s pixels: floor(centre + offset), offset = s i - g s / 2 + 1 / 2, [K, g+1].
        # Stored doubled, as integers, so that casting the module (bf16-true) cannot round them
        twice_offsets = blocks[:, None] * (2 * torch.arange(glimpse_size + 1) - glimpse_size) + 1
        self.register_buffer("_twice_corner_offsets", twice_offsets, persistent=False)
        self.register_buffer("_block_area", (blocks**2)[:, None, None], persistent=False)  # [K, 1, 1], integer
        self._grids: dict[tuple, tuple[Tensor, ...]] = {}  # read()'s constants per table shape and device

    @property
    def out_features(self) -> int:
        """Values per channel in one glimpse (all scales)."""
        return self.num_scales * self.glimpse_size**2

    @staticmethod
    def summed_area_table(images: Tensor) -> Tensor:
        """``images`` [B, C, H, W] -> ``S`` [B, C, H + 1, W + 1] (float64), ``S[r, c]`` = sum of ``images[:r, :c]``."""
        batch, channels, height, width = images.shape
        table = images.new_zeros(batch, channels, height + 1, width + 1, dtype=torch.float64)
        table[:, :, 1:, 1:] = images
        return table.cumsum_(-1).cumsum_(-2)

    def _corner_grid(self, rows: int, cols: int, device: torch.device) -> tuple[Tensor, ...]:
        """Constants of :meth:`read` for a table of ``rows x cols`` pixel edges, built once per shape and device.

        ``base`` [2, K, g+1] and ``half`` [2, 1, 1]: every block corner's pixel edge is ``floor(base + l half)``
        (``l`` in ``[-1, 1]``; ``half`` is half the image's width and height); ``first`` and ``last`` [2, 1, 1]:
        the first and last pixel edges (0 and W, H); ``stride`` [2, 1, 1]: what one column and one row add to
        a flattened table index. Built once because, at batch 128, building them costs as much as a read.
        """
        key = (rows, cols, device)
        if key not in self._grids:
            last = torch.tensor([[[cols - 1]], [[rows - 1]]], dtype=torch.float32, device=device)
            half = last / 2
            base = self._twice_corner_offsets.to(device) / 2.0 + half  # float32, exact (halves of small integers)
            stride = torch.tensor([[[1]], [[cols]]], dtype=torch.float32, device=device)
            self._grids[key] = (base, half, torch.zeros_like(last), last, stride)
        return self._grids[key]

    def read(self, table: Tensor, location: Tensor) -> Tensor:
        """``table`` from :meth:`summed_area_table` of ``B`` images, ``location`` [S B, 2] as (x, y) in [-1, 1]
        -> glimpses [S B, num_scales, C, g, g] (float64). Row ``s B + b`` reads image ``b``: one table serves ``S``
        rollouts of every image (``S = 1``: one location per image), so no caller has to repeat the images."""
        batch, channels, rows, cols = table.shape  # rows = H + 1, cols = W + 1
        reads = len(location)
        require(reads % batch == 0, f"GlimpseSensor.read: {reads} locations for {batch} images; give a multiple of the images")
        base, half, first, last, stride = self._corner_grid(rows, cols, table.device)
        # every block corner's pixel edge, (x, y) = (column, row), clamped into the table (which reads the zero padding)
        corners = torch.addcmul(base, location.float()[:, :, None, None], half)  # [S B, 2, K, g+1]
        x, y = corners.clamp_(first, last).floor_().mul_(stride).unbind(1)
        index = (y[..., :, None] + x[..., None, :]).long().view(reads // batch, batch, -1)  # [S, B, K (g+1)^2], flattened table
        index = index.transpose(0, 1).reshape(batch, 1, -1)  # [B, 1, S K (g+1)^2]: each image's reads side by side
        sums = table.flatten(2).gather(2, index if channels == 1 else index.expand(-1, channels, -1))  # [B, C, S K (g+1)^2]
        sums = sums.view(batch, channels, reads // batch, -1).permute(2, 0, 1, 3)  # [S, B, C, K (g+1)^2]
        sums = sums.reshape(reads, channels, self.num_scales, self.glimpse_size + 1, self.glimpse_size + 1)
        means = sums.diff(dim=-2).diff(dim=-1)  # [B, C, K, g, g] block sums
        if self.blocks[-1] > 1:
            means = means / self._block_area
        return means.transpose(1, 2)

    def forward(self, images: Tensor, location: Tensor) -> Tensor:
        """``images`` [B, C, H, W], ``location`` [B, 2] as (x, y) in [-1, 1] -> glimpses [B, num_scales, C, g, g]."""
        return self.read(self.summed_area_table(images), location).to(images.dtype)


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

    def forward(self, images: Tensor, location: Tensor, table: Tensor | None = None) -> Tensor:
        """``images`` [B, C, H, W], ``location`` [B, 2] -> glimpse features [B, out_size].

        ``table``: ``sensor.summed_area_table(images)``, built once by a caller that glimpses the same images
        several times (otherwise built here).
        """
        if table is None:
            table = self.sensor.summed_area_table(images)
        h_g = F.relu(self.what(self.sensor.read(table, location).to(images.dtype).flatten(1)))
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
    the core and glimpse networks, which the classification loss trains. ``normalize_input`` reads
    ``LayerNorm(h_t)`` instead, so the mean depends on the state's direction only, not on its scale,
    which grows as the classifier sharpens. It tests whether that growth is what pins learned glimpses at
    the canvas edge; on cluttered 60x60 it is not: with it 96% of the greedy glimpses went to the edge,
    against 30% without (README, issue 5).
    """

    def __init__(self, hidden_size: int = 256, std: float = 0.1, learn_std: bool = False, detach_state: bool = True,
                 normalize_input: bool = False) -> None:
        super().__init__()
        require(std > 0, f"--model.init_args.location_std must be > 0, got {std}")
        self.norm = nn.LayerNorm(hidden_size) if normalize_input else nn.Identity()
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
        mean = torch.tanh(self.mean_head(self.norm(hidden)).float())
        return Normal(mean, self.log_std.float().exp().expand_as(mean))


class BaselineNetwork(nn.Module):
    """``b_t = Linear(h_t)``: the expected final reward predicted from the (detached) state, Sec. 3.2."""

    def __init__(self, hidden_size: int = 256) -> None:
        super().__init__()
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        """``h_t`` [B, H] -> ``b_t`` [B] (float32); never backpropagates into the state."""
        return self.head(hidden.detach()).squeeze(-1).float()
