"""The glimpse-path picture: boxes where the sensor looked, one per scale and step."""

import torch
from matplotlib.patches import Rectangle

from callbacks.glimpse_paths import draw_glimpse_paths, location_to_pixels
from modules.glimpse import GlimpseSensor


def test_locations_map_to_the_pixels_the_sensor_centres_on():
    # matplotlib puts pixel i's centre at i: the image spans [-0.5, W - 0.5]
    pixels = location_to_pixels(torch.tensor([[0.0, 0.0], [-1.0, -1.0], [1.0, 0.5]]), height=8, width=10)
    assert torch.allclose(pixels, torch.tensor([[4.5, 3.5], [-0.5, -0.5], [9.5, 5.5]]))


def test_one_box_per_scale_and_step_centred_on_the_glimpse():
    sensor = GlimpseSensor(glimpse_size=4, num_scales=3)
    images = torch.rand(3, 1, 20, 20)
    locations = torch.tensor([[[0.0, 0.0], [0.5, -0.5]]]).expand(3, -1, -1)  # [B, T=2, 2]
    figure = draw_glimpse_paths(images, locations, torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3]), sensor.patch_sizes, columns=2)
    axes = [ax for ax in figure.axes if ax.images]
    assert len(axes) == 3
    boxes = [p for p in axes[0].patches if isinstance(p, Rectangle)]
    assert sorted(b.get_width() for b in boxes) == [4, 4, 8, 8, 16, 16]
    first_coarse = next(b for b in boxes if b.get_width() == 16 and b.get_x() < 5)
    assert (first_coarse.get_x(), first_coarse.get_y()) == (9.5 - 8, 9.5 - 8)  # centred on pixel edge 10
    assert [t.get_text() for t in axes[0].texts] == ["1", "2"]
    assert axes[1].title.get_color() == "red" and axes[0].title.get_color() == "black"
