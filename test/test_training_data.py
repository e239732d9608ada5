"""AMi-Br loading, splits and acquisition domains (training/data.py) and the batched torch
augmentations (training/augment.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from conftest import AMIBR, needs_amibr
from training import augment as aug
from training import data as amibr



# --- table and splits on the real data ----------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> list[amibr.Crop]:
    return amibr.load_table(AMIBR)


@needs_amibr
def test_table_matches_published_counts(table):
    assert len(table) == 3720
    assert sum(c.atypical for c in table) == 832
    assert all(c.path.is_file() for c in table[:: 97])
    # the hardness flag follows the votes; both experts gave every crop a phase label
    assert all(c.hard == (0 < sum(c.votes) < 3) for c in table)
    assert all(len(c.phases) == 2 for c in table)


@needs_amibr
def test_published_split_counts_and_disjoint(table):
    train, test = amibr.published_split(AMIBR, table)
    assert (len(train), len(test)) == (amibr.N_TRAIN, amibr.N_TEST) == (2894, 826)
    keys = lambda crops: {(c.dataset, c.uid) for c in crops}  # noqa: E731
    assert not keys(train) & keys(test)
    assert keys(train) | keys(test) == keys(table)
    # the published split is patient-level: no slide on both sides
    assert not {c.slide_key for c in train} & {c.slide_key for c in test}


@needs_amibr
def test_validation_is_split_by_slide(table):
    train, _ = amibr.published_split(AMIBR, table)
    fit, val = amibr.split_by_slide(train, val_fraction=0.15, seed=0)
    assert len(fit) + len(val) == len(train)
    assert not {c.slide_key for c in fit} & {c.slide_key for c in val}
    assert 0.15 * len(train) <= len(val) <= 0.25 * len(train)
    assert sum(c.atypical for c in val) >= 0.15 * sum(c.atypical for c in train)
    # seeded: same seed same split, another seed another split
    assert [c.uid for c in amibr.split_by_slide(train, 0.15, seed=0)[1]] == [c.uid for c in val]
    assert {c.slide_key for c in amibr.split_by_slide(train, 0.15, seed=1)[1]} != {c.slide_key for c in val}


@needs_amibr
def test_load_crops_shape(table):
    images = amibr.load_crops(table[:3])
    assert images.shape == (3, 128, 128, 3) and images.dtype == np.uint8
    assert images.std() > 5  # real histology, not a blank


def _crop(dataset: str, slide: str, uid: int, atypical: bool) -> amibr.Crop:
    votes = (atypical, atypical, False) if uid % 3 == 0 else (atypical,) * 3
    return amibr.Crop(dataset, uid, slide, 0, 0, votes, atypical, Path(f"{uid}.jpg"))  # type: ignore[arg-type]


def test_split_by_slide_groups_by_dataset_and_slide():
    # the same slide name in two datasets is two slides
    crops = [_crop(ds, f"s{i % 10}", k, k % 4 == 0) for k, (ds, i) in
             enumerate((ds, i) for ds in ("A", "B") for i in range(60))]
    fit, val = amibr.split_by_slide(crops, 0.2, seed=3)
    assert val and fit
    assert not {c.slide_key for c in fit} & {c.slide_key for c in val}
    with pytest.raises(ValueError):
        amibr.split_by_slide(crops, 1.5)


def test_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(amibr.DataError, match="not found"):
        amibr.load_table(tmp_path)


def test_inconsistent_majority_is_rejected(tmp_path):
    header = ",slide,dataset,uid,x,y,expert1_label,expert2_label,expert1_atypical,expert2_atypical,expert3_atypical,majority_atypical\n"
    (tmp_path / amibr.TABLE_FILE).write_text(header + "0,a.tiff,MIDOG21,1,5,5,AMF other,NMF metaphase,True,True,False,False\n")
    with pytest.raises(amibr.DataError, match="majority"):
        amibr.load_table(tmp_path, check_files=False)


def test_phase_labels_become_soft_targets(tmp_path):
    header = ",slide,dataset,uid,x,y,expert1_label,expert2_label,expert1_atypical,expert2_atypical,expert3_atypical,majority_atypical\n"
    rows = ["0,a.tiff,MIDOG21,1,5,5,AMF other,NMF metaphase,True,False,True,True",
            "1,a.tiff,MIDOG21,2,5,5,NMF metaphase,NMF metaphase,False,False,False,False",
            "2,a.tiff,MIDOG21,3,5,5,NMF metaphase,,False,False,False,False"]
    (tmp_path / amibr.TABLE_FILE).write_text(header + "\n".join(rows) + "\n")
    crops = amibr.load_table(tmp_path, check_files=False)
    targets = amibr.phase_targets(crops)
    other, meta = amibr.PHASES.index("AMF other"), amibr.PHASES.index("NMF metaphase")
    assert targets.shape == (3, 8) and targets.dtype == np.float32
    assert targets[0, other] == targets[0, meta] == 0.5 and targets[0].sum() == 1.0  # the two experts disagree
    assert targets[1, meta] == 1.0 and targets[2, meta] == 1.0  # agreement, and one expert's label alone
    np.testing.assert_allclose(amibr.vote_fractions(crops), [2 / 3, 0.0, 0.0])
    (tmp_path / amibr.TABLE_FILE).write_text(header + rows[0].replace("AMF other", "AMF tripolar") + "\n")
    with pytest.raises(amibr.DataError, match="unknown phase label 'AMF tripolar'"):
        amibr.load_table(tmp_path, check_files=False)


# --- acquisition domains ------------------------------------------------------------------------


@pytest.mark.parametrize("slide, domain", [("001.tiff", 0), ("002.tiff", 0), ("050.tiff", 0), ("051.tiff", 1),
                                           ("100.tiff", 1), ("101.tiff", 2), ("150.tiff", 2)])
def test_midog21_domain_follows_the_scanner_ranges(slide, domain):
    crop = amibr.Crop("MIDOG21", 1, slide, 0, 0, (False,) * 3, False, Path("x.jpg"))
    assert crop.domain == domain
    assert amibr.DOMAINS[domain].startswith("MIDOG21")


def test_tupac_is_one_domain_and_unknown_slides_are_rejected():
    tupac = amibr.Crop("TUPAC16", 1, "01_stitched1.tif", 0, 0, (False,) * 3, False, Path("x.jpg"))
    assert tupac.domain == 3 and amibr.DOMAINS[3] == "TUPAC16" and len(amibr.DOMAINS) == 4
    for dataset, slide in (("MIDOG21", "000.tiff"), ("MIDOG21", "151.tiff"), ("MIDOG22", "001.tiff")):
        crop = amibr.Crop(dataset, 1, slide, 0, 0, (False,) * 3, False, Path("x.jpg"))
        with pytest.raises(amibr.DataError, match="no acquisition domain"):
            crop.domain  # noqa: B018
    crops = [amibr.Crop("MIDOG21", 1, "120.tiff", 0, 0, (False,) * 3, False, Path("x.jpg")), tupac]
    d = amibr.domains(crops)
    assert d.dtype == np.int64 and d.tolist() == [2, 3]


@pytest.mark.parametrize("dataset, slide", [("MIDOG21", "abc.tiff"), ("CCMCT", "slide-a.svs")])
def test_non_numeric_slide_names_are_a_data_error(dataset, slide):
    crop = amibr.Crop(dataset, 1, slide, 0, 0, (False,) * 3, False, Path("x.jpg"))
    with pytest.raises(amibr.DataError):
        crop.domain  # noqa: B018


@needs_amibr
def test_domains_on_the_real_table(table):
    by_slide = {(c.dataset, c.slide): c for c in table}
    for slide, domain in (("002.tiff", 0), ("050.tiff", 0), ("054.tiff", 1), ("100.tiff", 1),
                          ("101.tiff", 2), ("150.tiff", 2)):
        assert by_slide[("MIDOG21", slide)].domain == domain
    d = amibr.domains(table)
    assert d.shape == (len(table),) and d.dtype == np.int64
    counts = np.bincount(d, minlength=len(amibr.DOMAINS))
    assert counts.size == len(amibr.DOMAINS) and (counts > 0).all()  # every domain is represented
    assert counts[3] == sum(c.dataset == "TUPAC16" for c in table)
    assert counts[:3].sum() == sum(c.dataset == "MIDOG21" for c in table)


# --- augmentations (batches of N x 3 x H x W float tensors) -------------------------------------


@pytest.fixture(scope="module")
def batch_u8() -> np.ndarray:
    """Four real crops (N x H x W x 3 uint8) when the data are there, else synthetic H&E-like ones."""
    if (AMIBR / amibr.TABLE_FILE).is_file():
        return amibr.load_crops(amibr.load_table(AMIBR, check_files=False)[:4])
    rng = np.random.default_rng(0)
    base = np.array([200, 140, 200], np.float64) * rng.uniform(0.5, 1.0, (4, 128, 128, 1))
    return np.clip(base + rng.normal(0, 10, (4, 128, 128, 3)), 0, 255).astype(np.uint8)


@pytest.fixture()
def images(batch_u8) -> torch.Tensor:
    return aug.to_float(torch.from_numpy(batch_u8))


def test_to_float_converts_layout_and_scale(batch_u8):
    x = aug.to_float(torch.from_numpy(batch_u8))
    assert x.shape == (4, 3, 128, 128) and x.dtype == torch.float32
    np.testing.assert_array_equal(x.numpy(), batch_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


RANDOM_OPS = {
    "augment": lambda x, g: aug.augment(x, aug.AugmentConfig(), g),
    "augment-strong": lambda x, g: aug.augment(x, aug.AugmentConfig.strong(), g),
    "photometric": lambda x, g: aug.augment_photometric(x, aug.AugmentConfig(), g),
    "photometric-strong": lambda x, g: aug.augment_photometric(x, aug.AugmentConfig.strong(), g),
    "dihedral": lambda x, g: aug.random_dihedral(x, g=g)[0],
}


@pytest.mark.parametrize("name", RANDOM_OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_augment_keeps_shape_dtype_range_and_is_seeded(images, name, dtype):
    op = RANDOM_OPS[name]
    x = images.to(dtype)
    before = x.clone()
    outs = []
    for seed in range(3):
        out = op(x, aug.generator(seed))
        assert out.shape == x.shape and out.dtype == dtype
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, op(x, aug.generator(seed)))  # same seed, same result
        outs.append(out)
    assert torch.equal(x, before)  # the input is not modified in place
    assert not torch.equal(outs[0], outs[1])  # another seed, another result


def test_generator_continues_its_stream():
    g = aug.generator(5)
    a, b = torch.rand(4, generator=g), torch.rand(4, generator=g)
    assert not torch.equal(a, b)
    assert torch.equal(a, torch.rand(4, generator=aug.generator(5)))


def test_strong_augmentation_changes_every_image(images):
    for seed in range(4):
        out = aug.augment_photometric(images, aug.AugmentConfig.strong(), aug.generator(seed))
        change = (out - images).abs().mean(dim=(1, 2, 3))
        assert (change > 1 / 255).all(), change  # p_hed = 1: every sample is jittered


def test_strong_changes_more_than_default(images):
    def mean_change(config):
        return float(np.mean([(aug.augment_photometric(images, config, aug.generator(s)) - images).abs().mean()
                              for s in range(8)]))

    assert mean_change(aug.AugmentConfig.strong()) > 1.5 * mean_change(aug.AugmentConfig())


def test_zero_probabilities_leave_the_images_alone(images):
    off = aug.AugmentConfig(dihedral=False, p_hed=0.0, p_brightness_contrast=0.0, p_blur=0.0)
    for seed in range(3):
        torch.testing.assert_close(aug.augment(images, off, aug.generator(seed)), images, atol=1e-6, rtol=0)


def test_hed_round_trip_and_identity_jitter(images):
    hed = aug.rgb_to_hed(images)
    assert hed.shape == images.shape
    expected = images.clamp(min=1 / 255)
    torch.testing.assert_close(aug.hed_to_rgb(hed), expected, atol=1e-5, rtol=0)
    n = images.shape[0]
    same = aug.hed_jitter(images, torch.ones(n, 3), torch.zeros(n, 3))
    torch.testing.assert_close(same, expected, atol=1e-5, rtol=0)


def test_rgb_to_hed_matches_the_stain_matrix():
    # a pure haematoxylin pixel of optical density 0.8 is H = 0.8, E = D = 0
    od = 0.8 * aug.RGB_FROM_HED[0]
    rgb = torch.tensor(np.exp(-od), dtype=torch.float64).view(1, 3, 1, 1)
    np.testing.assert_allclose(aug.rgb_to_hed(rgb).flatten().numpy(), [0.8, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(aug.HED_FROM_RGB @ aug.RGB_FROM_HED, np.eye(3), atol=1e-12)


def test_more_haematoxylin_darkens_only_the_jittered_sample(images):
    n = images.shape[0]
    alpha, beta = torch.ones(n, 3), torch.zeros(n, 3)
    alpha[0, 0] = 1.3  # sample 0 only: 30 % more haematoxylin
    out = aug.hed_jitter(images, alpha, beta)
    assert aug.rgb_to_hed(out)[0, 0].mean() > aug.rgb_to_hed(images)[0, 0].mean() + 0.01
    assert out[0].mean() < images[0].mean() - 0.01
    torch.testing.assert_close(out[1:], images[1:].clamp(min=1 / 255), atol=1e-5, rtol=0)
    # a positive shift of eosin reddens: less green is transmitted
    beta[1, 1] = 0.2
    shifted = aug.hed_jitter(images, torch.ones(n, 3), beta)
    assert shifted[1, 1].mean() < images[1, 1].mean() - 0.02


def _reference_symmetry(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Left-right flip then k counter-clockwise quarter turns, on the last two axes (numpy)."""
    return np.rot90(x[..., ::-1] if flip else x, k, axes=(-2, -1))


