import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from mitosis_analysis.errors import InputError
from mitosis_analysis.readers import read_roi, read_stack, to_rgb_uint8
from mitosis_analysis.settings import Settings

S = Settings()


def rgb(h=64, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_tiff_spacing_from_resolution_in_cm(tmp_path):
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, rgb(), resolution=(40000, 40000), resolutionunit="CENTIMETER")
    roi = read_roi(p, S)
    assert roi.spacing_mm == pytest.approx((0.00025, 0.00025)) and not roi.spacing_assumed
    np.testing.assert_array_equal(roi.pixels, rgb())


def test_tiff_spacing_from_resolution_in_inch_anisotropic(tmp_path):
    p = tmp_path / "a.tiff"
    tifffile.imwrite(p, rgb(), resolution=(101600, 50800), resolutionunit="INCH")
    assert read_roi(p, S).spacing_mm == pytest.approx((0.00025, 0.0005))


@pytest.mark.parametrize("kwargs", [{}, {"resolution": (1, 1), "resolutionunit": "INCH"}, {"resolution": (4, 4), "resolutionunit": "NONE"}])
def test_missing_or_meaningless_spacing_is_assumed_and_said(tmp_path, capsys, kwargs):
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, rgb(), **kwargs)
    roi = read_roi(p, S)
    assert roi.spacing_assumed and roi.spacing_mm == (0.00025, 0.00025)
    assert "assuming 0.25 um/px" in capsys.readouterr().err


def test_mha_spacing_and_default_one(tmp_path, capsys):
    img = sitk.GetImageFromArray(rgb(), isVector=True)
    img.SetSpacing((0.000242, 0.000242))
    sitk.WriteImage(img, str(tmp_path / "a.mha"))
    assert read_roi(tmp_path / "a.mha", S).spacing_mm == pytest.approx((0.000242, 0.000242))
    sitk.WriteImage(sitk.GetImageFromArray(rgb(), isVector=True), str(tmp_path / "b.mha"))  # spacing 1.0
    assert read_roi(tmp_path / "b.mha", S).spacing_assumed
    assert "implausible" in capsys.readouterr().err


@pytest.mark.parametrize(
    "array,message",
    [
        (np.full((10, 12), 7, np.uint8), "grayscale"),
        (np.dstack([rgb(10, 12), np.full((10, 12), 255, np.uint8)]), "RGBA"),
        ((rgb(10, 12).astype(np.uint16) * 257), "16-bit"),
    ],
)
def test_conversions_warn(array, message, capsys):
    out = to_rgb_uint8(array, "x")
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    assert message in capsys.readouterr().err


def test_16_bit_scaled_exactly():
    a = rgb(4, 4).astype(np.uint16) * 257
    np.testing.assert_array_equal(to_rgb_uint8(a, "x"), rgb(4, 4))


def test_corrupt_truncated_and_empty_images(tmp_path):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, rgb(256, 256), compression="zlib")
    (tmp_path / "trunc.tif").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "junk.tif").write_bytes(b"this is not a tiff at all")
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 10, 3), np.uint8))
    for name in ("trunc.tif", "junk.tif", "empty.tif"):
        with pytest.raises(InputError) as exc:
            read_roi(tmp_path / name, S)
        assert name in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(InputError, match="unsupported image format"):
        (tmp_path / "a.png").write_bytes(b"x")
        read_roi(tmp_path / "a.png", S)


def test_stack_pages_in_order_and_resized(tmp_path, capsys):
    pages = [np.full((128, 128, 3), i * 10, np.uint8) for i in range(5)]
    tifffile.imwrite(tmp_path / "s.tif", np.stack(pages))  # one multi-page series
    out = np.concatenate(list(read_stack(tmp_path / "s.tif", 128, S)))
    assert out.shape == (5, 128, 128, 3) and [int(p[0, 0, 0]) for p in out] == [0, 10, 20, 30, 40]
    with tifffile.TiffWriter(tmp_path / "m.tif") as w:
        w.write(np.full((128, 128, 3), 1, np.uint8))
        w.write(np.full((100, 90, 3), 2, np.uint8))
    out = np.concatenate(list(read_stack(tmp_path / "m.tif", 128, S)))
    assert out.shape == (2, 128, 128, 3) and int(out[1, 64, 64, 0]) == 2
    assert "resized to 128x128" in capsys.readouterr().err


def test_mha_stack(tmp_path):
    stack = np.stack([np.full((128, 128, 3), i, np.uint8) for i in range(3)])
    sitk.WriteImage(sitk.GetImageFromArray(stack, isVector=True), str(tmp_path / "s.mha"))
    out = np.concatenate(list(read_stack(tmp_path / "s.mha", 128, S)))
    assert out.shape == (3, 128, 128, 3) and [int(p[0, 0, 0]) for p in out] == [0, 1, 2]
