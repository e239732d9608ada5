"""Slide mode, the parts: readers (openslide and tifffile on generated pyramidal TIFFs), level
choice and resampling, tissue mask, hotspot search, progress bar."""

import io
import itertools
import math

import numpy as np
import pytest

from mitosis_analysis.errors import InputError
from mitosis_analysis.settings import Settings
from mitosis_analysis.slide.hotspot import count_in_square, densest_square
from mitosis_analysis.slide.progress import Progress, format_duration
from mitosis_analysis.slide.reader import open_slide, thumbnail
from mitosis_analysis.source import ArraySource, Level, SlideView, choose_level
from mitosis_analysis.slide.synthetic import GLASS_RGB, TISSUE_RGB, SyntheticSlide, write_slide_tiff
from mitosis_analysis.morphology import otsu_threshold, remove_small_objects
from mitosis_analysis.slide.tissue import fill_small_holes, tissue_mask

SLIDE = SyntheticSlide(3000, 2200, tissue=((400, 300, 2600, 1900),), figures=((1000.0, 800.0), (2000.0, 1500.0)))


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    return {
        pyramid: write_slide_tiff(folder / f"{pyramid}.tif", SLIDE, pyramid=pyramid)
        for pyramid in ("pages", "subifds")
    }


@pytest.fixture()
def plain_settings():
    return Settings(device="cpu")


# --------------------------------------------------------------------------- readers


def test_both_readers_see_the_pages_pyramid_alike(slides, plain_settings):
    with open_slide(slides["pages"], plain_settings, "openslide") as osl, \
            open_slide(slides["pages"], plain_settings, "tifffile") as tif:
        assert (osl.backend, tif.backend) == ("openslide", "tifffile")
        assert [(lv.width, lv.height) for lv in osl.levels] == [(3000, 2200), (1500, 1100)]
        assert [lv.width for lv in tif.levels] == [lv.width for lv in osl.levels]
        for a, b in zip(osl.levels, tif.levels):
            assert a.spacing_mm == pytest.approx(b.spacing_mm)
        assert osl.levels[0].spacing_mm == pytest.approx((0.00025, 0.00025))
        for level, box in ((0, (950, 750, 100, 100)), (0, (2950, 2150, 50, 50)), (1, (200, 150, 700, 500))):
            a, b = osl.read(level, *box), tif.read(level, *box)
            assert a.shape == b.shape == (box[3], box[2], 3)
            assert np.abs(a.astype(int) - b).max() <= 2  # same JPEG tiles, two decoders
        # a figure is dark at its centre, glass is glass
        assert tif.read(0, 1000, 800, 1, 1).mean() < 80
        assert np.abs(tif.read(0, 10, 10, 4, 4).astype(int) - GLASS_RGB).max() <= 3


def test_subifd_pyramid_levels_reach_tifffile_only(slides, plain_settings):
    with open_slide(slides["subifds"], plain_settings, "tifffile") as tif:
        assert len(tif.levels) == 2
    with open_slide(slides["subifds"], plain_settings, "openslide") as osl:
        assert len(osl.levels) == 1  # openslide's generic TIFF reader ignores SubIFDs
        region = osl.read(0, 990, 790, 20, 20)
    with open_slide(slides["subifds"], plain_settings, "tifffile") as tif:
        assert np.abs(region.astype(int) - tif.read(0, 990, 790, 20, 20)).max() <= 2


def test_auto_reader_and_bad_input(slides, plain_settings, tmp_path):
    with open_slide(slides["pages"], plain_settings) as source:
        assert source.backend == "tifffile"  # generic TIFF, no vendor format
    with pytest.raises(InputError, match="slide not found"):
        open_slide(tmp_path / "missing.svs", plain_settings)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a TIFF at all")
    with pytest.raises(InputError, match="cannot read TIFF"):
        open_slide(junk, plain_settings)
    with pytest.raises(InputError, match="cannot open slide"):
        open_slide(junk.rename(tmp_path / "junk.svs"), plain_settings)