def test_dihedral_applies_a_symmetry_per_sample(images):
    x = images[:1].expand(8, -1, -1, -1)  # eight copies of one image
    k = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    flip = torch.tensor([False] * 4 + [True] * 4)
    out = aug.dihedral(x, k, flip)
    for i in range(8):
        np.testing.assert_array_equal(out[i].numpy(), _reference_symmetry(images[0].numpy(), int(k[i]), bool(flip[i])))
    assert len({out[i].numpy().tobytes() for i in range(8)}) == 8  # the 8 symmetries are distinct
    assert torch.equal(aug.dihedral(images, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.bool)), images)
    # maps (N x H x W) follow the same rule as the image channels
    maps = (x[:, 0] * 255).to(torch.uint8)
    assert torch.equal(aug.dihedral(maps, k, flip), (out[:, 0] * 255).to(torch.uint8))


def test_dihedral_moves_label_maps_with_the_images(images):
    x = images.repeat(4, 1, 1, 1)  # 16 samples: different symmetries within one batch
    mask = (x[:, 0] > 0.5).to(torch.uint8)
    heat = x[:, 1].clone()
    seen = set()
    for seed in range(4):
        im, m, h = aug.random_dihedral(x, mask, heat, g=aug.generator(seed))
        assert m.dtype == torch.uint8 and h.dtype == torch.float32
        assert torch.equal(m, (im[:, 0] > 0.5).to(torch.uint8))
        assert torch.equal(h, im[:, 1])
        k, flip = aug.random_dihedral_params(16, aug.generator(seed), "cpu")
        assert torch.equal(im, aug.dihedral(x, k, flip))  # the parameters random_dihedral draws
        seen |= set(zip(k.tolist(), flip.tolist()))
    assert len(seen) == 8  # per-sample symmetries, all eight of them drawn


