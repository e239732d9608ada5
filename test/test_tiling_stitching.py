import numpy as np
import pytest

from mitosis_analysis.stitching import Stitcher
from mitosis_analysis.tiling import gaussian_weights, iter_batches, padded_shape, tile_grid, tile_starts


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


@pytest.mark.parametrize("h, w, align", [(300, 200, 1), (600, 600, 1), (1, 1, 1), (1001, 130, 4), (517, 1030, 4)])
def test_tiles_past_the_image_are_what_padding_the_whole_image_gives(h, w, align):
    """Only tiles that reach past the image are padded, as they are cut: the same pixels as
    np.pad of the whole image (reflection, or the edge repeated when the image is thinner than
    the padding)."""
    img = np.random.default_rng(h).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ph, pw = padded_shape(h, w, 512, align)
    assert ph >= max(h, 512) and pw >= max(w, 512) and ph % align == 0 and pw % align == 0
    mode = "reflect" if ph - h < h and pw - w < w else "edge"
    whole = np.pad(img, ((0, ph - h), (0, pw - w), (0, 0)), mode=mode)
    tiles = tile_grid(ph, pw, 512, 256, align)
    for chunk, batch in iter_batches(img, tiles, 512, 4, align):
        for t, b in zip(chunk, batch):
            np.testing.assert_array_equal(b, whole[t.y : t.y + 512, t.x : t.x + 512])


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


def test_aligned_tile_starts_are_multiples_of_the_stride_and_cover_the_axis():
    starts = tile_starts(1000, 512, 256, align=4)
    assert all(s % 4 == 0 for s in starts) and starts[0] == 0 and starts[-1] == 1000 - 512
    assert max(np.diff(starts)) <= 256
    with pytest.raises(ValueError):
        tile_starts(1002, 512, 256, align=4)  # pad first
    assert padded_shape(1001, 130, 512, 4) == (1004, 512)


def test_tile_tissue_fractions_match_a_pass_over_each_tile():
    """One mask per image and an integral image give what a pass over each tile's pixels gives
    (the mask subsampled every 4th pixel: within a few per cent)."""
    from mitosis_analysis.tissue import tile_tissue_fractions, tissue_mask

    rng = np.random.default_rng(5)
    image = np.full((1500, 1300, 3), 235, np.uint8)  # glass
    for _ in range(40):  # stained blobs of assorted sizes
        y, x, r = rng.integers(0, 1500), rng.integers(0, 1300), rng.integers(10, 200)
        yy, xx = np.ogrid[:1500, :1300]
        image[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = (150, 60, 140)
    tiles = tile_grid(1500, 1300, 512, 256)
    fast = tile_tissue_fractions(image, tiles, 512)
    slow = [tissue_mask(image[t.y : t.y + 512, t.x : t.x + 512]).mean() for t in tiles]
    assert np.abs(fast - np.array(slow)).max() < 0.02
    assert ((fast >= 0) & (fast <= 1)).all()
