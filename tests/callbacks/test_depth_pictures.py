"""The depth pictures: the 2-D projection keeps what it should, and every figure draws from a real network."""

import matplotlib.pyplot as plt
import torch

from callbacks.depth_pictures import DepthPictures, project_to_plane
from datamodules.synthetic import ParityDataModule
from modules.shared_depth import SharedDepthNetwork


def test_two_unit_states_are_drawn_as_they_are():
    states = torch.randn(4, 10, 2)
    assert torch.equal(project_to_plane(states), states)


def test_projection_keeps_distances_of_states_that_lie_on_a_plane():
    torch.manual_seed(0)
    plane = torch.randn(2, 16)
    states = torch.randn(5, 30, 2) @ plane + 3.0  # [steps, points, 16], all on one affine plane
    projected = project_to_plane(states)
    flat_in, flat_out = states.reshape(-1, 16), projected.reshape(-1, 2)
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.allclose(torch.cdist(flat_in, flat_in, compute_mode=exact), torch.cdist(flat_out, flat_out, compute_mode=exact), atol=1e-3)


def test_every_picture_is_drawn_for_parity_and_the_input_plane():
    pictures = DepthPictures(num_points=20, grid_size=10)
    model = SharedDepthNetwork(input_shape=(8,), state_dim=8, max_steps=4, halt_bias_init=0.0).eval()
    data = ParityDataModule(num_bits=8, val_size=64, test_size=64)
    data.setup()
    inputs, labels = data.val_set.tensors
    with torch.no_grad():
        figure = pictures.steps_vs_nonzeros(model, inputs, data.val_num_nonzero)
        line = figure.axes[0].lines[0]
        assert set(line.get_xdata().tolist()) <= set(range(1, 9)) and all(1 <= y <= 4 for y in line.get_ydata())
        assert len(pictures.trajectories(model, inputs[:20], labels[:20]).axes[0].collections) >= 20
        toy = SharedDepthNetwork(input_shape=(2,), block="residual_mlp", state_dim=2, max_steps=3).eval()
        halting = pictures.halting_map(toy, torch.randn(30, 2), torch.randint(0, 2, (30,)))
        assert halting.axes[0].images[0].get_array().shape == (10, 10)
    plt.close("all")


def test_trajectories_of_a_conv_network_pool_its_feature_maps():
    # the Fashion-MNIST configs: states are [C, H, W] maps; the picture pools them as the readout does
    model = SharedDepthNetwork(num_classes=10, input_shape=(1, 28, 28), block="conv", state_dim=8, max_steps=3,
                               depth_controller="fixed").eval()
    images, labels = torch.randn(12, 1, 28, 28), torch.arange(12) % 10
    with torch.no_grad():
        figure = DepthPictures(num_points=12).trajectories(model, images, labels)
    paths = figure.axes[0].lines
    assert len(paths) == 12 and all(len(line.get_xdata()) == 4 for line in paths)  # s_0 .. s_3 for each image
    assert figure.axes[0].get_xlabel() == "PC 1"
    plt.close("all")