def test_random_dihedral_params_are_uniform():
    k, flip = aug.random_dihedral_params(8000, aug.generator(0), "cpu")
    assert k.shape == flip.shape == (8000,) and flip.dtype == torch.bool
    counts = np.bincount((k * 2 + flip.long()).numpy(), minlength=8)
    assert counts.size == 8 and (abs(counts - 1000) < 150).all()


def test_dihedral_needs_square_images():
    with pytest.raises(ValueError, match="square"):
        aug.dihedral(torch.rand(2, 3, 8, 16), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.bool))


def test_focus_and_contrast_ops(images):
    n = images.shape[0]
    std = images.std(dim=(1, 2, 3))
    assert (aug.gaussian_blur(images, torch.full((n,), 1.5)).std(dim=(1, 2, 3)) < std).all()
    assert (aug.sharpen(images, torch.ones(n)).std(dim=(1, 2, 3)) > std).all()
    assert torch.equal(aug.sharpen(images, torch.zeros(n)), images)
    torch.testing.assert_close(aug.brightness_contrast(images, torch.zeros(n), torch.ones(n)), images,
                               atol=1e-6, rtol=0)
    # brightness shifts, contrast 0 flattens each image to its own mean
    flat = aug.brightness_contrast(images, torch.full((n,), 0.05), torch.zeros(n))
    torch.testing.assert_close(flat, (images.mean(dim=(1, 2, 3), keepdim=True) + 0.05).expand_as(images),
                               atol=1e-6, rtol=0)
    blurred = aug.gaussian_blur(torch.full((2, 3, 16, 16), 0.3), torch.tensor([0.7, 2.0]))
    torch.testing.assert_close(blurred, torch.full_like(blurred, 0.3))  # a flat image stays flat


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7])
def test_gaussian_blur_matches_scipy(images, sigma):
    out = aug.gaussian_blur(images, sigma)
    # torch's "reflect" padding is scipy's "mirror"; both cut the kernel at ceil(3 sigma) px here
    radius = int(np.ceil(3 * sigma))
    ref = ndi.gaussian_filter(images.numpy().astype(np.float64), sigma=(0, 0, sigma, sigma), mode="mirror",
                              radius=(0, 0, radius, radius))
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