@pytest.mark.parametrize("channels", [3, 4, 1])
def test_plain_stripped_tiff_is_read_by_regions(tmp_path, plain_settings, channels):
    import tifffile

    image = np.random.default_rng(0).integers(0, 255, (700, 500, channels), dtype=np.uint8)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, image if channels > 1 else image[..., 0], rowsperstrip=64, resolution=(40000, 40000),
                     resolutionunit="CENTIMETER", photometric="rgb" if channels > 1 else "minisblack")
    expected = np.repeat(image, 3, axis=-1) if channels == 1 else image[..., :3]  # alpha dropped, gray replicated
    with open_slide(path, plain_settings) as source:
        assert len(source.levels) == 1 and source.levels[0].spacing_mm == pytest.approx((0.00025, 0.00025))
        np.testing.assert_array_equal(source.read(0, 37, 100, 300, 250), expected[100:350, 37:337])


def test_16_bit_tiff_is_refused_in_one_line(tmp_path, plain_settings):
    import tifffile

    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint16))
    with pytest.raises(InputError, match="8-bit images only"):
        open_slide(path, plain_settings)


# --------------------------------------------------------------------------- level choice and resampling


def _levels(*um):
    return [Level(1000, 1000, (u / 1000, u / 1000)) for u in um]


@pytest.mark.parametrize(
    "spacings_um, expected",
    [
        ((0.25, 0.5, 1.0), (0, False)),
        ((0.125, 0.25, 0.5), (1, False)),
        ((0.24, 0.96), (0, False)),  # within 10 %
        ((0.17, 0.34, 0.68), (0, True)),  # 0.34 is too coarse: downsample 0.17
        ((0.1, 0.2, 0.4), (1, True)),  # the coarsest finer than 0.25 is 0.2
        ((0.5, 1.0), (0, True)),  # every level coarser: upsample level 0
    ],
)
def test_choose_level(spacings_um, expected):
    assert choose_level(_levels(*spacings_um), 0.00025, 0.1) == expected


def test_view_resamples_a_finer_slide(tmp_path, plain_settings):
    fine = SyntheticSlide(1600, 1200, tissue=((0, 0, 1600, 1200),), figures=((800.0, 400.0),),
                          figure_radius=12.0, spacing_mm=0.000125, texture=False)
    path = write_slide_tiff(tmp_path / "fine.tif", fine, pyramid="none", compression="zlib")
    with open_slide(path, plain_settings) as source:
        view = SlideView(source, 0.00025, 0.1)
        assert (view.width, view.height, view.resampled) == (800, 600, True)
        region = view.read(380, 180, 40, 40)
        assert region[20, 20].mean() < 60  # the figure, now at (400, 200)
        x0, y0 = view.to_level0(np.array([400.0]), np.array([200.0]))
        assert (x0[0], y0[0]) == pytest.approx((800.5, 400.5))  # centre of working px 400 = level-0 800.5


def test_resample_of_a_box_is_that_part_of_the_whole_image():
    """Regions resampled one by one tile the resampled image without seams."""
    from mitosis_analysis.resample import resample

    image = np.random.default_rng(0).integers(0, 256, (230, 170, 3), dtype=np.uint8)
    whole = resample(image, (100, 74), (0.0, 0.0, 170.2, 230.0))
    part = resample(image, (40, 30), (23.0, 46.0, 92.0, 138.0))  # output rows 20-60, cols 10-40
    # Pillow's fixed-point weights: the same filter taps, a rounding apart at most
    assert np.abs(part.astype(int) - whole[20:60, 10:40]).max() <= 1
    assert np.array_equal(resample(image, (230, 170)), image)  # same grid: untouched


