import numpy as np
import pytest

from mitosis_analysis.stitching import Stitcher
from mitosis_analysis.tiling import gaussian_weights, iter_batches, pad_to_tile, tile_grid, tile_starts


def test_tile_starts_exact_half_overlap():
    assert tile_starts(1024, 512, 256) == [0, 256, 512]
    assert tile_starts(512, 512, 256) == [0]


def test_tile_starts_spread_evenly_when_not_divisible():
    starts = tile_starts(1100, 512, 256)
    assert starts[0] == 0 and starts[-1] == 1100 - 512
    assert max(np.diff(starts)) <= 256  # never less overlap than asked
    assert len(starts) == 4


def test_tile_starts_rejects_short_axis():
    with pytest.raises(ValueError):
        tile_starts(100, 512, 256)


@pytest.mark.parametrize("h,w", [(512, 512), (700, 1300), (5412 // 4, 7215 // 4)])
def test_grid_covers_every_pixel(h, w):
    covered = np.zeros((h, w), int)
    for t in tile_grid(h, w, 512, 256):
        covered[t.y : t.y + 512, t.x : t.x + 512] += 1
        assert t.y + 512 <= h and t.x + 512 <= w
    assert covered.min() >= 1


def test_pad_to_tile_keeps_image_and_reaches_tile():
    img = np.arange(300 * 200 * 3, dtype=np.uint32).reshape(300, 200, 3).astype(np.uint8)
    padded = pad_to_tile(img, 512)
    assert padded.shape == (512, 512, 3)
    np.testing.assert_array_equal(padded[:300, :200], img)
    assert pad_to_tile(np.zeros((600, 600, 3), np.uint8), 512).shape == (600, 600, 3)
    assert pad_to_tile(np.zeros((1, 1, 3), np.uint8), 512).shape == (512, 512, 3)


def test_gaussian_weights_peak_centre_and_positive():
    w = gaussian_weights(64)
    assert w.shape == (64, 64) and w.min() > 0 and w.max() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[32, 32] > w[0, 32] > w[0, 0]


def test_iter_batches_cuts_the_right_pixels():
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    tiles = tile_grid(40, 50, 16, 8)
    seen = 0
    for chunk, batch in iter_batches(img, tiles, 16, 3):
        for t, b in zip(chunk, batch):
            np.testing.assert_array_equal(b, img[t.y : t.y + 16, t.x : t.x + 16])
            seen += 1
    assert seen == len(tiles)


def test_stitching_reproduces_a_global_map_without_seams():
    """Tiles cut from one smooth map stitch back to exactly that map (no seams, no bias)."""
    h, w, t = 300, 420, 64
    yy, xx = np.mgrid[0:h, 0:w]
    truth = (np.sin(xx / 37.0) * np.cos(yy / 23.0) + 1).astype(np.float32) / 2
    tiles = tile_grid(h, w, t, t // 2)
    s = Stitcher(h, w, t)
    s.add(tiles, np.stack([truth[a.y : a.y + t, a.x : a.x + t] for a in tiles]))
    np.testing.assert_allclose(s.result(h, w), truth, atol=1e-5)


def test_stitching_weights_tile_centres_over_borders():
    """Where two tiles disagree, the one whose centre is nearer wins the blend."""
    t = 64
    tiles = tile_grid(64, 96, t, 32)  # x = 0, 32
    assert [a.x for a in tiles] == [0, 32]
    s = Stitcher(64, 96, t)
    s.add(tiles, np.stack([np.zeros((t, t), np.float32), np.ones((t, t), np.float32)]))
    row = s.result(64, 96)[32]
    assert row[40] < 0.5 < row[56]  # x=40 is nearer tile 0's centre (31.5), x=56 tile 1's (63.5)
    assert np.all(np.diff(row[32:64]) >= 0)  # a smooth ramp, no step