def test_gaussian_blur_stays_in_range():
    g = aug.generator(0)
    x = torch.rand(16, 3, 64, 64, generator=g).clamp(0.5, 1.0)
    x = torch.where(torch.rand(x.shape, generator=g) > 0.5, torch.ones_like(x), x)  # many pixels at exactly 1
    out = aug.gaussian_blur(x, 0.1 + 1.2 * torch.rand(16, generator=g))
    assert out.min() >= 0 and out.max() <= 1


def test_per_sample_parameters_are_independent(images):
    n = images.shape[0]
    # one sample's result depends on its own parameters and pixels only, not on the rest of the batch
    b, c = torch.tensor([0.1, -0.05, 0.0, 0.02]), torch.tensor([1.2, 0.8, 1.0, 1.1])
    sigma, amount = torch.tensor([0.5, 1.0, 1e-3, 1.5]), torch.tensor([0.0, 0.5, 1.0, 0.2])
    alpha = torch.tensor([[1.1, 0.9, 1.0], [1.0, 1.0, 1.0], [0.95, 1.05, 1.0], [1.0, 1.1, 0.9]])
    beta = torch.tensor([[0.02, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, -0.03, 0.01], [0.0, 0.0, 0.05]])
    for i in range(n):
        one = slice(i, i + 1)
        torch.testing.assert_close(aug.brightness_contrast(images, b, c)[i],
                                   aug.brightness_contrast(images[one], b[one], c[one])[0])
        # (the kernel is cut at 3 x the batch's largest sigma: a wider cut moves values by ~1e-4)
        torch.testing.assert_close(aug.gaussian_blur(images, sigma)[i], aug.gaussian_blur(images[one], sigma[one])[0],
                                   atol=1e-3, rtol=0)
        torch.testing.assert_close(aug.sharpen(images, amount)[i], aug.sharpen(images[one], amount[one])[0])
        torch.testing.assert_close(aug.hed_jitter(images, alpha, beta)[i],
                                   aug.hed_jitter(images[one], alpha[one], beta[one])[0])
    # a tiny sigma leaves its sample alone while another sample of the batch is blurred
    blurred = aug.gaussian_blur(images, sigma)
    torch.testing.assert_close(blurred[2], images[2], atol=1e-6, rtol=0)
    assert (blurred[3] - images[3]).abs().mean() > 1e-3


