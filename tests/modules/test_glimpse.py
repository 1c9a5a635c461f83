"""The glimpse sensor (the RAM's retina) pixel by pixel: centre, border, coarser scales, rounding, precision, reuse."""

import pytest
import torch
import torch.nn.functional as F

from modules.errors import ConfigError
from modules.glimpse import GlimpseNetwork, GlimpseSensor


def reference_glimpse(image: torch.Tensor, centre_row: int, centre_col: int, size: int, block: int) -> torch.Tensor:
    """The patch of ``size`` pixels whose top-left corner is ``size // 2`` above/left of the pixel edge
    (``centre_row``, ``centre_col``), cut by slicing a zero-padded copy and averaged in ``block x block`` blocks."""
    pad = size
    padded = F.pad(image, (pad, pad, pad, pad))
    top, left = centre_row - size // 2 + pad, centre_col - size // 2 + pad
    return F.avg_pool2d(padded[None, :, top : top + size, left : left + size], block)[0]


def assert_pixels(actual: torch.Tensor, expected: list) -> None:
    """Equal up to float rounding of the sampling coordinates (a wrong pixel is off by >= 0.5 here)."""
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=0, atol=1e-4)


def test_sensor_reads_the_expected_pixels_at_centre_border_and_coarser_scales():
    image = torch.arange(64.0).reshape(1, 1, 8, 8)  # pixel (r, c) = 8 r + c
    sensor = GlimpseSensor(glimpse_size=2, num_scales=3, scale_factor=2)
    centre, corner = sensor(image.expand(2, -1, -1, -1), torch.tensor([[0.0, 0.0], [-1.0, -1.0]]))
    assert centre.shape == (3, 1, 2, 2)
    # l = (0, 0) is the pixel edge between rows/columns 3 and 4
    assert_pixels(centre[0, 0], [[27.0, 28.0], [35.0, 36.0]])
    assert_pixels(centre[1, 0], [[22.5, 24.5], [38.5, 40.5]])  # 4x4 patch, 2x2 block means
    assert_pixels(centre[2, 0], [[13.5, 17.5], [45.5, 49.5]])  # the whole image, 4x4 block means
    # l = (-1, -1) is the image's top-left corner: three quarters of every patch lie outside and read zero
    assert_pixels(corner[0, 0], [[0.0, 0.0], [0.0, 0.0]])
    assert_pixels(corner[1, 0], [[0.0, 0.0], [0.0, 4.5]])  # mean of pixels 0, 1, 8, 9
    assert_pixels(corner[2, 0], [[0.0, 0.0], [0.0, 13.5]])


@pytest.mark.parametrize("scale_factor", [2, 3])
def test_sensor_matches_zero_padded_slicing_per_sample_on_a_rectangular_batch(scale_factor):
    """Each image of a batch read at its own location (x along the width, y along the height), two channels."""
    torch.manual_seed(0)
    height, width, g, scales = 12, 18, 4, 3
    images = torch.randint(0, 256, (3, 2, height, width)).float()
    # pixel edges (column, row) of the glimpse centres: inside, on the border, and at the far corner
    edges = torch.tensor([[6, 4], [0, 7], [18, 12]])
    location = torch.stack([edges[:, 0] / width * 2 - 1, edges[:, 1] / height * 2 - 1], dim=1)
    glimpses = GlimpseSensor(g, scales, scale_factor)(images, location)
    assert glimpses.shape == (3, scales, 2, g, g)
    for i, (col, row) in enumerate(edges.tolist()):
        for k in range(scales):
            expected = reference_glimpse(images[i], row, col, g * scale_factor**k, scale_factor**k)
            torch.testing.assert_close(glimpses[i, k], expected, rtol=0, atol=1e-3)