def test_resample_shrinks_without_aliasing():
    """A one-pixel checkerboard shrunk 3x is grey: the filter widens with the factor (bilinear
    sampling without it would return a pattern of near-black and near-white pixels)."""
    from mitosis_analysis.resample import resample

    board = ((np.indices((300, 300)).sum(axis=0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, axis=-1)
    small = resample(board, (100, 100)).astype(int)
    assert np.abs(small[5:-5, 5:-5] - 127.5).max() < 30


def test_array_source_regions_match_the_whole_resampled_roi():
    """A 0.125 um/px ROI behind the one source interface: read at 0.25 um/px in boxes, the boxes
    are the whole view's pixels, and points map back to the ROI's pixel centres."""
    image = np.random.default_rng(1).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    view = SlideView(ArraySource(image, (0.000125, 0.000125)), 0.00025, 0.1)
    assert (view.width, view.height, view.resampled) == (400, 300, True)
    whole = view.read(0, 0, 400, 300)
    assert np.abs(view.read(128, 64, 200, 100).astype(int) - whole[64:164, 128:328]).max() <= 1
    x0, y0 = view.to_level0(np.array([10.0]), np.array([0.0]))
    assert (x0[0], y0[0]) == pytest.approx((20.5, 0.5))
    same = SlideView(ArraySource(image, (0.00024, 0.00026)), 0.00025, 0.1)  # within 10 %: as it is
    assert not same.resampled
    assert np.array_equal(same.read(5, 6, 7, 8), image[6:14, 5:12])


def test_thumbnail_is_small_and_averaged(slides, plain_settings):
    with open_slide(slides["pages"], plain_settings) as source:
        thumb = thumbnail(source, max_side=300, min_spacing_mm=0.004)
    assert max(thumb.pixels.shape[:2]) <= 300
    assert thumb.spacing_mm[0] >= 0.0025  # 0.75 mm / 300 px
    h, w = thumb.pixels.shape[:2]
    centre = thumb.pixels[h // 2, w // 2].astype(int)
    assert np.abs(centre - TISSUE_RGB).max() < 25
    assert np.abs(thumb.pixels[0, 0].astype(int) - GLASS_RGB).max() < 5


# --------------------------------------------------------------------------- tissue mask


def test_otsu_splits_two_populations():
    values = np.concatenate([np.full(900, 0.03), np.full(100, 0.5)])
    # Every cut between the two masses is equally good: the middle of that plateau is taken.
    assert otsu_threshold(values, value_range=(0.0, 1.0)) == pytest.approx(0.265, abs=0.005)
    assert 0.03 < otsu_threshold(values) < 0.5
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 5000), rng.normal(0.8, 0.03, 1000)])
    assert 0.4 < otsu_threshold(values) < 0.6
    assert otsu_threshold(np.full(10, 3.0)) == 3.0


def test_tissue_mask_keeps_tissue_drops_glass_fills_small_holes():
    rgb = np.empty((200, 200, 3), np.uint8)
    rgb[:] = GLASS_RGB
    rgb[40:160, 40:160] = TISSUE_RGB
    rgb[60:63, 60:63] = GLASS_RGB  # small hole: filled
    rgb[100:150, 100:150] = GLASS_RGB  # large lumen: kept
    rgb[5:7, 190:192] = TISSUE_RGB  # speck: dropped
    mask = tissue_mask(rgb, (0.01, 0.01), (0.00025, 0.00025), max_hole_mm2=0.05, min_object_mm2=0.002)
    assert mask.tissue[61, 61] and not mask.tissue[125, 125] and not mask.tissue[6, 190]
    assert mask.tissue[50, 50] and not mask.tissue[20, 20]
    assert mask.area_mm2 == pytest.approx((120 * 120 - 50 * 50) * 1e-4)
    assert mask.inference.sum() > mask.tissue.sum()  # dilated margin
    assert mask.scale == (40.0, 40.0)


def test_blank_glass_has_no_tissue():
    rgb = np.random.default_rng(1).normal(GLASS_RGB, 3, (100, 100, 3)).clip(0, 255).astype(np.uint8)
    mask = tissue_mask(rgb, (0.01, 0.01), (0.00025, 0.00025))
    assert not mask.tissue.any() and not mask.inference.any() and mask.area_mm2 == 0


def test_morphology_helpers():
    m = np.zeros((10, 10), bool)
    m[1:3, 1:3] = True
    m[5:10, 5:10] = True
    assert remove_small_objects(m, 5).sum() == 25
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    assert fill_small_holes(ring, 2)[3, 3] and not fill_small_holes(ring, 1)[3, 3]