ONLY = dict(dihedral=False, p_hed=0.0, p_brightness_contrast=0.0, p_blur=0.0)


@pytest.mark.parametrize("config", [
    aug.AugmentConfig.strong(),
    aug.AugmentConfig(p_hed=1.0),
    aug.AugmentConfig(**{**ONLY, "p_hed": 1.0, "hed_bias": 0.0}),  # stain scales only
    aug.AugmentConfig(**{**ONLY, "p_hed": 1.0, "hed_sigma": 0.0}),  # stain shifts only
    aug.AugmentConfig(**{**ONLY, "p_brightness_contrast": 1.0, "contrast": 0.0}),  # brightness only
    aug.AugmentConfig(**{**ONLY, "p_brightness_contrast": 1.0, "brightness": 0.0}),  # contrast only
    aug.AugmentConfig(**{**ONLY, "p_blur": 1.0}),  # blur only, per-sample sigma
], ids=["strong", "default", "hed-scale", "hed-shift", "brightness", "contrast", "blur"])
def test_random_parameters_differ_between_samples(images, config):
    x = images[:1].repeat(8, 1, 1, 1)  # identical samples: any difference comes from the parameters
    out = aug.augment(x, config, aug.generator(0))
    assert len({out[i].numpy().tobytes() for i in range(8)}) == 8