def test_patches_snap_to_the_nearest_pixel_edges():
    """Between pixel edges, every patch moves to the nearest whole-pixel position (ties aside)."""
    image = torch.arange(64.0).reshape(1, 1, 8, 8)
    sensor = GlimpseSensor(glimpse_size=2, num_scales=2)
    pixel = 2 / 8  # one pixel in location units
    x = torch.tensor([0.0, 0.4, -0.4, 0.6, -0.6]) * pixel  # offsets from the pixel edge between columns 3 and 4
    glimpses = sensor(image.expand(5, -1, -1, -1), torch.stack([x, torch.zeros(5)], dim=1))
    for i in (1, 2):  # within half a pixel: the same patch as at the edge itself
        torch.testing.assert_close(glimpses[i], glimpses[0], rtol=0, atol=0)
    assert_pixels(glimpses[3, 0, 0], [[28.0, 29.0], [36.0, 37.0]])  # one column to the right
    assert_pixels(glimpses[4, 1, 0], [[21.5, 23.5], [37.5, 39.5]])  # the 4x4 patch one column to the left


def test_single_pixels_stay_exact_on_a_large_bright_canvas():
    """Block sums are differences of sums over the whole image: in float32 they would lose the pixel entirely."""
    torch.manual_seed(0)
    images = 1000 + torch.rand(2, 1, 100, 100)  # the table reaches 1e7, where float32's step is 1
    edges = torch.tensor([[50, 50], [100, 37]])  # (column, row) pixel edges
    glimpses = GlimpseSensor(glimpse_size=12, num_scales=2)(images, edges / 100 * 2 - 1)
    for i, (col, row) in enumerate(edges.tolist()):
        assert torch.equal(glimpses[i, 0], reference_glimpse(images[i], row, col, 12, 1))
        torch.testing.assert_close(glimpses[i, 1], reference_glimpse(images[i], row, col, 24, 2), rtol=1e-6, atol=0)


def test_one_table_per_batch_reads_the_same_glimpses_as_direct_calls():
    """The model builds the summed-area table once per batch and reads T glimpses from it: identical results."""
    torch.manual_seed(0)
    images = torch.rand(4, 2, 20, 30)
    sensor = GlimpseSensor(glimpse_size=4, num_scales=3)
    network = GlimpseNetwork(sensor, channels=2, what_size=8, where_size=8, out_size=16)
    table = sensor.summed_area_table(images)
    assert table.shape == (4, 2, 21, 31) and table.dtype == torch.float64
    for location in torch.rand(5, 4, 2) * 2.4 - 1.2:  # off the pixel grid, some outside the image
        assert torch.equal(sensor.read(table, location).float(), sensor(images, location))
        assert torch.equal(network(images, location, table), network(images, location))


def test_one_table_serves_several_paths_of_each_image():
    """``S B`` locations read a table of ``B`` images: row ``s B + b`` is image ``b``, as if the images were repeated."""
    torch.manual_seed(0)
    images = torch.rand(4, 2, 20, 30)
    sensor = GlimpseSensor(glimpse_size=4, num_scales=3)
    location = torch.rand(3 * 4, 2) * 2.4 - 1.2
    repeated = sensor.read(sensor.summed_area_table(images.repeat(3, 1, 1, 1)), location)
    assert torch.equal(sensor.read(sensor.summed_area_table(images), location), repeated)
    with pytest.raises(ConfigError, match="10 locations for 4 images"):
        sensor.read(sensor.summed_area_table(images), location[:10])


def test_a_bfloat16_module_reads_the_same_pixels():
    """bf16-true casts a module's float buffers to bfloat16, where 128.5 rounds to 128: the geometry must not follow."""
    torch.manual_seed(0)
    images = torch.rand(1, 1, 300, 300)
    sensor = GlimpseSensor(glimpse_size=2, num_scales=8, scale_factor=2)  # corners up to 128.5 pixels from the centre
    location = torch.tensor([[150.5 / 300 * 2 - 1, 0.0]])  # centred on a pixel centre: the half pixels count
    expected = sensor(images, location)
    assert torch.equal(sensor.to(torch.bfloat16)(images, location), expected)