# --------------------------------------------------------------------------- hotspot


def test_hotspot_finds_the_dense_cluster():
    cluster = [(5.1, 5.2), (5.5, 5.9), (6.0, 5.0), (6.2, 6.3), (5.3, 6.1)]  # within 1.2 mm
    sparse = [(1.0, 1.0), (1.5, 1.2), (9.0, 9.0)]
    points = np.array(sparse[:2] + cluster + sparse[2:])
    hot = densest_square(points, 2.0, extent_mm=(10.0, 10.0))
    assert hot.count == 5 and hot.side_mm == pytest.approx(math.sqrt(2))
    assert hot.members == (2, 3, 4, 5, 6)
    assert count_in_square(points, hot.x_mm, hot.y_mm, hot.side_mm) == 5
    # centred on its points: bounding box (5.1..6.2, 5.0..6.3)
    assert hot.centre_mm == pytest.approx((5.65, 5.65))


def test_hotspot_edges_are_inclusive_and_window_stays_on_the_slide():
    side = math.sqrt(2)
    points = np.array([[0.0, 0.0], [side, 0.0], [0.0, side], [side, side], [2.0, 2.0]])
    hot = densest_square(points, 2.0, extent_mm=(3.0, 3.0))
    assert hot.count == 4
    assert (hot.x_mm, hot.y_mm) == pytest.approx((0.0, 0.0))
    lone = densest_square(np.array([[0.1, 2.9]]), 2.0, extent_mm=(3.0, 3.0))
    assert lone.count == 1 and 0 <= lone.x_mm and lone.y_mm + lone.side_mm <= 3.0 + 1e-9


def test_hotspot_without_points():
    assert densest_square(np.zeros((0, 2))) is None
    with pytest.raises(ValueError):
        densest_square(np.ones((1, 2)), 0.0)


def _brute_force_max(points, side):
    """Independent search: squares with left and top edges on point coordinates."""
    return max(count_in_square(points, x, y, side) for x, y in itertools.product(points[:, 0], points[:, 1]))


@pytest.mark.parametrize("seed", range(5))
def test_hotspot_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    points = np.concatenate([rng.uniform(0, 8, (40, 2)), rng.normal(4, 0.6, (15, 2))])
    hot = densest_square(points, 2.0)
    assert hot.count == _brute_force_max(points, math.sqrt(2))
    assert count_in_square(points, hot.x_mm, hot.y_mm, hot.side_mm) == hot.count


# --------------------------------------------------------------------------- progress


def test_progress_counts_and_estimates_time_left():
    stream = io.StringIO()
    progress = Progress(100, 20, stream=stream, interval_s=0.0)
    progress._start -= 10.0  # 10 s ago, 0 tiles since: no estimate yet
    assert progress.eta_s() is None
    progress.advance(40)  # 40 tiles in 10 s -> 40 left take 10 s
    assert progress.eta_s() == pytest.approx(10.0, rel=0.05)
    assert "60/100 tiles" in stream.getvalue() and "0:10 left" in stream.getvalue()
    progress.correct_total(-10)
    progress.finish()
    assert stream.getvalue().splitlines()[-1].startswith("[") and "60/90" in stream.getvalue()
    assert format_duration(3725) == "1:02:05" and format_duration(59) == "0:59"


def test_the_benchmarks_patch_scene_is_seeded_and_its_patches_never_overlap():
    a = SyntheticSlide.patches(4096, 6, 512, seed=3)
    assert a == SyntheticSlide.patches(4096, 6, 512, seed=3) != SyntheticSlide.patches(4096, 6, 512, seed=4)
    assert (a.width, a.height, len(a.tissue), len(a.figures)) == (4096, 4096, 6, 30)
    for i, p in enumerate(a.tissue):
        assert p[2] - p[0] == p[3] - p[1] == 512 and 0 <= p[0] and p[2] <= 4096
        assert not any(p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3] for q in a.tissue[i + 1 :])
        inside = [f for f in a.figures if p[0] + 40 <= f[0] <= p[2] - 40 and p[1] + 40 <= f[1] <= p[3] - 40]
        assert len(inside) == 5