def test_sharpening_amount_differs_between_samples(images):
    # p_blur = 0.5: each sample is either blurred or sharpened; the sharpened ones (sharper than the
    # input) each get their own amount
    x = images[:1].repeat(16, 1, 1, 1)
    config = aug.AugmentConfig(**{**ONLY, "p_blur": 0.5})
    out = aug.augment(x, config, aug.generator(0))
    sharper = out.std(dim=(1, 2, 3)) > x.std(dim=(1, 2, 3))
    assert 2 <= int(sharper.sum()) <= 14
    assert len({o.numpy().tobytes() for o in out[sharper]}) == int(sharper.sum())


def test_bad_images_are_rejected(images):
    g = aug.generator(0)
    cfg = aug.AugmentConfig()
    for bad in (np.zeros((2, 3, 8, 8), np.float32), torch.zeros(3, 8, 8), torch.zeros(2, 8, 8, 3),
                torch.zeros(2, 4, 8, 8)):
        with pytest.raises(ValueError, match="N x 3 x H x W"):
            aug.augment(bad, cfg, g)
        with pytest.raises(ValueError, match="N x 3 x H x W"):
            aug.augment_photometric(bad, cfg, g)
    uint8 = (images * 255).to(torch.uint8)
    n = images.shape[0]
    for call in (lambda: aug.augment(uint8, cfg, g), lambda: aug.augment_photometric(uint8, cfg, g),
                 lambda: aug.hed_jitter(uint8, torch.ones(n, 3), torch.zeros(n, 3)),
                 lambda: aug.brightness_contrast(uint8, torch.zeros(n), torch.ones(n)),
                 lambda: aug.gaussian_blur(uint8, 1.0), lambda: aug.sharpen(uint8, torch.ones(n))):
        with pytest.raises(ValueError, match="floating pixels"):
            call()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_augmentations_on_the_gpu_match_the_cpu(images):
    gpu = images.cuda()
    n = images.shape[0]
    k, flip = torch.tensor([0, 1, 2, 3]), torch.tensor([True, False, True, False])
    alpha, beta = 1 + 0.1 * torch.rand(n, 3), 0.05 * torch.rand(n, 3)
    sigma, b, c = torch.tensor([0.4, 0.9, 1.2, 1e-3]), torch.full((n,), 0.05), torch.full((n,), 1.2)
    for cpu_out, gpu_out in (
        (aug.dihedral(images, k, flip), aug.dihedral(gpu, k.cuda(), flip.cuda())),
        (aug.hed_jitter(images, alpha, beta), aug.hed_jitter(gpu, alpha.cuda(), beta.cuda())),
        (aug.gaussian_blur(images, sigma), aug.gaussian_blur(gpu, sigma.cuda())),
        (aug.sharpen(images, sigma), aug.sharpen(gpu, sigma.cuda())),
        (aug.brightness_contrast(images, b, c), aug.brightness_contrast(gpu, b.cuda(), c.cuda())),
    ):
        assert gpu_out.is_cuda
        torch.testing.assert_close(gpu_out.cpu(), cpu_out, atol=1e-4, rtol=0)
    g = aug.generator(0, "cuda")
    out = aug.augment(gpu, aug.AugmentConfig.strong(), g)
    assert out.is_cuda and out.shape == gpu.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, aug.augment(gpu, aug.AugmentConfig.strong(), aug.generator(0, "cuda")))


def test_save_npz_is_atomic_and_cache_key_follows_the_code(tmp_path, monkeypatch):
    from training import runtime

    path = tmp_path / "sub" / "cache.npz"
    runtime.save_npz(path, compressed=True, a=np.arange(3))
    assert np.array_equal(np.load(path)["a"], np.arange(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["cache.npz"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        runtime.save_npz(path, a=np.arange(5))
    assert np.array_equal(np.load(path)["a"], np.arange(3))  # the old file survives, no temporary left
    assert sorted(p.name for p in path.parent.iterdir()) == ["cache.npz"]

    code = tmp_path / "labels.py"
    code.write_text("A = 1\n")
    key = runtime.cache_key(["crop1", "crop2"], code)
    assert key == runtime.cache_key(iter(["crop1", "crop2"]), code) and len(key) == 16
    assert key != runtime.cache_key(["crop1"], code)
    code.write_text("A = 2\n")
    assert key != runtime.cache_key(["crop1", "crop2"], code)


def test_portable_path_keeps_a_linked_shared_folder_relative(tmp_path, monkeypatch):
    """A ``../shared`` that is a symbolic link (a lab's data elsewhere) is recorded as
    ``../shared/...``, not as the link's target; paths elsewhere are kept as given."""
    from training import runtime

    checkout = tmp_path / "work" / "repo"
    checkout.mkdir(parents=True)
    data = tmp_path / "disk" / "data"
    (data / "ami-br").mkdir(parents=True)
    (tmp_path / "work" / "shared").symlink_to(data)
    monkeypatch.setattr(runtime, "REPO_ROOT", checkout)
    assert runtime.portable_path(tmp_path / "work" / "shared" / "ami-br") == "../shared/ami-br"
    assert runtime.portable_path(checkout / "weights") == "weights"
    assert runtime.portable_path(data / "ami-br") == str(data / "ami-br")
    # a checkout reached through a link: the resolved path still lies beside it
    (tmp_path / "link").symlink_to(tmp_path / "work")
    assert runtime.portable_path(tmp_path / "link" / "repo" / "weights") == "weights"
