"""Train the stage-2 verifier (``model/verifier.py``): mitosis vs look-alike on a crop centred on a
stage-1 candidate; leave-one-slide-out on the ICPR 2012 fields.

Crops (``build_pool``, cached under ``training/cache/``; never committed), stored at ``POOL_SIZE``
px and cut to the input size at a random offset (jitter of +-4 px per axis, ``--jitter``) while
training:

positives  ``icpr_pos``   the 226 restored ICPR 2012 scanner-A mitoses (centroids)
           ``cand_pos``   the stage-1 candidates (score >= --verify-floor) within 7.5 um of an A mitosis,
                          at the candidate's position: the crop the product will show the verifier
                          (median offset from the centroid 3.2 px, 13 % beyond 8 px; 214 of 226)
           ``amibr_pos``  the centres of all 3,720 AMi-Br crops (each centred on a mitosis)
           ``ma_pos``     the 564 MITOS-ATYPIA-14 mitosis crops (50 px, padded by reflection)
negatives  ``cand_A``     stage-1 candidates (score >= --verify-floor) on A fields > 7.5 um from every mitosis
           ``cand_H``     the same on H fields (resampled to 0.25 um/px), outside the ignore region,
                          crop window clear of it (no painted or filled pixel reaches the model)
           ``rand_A``     random points of A fields > 7.5 um from every mitosis
           ``amibr_neg``  MIDOG++ "not mitotic figure" boxes inside AMi-Br crops, and a corner of each
                          AMi-Br crop > 7.5 um from every annotated mitosis
           ``ma_neg``     the 643 MITOS-ATYPIA-14 random crops (easy)

Each batch is half positives, half negatives; within each half the sources are drawn with the
weights of ``SOURCE_WEIGHTS`` (``--drop cand_H`` removes a source, for ablations). ICPR slides of the
held-out fold (A and H of that slide) are excluded from every source. AMi-Br crops are in training
as ``data.evaluation_split`` says: the published training split, or with ``--holdout-domain d`` the
training split without domain d; MITOS-ATYPIA-14 always. ``--ema D`` keeps an exponential moving
average of the weights (decay D), which is then what is scored and saved (default 0: the last weights).

After training, every scanner-A candidate of every slide is scored; the run writes
``scores.npz`` (field index, x, y, stage-1 score, logit) and ``result.json`` (held-out F1 at 7.5 um
with the threshold chosen on the training slides, the oracle threshold, the stage-1 baseline). The
stage-1 candidates of the AMi-Br evaluation mosaic (the test split, or the held-out domain) are
scored too (``amibr_scores.npz``; ``result.json`` ``amibr``: recall and false detections per mm^2 of
crop area at the chosen threshold, as ``evaluate_detector --split test`` measures the product).

    python -m training.train_verifier --holdout 00 --out training/runs/verifier/loso_00
    python -m training.train_verifier --out training/runs/verifier/final   # all five slides
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.classify import extract_crops, tta_views  # noqa: E402
from mitosis_analysis.evaluate.detection import DetectionCounts, count_matches  # noqa: E402
from model.verifier import ARCH, INPUT_SIZE, build_verifier  # noqa: E402
from training import augment as aug  # noqa: E402
from training import crop_mosaics  # noqa: E402
from training import detector_eval as ev  # noqa: E402
from training import data as amibr  # noqa: E402
from training import labels as label_lib  # noqa: E402
from training import real_fields as rf  # noqa: E402
from training.real_fields import far_from  # noqa: E402
from training import runtime  # noqa: E402
from training import stain  # noqa: E402
from training.train_classifier import focal_loss, lr_factor  # noqa: E402

JITTER = 4  # px: the crop's centre moves up to this far from the candidate while training


def pool_size(input_size: int, jitter: int = JITTER) -> int:
    """Side of the stored crops for a verifier input of ``input_size`` px: room for the jitter."""
    return input_size + 2 * jitter


POOL_SIZE = pool_size(INPUT_SIZE)
# Flip views the held-out candidates are scored with (``mitosis_analysis.classify.tta_views``): the
# mean logit over the first n of the 8 dihedral views, for each n here (the product's
# ``plan.verifier_views`` is one of them).
SCORED_VIEWS = (1, 2, 4, 8)
POSITIVE_SOURCES = ("icpr_pos", "cand_pos", "amibr_pos", "ma_pos")
NEGATIVE_SOURCES = ("cand_A", "cand_H", "rand_A", "amibr_neg", "ma_neg")
SOURCE_WEIGHTS = {"icpr_pos": 0.4, "cand_pos": 0.0, "amibr_pos": 0.4, "ma_pos": 0.2,
                  "cand_A": 0.4, "cand_H": 0.3, "rand_A": 0.1, "amibr_neg": 0.1, "ma_neg": 0.1}
SOURCES = POSITIVE_SOURCES + NEGATIVE_SOURCES
# Stage-1 candidates the verifier looks at: the product's floor (0.1) components whose peak score
# reaches this (recall 0.942 on the 35 A fields, as at the product floor; ~110 candidates per Mpx).
VERIFY_FLOOR = 0.2
RANDOM_PER_FIELD = 40
POOL_VERSION = 4  # bumped when build_pool's sources change, so that a cached pool is not reused
CORNER_INSET = 36  # px: where AMi-Br crops give an easy negative (see build_pool)


# --- the pool of crops ----------------------------------------------------------------------------


def field_candidates(field: rf.Field, verify_floor: float, cache: Path) -> np.ndarray:
    """The field's cached stage-1 candidates whose score reaches ``verify_floor``, from the highest
    cached floor at or below it (the cache holds the product's floor of the day it was made)."""
    c = rf.load_candidates(field.name, max(f for f in rf.cached_floors(field.name, cache) if f <= verify_floor), cache)
    return c[c[:, 2] >= verify_floor]


def build_pool(data: Path, cache: Path, verify_floor: float = VERIFY_FLOOR, size: int = POOL_SIZE, seed: int = 0,
               reference: stain.LabStatistics | None = None) -> dict:
    """All training crops (``size`` px) with source, label and ICPR slide ("" outside ICPR). With a
    ``reference``, every image is first Reinhard-normalised onto it (``training.stain``): a field on
    its own statistics, AMi-Br and MITOS-ATYPIA-14 crops slide by slide."""
    rng = np.random.default_rng(seed)
    images, source, slide, amibr_row = [], [], [], []

    def add(crops: np.ndarray, src: str, sl: str | np.ndarray, rows: np.ndarray | None = None) -> None:
        images.append(crops)
        source.extend([src] * len(crops))
        slide.extend(list(sl) if isinstance(sl, np.ndarray) else [sl] * len(crops))
        amibr_row.extend(np.full(len(crops), -1) if rows is None else rows)

    for field in rf.icpr_fields(data):
        loaded = rf.load_field(field, cache)
        pixels = stain.normalise(loaded.pixels, reference)
        cands = field_candidates(field, verify_floor, cache)[:, :2]
        if field.scanner == "A":
            add(extract_crops(pixels, loaded.mitoses, size), "icpr_pos", field.slide)
            far = far_from(cands, loaded.mitoses, loaded.radius_px)
            add(extract_crops(pixels, cands[~far], size), "cand_pos", field.slide)
            neg = cands[far]
            add(extract_crops(pixels, neg, size), "cand_A", field.slide)
            h, w = pixels.shape[:2]
            pts = rng.uniform([0, 0], [w - 1, h - 1], size=(RANDOM_PER_FIELD * 2, 2))
            pts = pts[far_from(pts, loaded.mitoses, loaded.radius_px)][:RANDOM_PER_FIELD]
            add(extract_crops(pixels, pts, size), "rand_A", field.slide)
        else:
            ok = ~rf.in_ignore(loaded.ignore, cands) & rf.windows_clear(loaded.ignore, cands, size)
            add(extract_crops(pixels, cands[ok], size), "cand_H", field.slide)

    table = amibr.load_table(data / "ami-br")
    pixels = amibr.load_crops(table)
    if reference is not None:
        pixels = stain.normalise_groups(pixels, [c.slide_key for c in table], reference)
    c = amibr.CROP_SIZE // 2
    add(extract_crops_each(pixels, np.tile([[c, c]], (len(table), 1)), size), "amibr_pos", "", np.arange(len(table)))
    annotations = label_lib.data_annotations(table, data)
    radius = label_lib.MATCH_RADIUS_UM / label_lib.SPACING_UM
    # a point CORNER_INSET px in from each corner of the 128 px crop (40 px from its centre, which is
    # > 7.5 um): at any pool size, the window is centred there (larger windows reach beyond the crop
    # and are mirrored by ``extract_crops``, and may show the figure off-centre, as stage 1's
    # candidates beside a mitosis do)
    lo, hi = CORNER_INSET, amibr.CROP_SIZE - CORNER_INSET
    corners = np.array([[lo, lo], [hi, lo], [lo, hi], [hi, hi]], dtype=float)
    neg_idx, neg_xy = [], []
    for i, crop in enumerate(table):
        mitoses, hard = label_lib.crop_points(crop, annotations)
        for p in hard[far_from(hard, mitoses, radius)]:
            neg_idx.append(i)
            neg_xy.append(p)
        free = corners[far_from(corners, mitoses, radius)]
        if len(free):
            neg_idx.append(i)
            neg_xy.append(free[rng.integers(len(free))])
    add(extract_crops_each(pixels[neg_idx], np.array(neg_xy), size), "amibr_neg", "", np.array(neg_idx))

    ma, ma_label, ma_slide = rf.mitos_atypia(data)
    if reference is not None:
        ma = stain.normalise_groups(ma, ma_slide, reference)
    ma = rf.reflect_pad(ma, size)
    add(ma[ma_label == 1], "ma_pos", "")
    add(ma[ma_label == 0], "ma_neg", "")
    source_arr = np.array(source)
    return {"images": np.concatenate(images), "source": source_arr, "slide": np.array(slide),
            "amibr": np.asarray(amibr_row, dtype=np.int64),
            "label": np.isin(source_arr, POSITIVE_SOURCES).astype(np.float32)}


def extract_crops_each(images: np.ndarray, centres_xy: np.ndarray, size: int) -> np.ndarray:
    """One crop per image (``images[i]`` around ``centres_xy[i]``), by ``extract_crops``."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, (image, xy) in enumerate(zip(images, centres_xy)):
        out[i] = extract_crops(image, np.asarray(xy, float).reshape(1, 2), size)[0]
    return out


def load_pool(data: Path, cache: Path, verify_floor: float, size: int = POOL_SIZE,
              reference: stain.LabStatistics | None = None) -> dict:
    """``build_pool``, cached (the stain reference, when there is one, in the key)."""
    normalised = "" if reference is None else "_reinhard-" + runtime.cache_key([repr(reference)], stain)
    path = cache / f"verifier_pool_v{POOL_VERSION}_{verify_floor:g}_{size}{normalised}.npz"
    if path.is_file():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    pool = build_pool(data, cache, verify_floor, size, reference=reference)
    runtime.save_npz(path, **pool)
    return pool


def training_mask(pool: dict, data: Path, holdout: str | None, holdout_domain: int = -1) -> np.ndarray:
    """The pool's crops a run may train on: none of the held-out ICPR slide, and of AMi-Br only the
    crops ``data.evaluation_split`` puts in training (and the negatives cut from them)."""
    table = amibr.load_table(data / "ami-br")
    training, _evaluated, _what = amibr.evaluation_split(data / "ami-br", holdout_domain)
    names = {c.name for c in training}
    in_training = np.array([c.name in names for c in table])
    row = pool["amibr"]
    return (pool["slide"] != (holdout or "none")) & ((row < 0) | in_training[np.maximum(row, 0)])


# --- training -----------------------------------------------------------------------------------


def sample(pool: dict, allowed: np.ndarray, weights: dict[str, float], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices, half positive and half negative; sources within a half by ``weights``."""
    out = []
    for sources, k in ((POSITIVE_SOURCES, n // 2), (NEGATIVE_SOURCES, n - n // 2)):
        groups = [(s, np.flatnonzero(allowed & (pool["source"] == s))) for s in sources]
        groups = [(s, idx) for s, idx in groups if len(idx) and weights.get(s, 0) > 0]
        w = np.array([weights[s] for s, _ in groups])
        which = rng.choice(len(groups), size=k, p=w / w.sum())
        out.extend(groups[g][1][rng.integers(len(groups[g][1]))] for g in which)
    return np.array(out)


def random_window(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` px window of each image at a random offset (jitter of the centre)."""
    margin = images.shape[1] - size
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, (r, c) in enumerate(rng.integers(0, margin + 1, size=(len(images), 2))):
        out[i] = images[i, r : r + size, c : c + size]
    return out


def centre_window(images: np.ndarray, size: int) -> np.ndarray:
    o = (images.shape[1] - size) // 2
    return images[:, o : o + size, o : o + size]


def logits_of(net, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    """Verifier logits of N x S x S x 3 uint8 crops (eval mode)."""
    net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(crops), batch):
            out.append(net(aug.to_float(torch.from_numpy(np.ascontiguousarray(crops[s : s + batch])))).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def logits_by_views(net, crops: np.ndarray, views=SCORED_VIEWS) -> dict[int, np.ndarray]:
    """For each n of ``views``: the mean logit over the first n flip views (``tta_views``), the mean
    the product takes (``mitosis_analysis.classify.mean_over_views``); each view is inferred once."""
    each = [logits_of(net, v).astype(np.float64) for v in tta_views(crops, max(views))]
    return {n: np.mean(each[:n], axis=0).astype(np.float32) for n in views}


def train(pool: dict, allowed: np.ndarray, args) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    g = aug.generator(args.seed)
    net = build_verifier(width=args.width, input_size=args.input_size)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    weights = dict(SOURCE_WEIGHTS)
    for item in args.weight:
        source, value = item.split("=")
        if source not in SOURCES:
            raise SystemExit(f"--weight: unknown source {source!r}; sources: {', '.join(SOURCES)}")
        weights[source] = float(value)
    for source in args.drop:
        weights[source] = 0.0
    config = aug.AugmentConfig.wide()
    # An exponential moving average of the weights (buffers too), as the classifier keeps: what is
    # scored and saved when --ema > 0.
    ema = runtime.ema_of(net, args.ema) if args.ema > 0 else None
    t0 = time.perf_counter()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, warmup=50)
        idx = sample(pool, allowed, weights, args.batch, rng)
        crops = random_window(pool["images"][idx], args.input_size, rng)
        if not args.no_aug:
            crops = aug.jpeg_reencode(crops, (40, 95), 0.3, rng)
        x = aug.to_float(torch.from_numpy(crops))
        if not args.no_aug:
            x = aug.augment(x, config, g)
        else:
            (x,) = aug.random_dihedral(x, g=g)
        y = torch.from_numpy(pool["label"][idx])
        net.train()
        loss = focal_loss(net(x), y, args.gamma)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update_parameters(net)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} {time.perf_counter() - t0:.0f} s", flush=True)
    return (net if ema is None else ema.module).eval()


# --- evaluation on the fields ---------------------------------------------------------------------


def field_candidate_crops(data: Path, cache: Path, verify_floor: float, size: int,
                          reference: stain.LabStatistics | None = None):
    """For each scanner-A field: its index, its stage-1 candidates (n x 3: x, y, score >= verify_floor)
    and the ``size`` px crops around them (n x size x size x 3), normalised onto ``reference`` if given."""
    for i, field in enumerate(rf.icpr_fields(data, ("A",))):
        loaded = rf.load_field(field, cache)
        pixels = stain.normalise(loaded.pixels, reference)
        c = field_candidates(field, verify_floor, cache)
        yield i, c, extract_crops(pixels, c[:, :2], size)


def score_fields(net, data: Path, cache: Path, verify_floor: float, views: int = 1,
                 reference: stain.LabStatistics | None = None) -> dict:
    """Logit of every scanner-A candidate (score >= verify_floor), per field: ``logit`` with
    ``views`` flip views, and ``logit_views_<n>`` for each n of ``SCORED_VIEWS``."""
    rows = []
    for i, c, crops in field_candidate_crops(data, cache, verify_floor, net.input_size, reference):
        by_views = logits_by_views(net, crops)
        rows.append(np.c_[np.full(len(c), i), c, by_views[views], *(by_views[n] for n in SCORED_VIEWS)])
    a = np.concatenate(rows)
    return {"field": a[:, 0].astype(int), "xy": a[:, 1:3], "stage1": a[:, 3], "logit": a[:, 4],
            **{f"logit_views_{n}": a[:, 5 + k] for k, n in enumerate(SCORED_VIEWS)}}


def score_amibr(net, data: Path, cache: Path, verify_floor: float, holdout_domain: int = -1,
                reference: stain.LabStatistics | None = None):
    """(scores, mosaic): the logits (``logit_views_<n>``) of the stage-1 candidates (score >= verify_floor)
    on the AMi-Br evaluation mosaic (``crop_mosaics.evaluation_mosaic``; normalised onto ``reference``,
    if given, as one ROI)."""
    _crops, mosaic, described = crop_mosaics.evaluation_mosaic(data, holdout_domain)
    found = crop_mosaics.mosaic_candidates(crop_mosaics.mosaic_name(holdout_domain), mosaic, verify_floor, cache)
    image = stain.normalise(mosaic.image, reference)
    by_views = logits_by_views(net, extract_crops(image, found[:, :2], net.input_size))
    return {"xy": found[:, :2], "stage1": found[:, 2], **{f"logit_views_{n}": by_views[n] for n in SCORED_VIEWS},
            "evaluated_on": np.array(described)}, mosaic


AMIBR_THRESHOLDS = np.round(np.arange(-8.0, 16.0001, 0.05), 2)  # verifier and detector logits


def evaluate_amibr(scores: dict, mosaic, threshold: float, logits: np.ndarray) -> dict:
    """Recall and false detections per mm^2 of crop area on the AMi-Br mosaic when the candidates
    with ``logits >= threshold`` are the detections (``detector_eval.sweep``, as ``evaluate_detector``
    judges the product); the recall within 5 per mm^2 at the best threshold; the recall of all
    candidates (stage 1's ceiling)."""
    sweep = ev.sweep(scores["xy"], logits, mosaic.gt_points, mosaic.crop_area_mm2, AMIBR_THRESHOLDS)
    every = ev.sweep(scores["xy"], logits, mosaic.gt_points, mosaic.crop_area_mm2, [-np.inf])
    return {"evaluated_on": str(scores["evaluated_on"]), "threshold": threshold, "at_threshold": sweep.at(threshold),
            "recall_at_5fp_per_mm2": sweep.recall_at_fp(5.0), "stage1_recall_at_verify_floor": float(every.recall[0])}


def f1_by_threshold(fields: list[rf.Field], scores: dict, keep_fields: list[int], thresholds: np.ndarray,
                    key: str = "logit") -> list[DetectionCounts]:
    """Micro counts over ``keep_fields`` when candidates with ``scores[key] >= t`` are detections."""
    out = []
    per_field = {i: (scores["xy"][scores["field"] == i], scores[key][scores["field"] == i]) for i in keep_fields}
    for t in thresholds:
        total = DetectionCounts()
        for i in keep_fields:
            xy, s = per_field[i]
            total = total + count_matches(fields[i].mitoses, xy[s >= t], rf.MATCH_RADIUS_UM / fields[i].spacing_um[0])
        out.append(total)
    return out


def best(thresholds: np.ndarray, counts: list[DetectionCounts]) -> tuple[float, DetectionCounts]:
    """The threshold of the best F1; of a plateau of equal F1, its middle threshold."""
    f1 = np.array([c.f1 or 0.0 for c in counts])
    top = np.flatnonzero(f1 >= f1.max() - 1e-12)
    k = int(top[len(top) // 2])
    return float(thresholds[k]), counts[k]


def evaluate(scores: dict, data: Path, holdout: str | None, key: str = "logit") -> dict:
    fields = rf.icpr_fields(data, ("A",))
    thresholds = np.round(np.arange(-6.0, 8.0001, 0.25), 2)
    test = [i for i, f in enumerate(fields) if f.slide == holdout]
    trainf = [i for i, f in enumerate(fields) if f.slide != holdout]
    chosen_t, on_train = best(thresholds, f1_by_threshold(fields, scores, trainf, thresholds, key=key))
    result = {"holdout": holdout, "thresholds_searched": [float(thresholds[0]), float(thresholds[-1]), 0.25],
              "chosen_on_training_slides": {"threshold": chosen_t, **on_train.as_dict()}}
    if test:
        sweep = f1_by_threshold(fields, scores, test, thresholds, key=key)
        oracle_t, oracle = best(thresholds, sweep)
        k = int(np.argmin(np.abs(thresholds - chosen_t)))
        zero = int(np.argmin(np.abs(thresholds)))
        result["heldout"] = {"fields": len(test), "mitoses": int(sum(len(fields[i].mitoses) for i in test)),
                             "at_chosen": sweep[k].as_dict(), "at_logit_0": sweep[zero].as_dict(),
                             "oracle": {"threshold": oracle_t, **oracle.as_dict()},
                             "stage1_recall_at_verify_floor": f1_by_threshold(fields, scores, test, [-1e9], key=key)[0].as_dict(),
                             "sweep_f1": [c.f1 for c in sweep]}
        # per-field counts at the chosen threshold, for pooling over folds
        result["heldout"]["per_field"] = {fields[i].name: f1_by_threshold(fields, scores, [i], [chosen_t], key=key)[0].as_dict()
                                          for i in test}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=rf.DATA_DIR)
    parser.add_argument("--cache", type=Path, default=rf.CACHE_DIR)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--holdout", default=None, help="ICPR slide held out (00-04); none = all five in training")
    parser.add_argument("--verify-floor", type=float, default=VERIFY_FLOOR)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--gamma", type=float, default=0.0, help="focal loss gamma (0 = BCE)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=INPUT_SIZE, help="crop side in px at 0.25 um/px")
    parser.add_argument("--jitter", type=int, default=JITTER,
                        help="px per axis the training crop's centre moves from the stored point")
    parser.add_argument("--views", type=int, default=1, choices=SCORED_VIEWS,
                        help="flip views averaged for the run's own threshold and result (the product's plan.verifier_views)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop", action="append", default=[], choices=SOURCES,
                        help="ablation: leave this source out (repeatable), e.g. --drop cand_H")
    parser.add_argument("--weight", action="append", default=[], metavar="SOURCE=W",
                        help="sampling weight of a source within its half (repeatable), e.g. cand_A=0.6")
    parser.add_argument("--no-aug", action="store_true", help="ablation: dihedral only (no colour/blur/JPEG)")
    parser.add_argument("--holdout-domain", type=int, default=-1, choices=range(-1, len(amibr.DOMAINS)),
                        help="AMi-Br domain held out (index into data.DOMAINS; -1: the published split)")
    parser.add_argument("--stain", action="store_true",
                        help="Reinhard-normalise every image onto the AMi-Br training crops' colours (training.stain) "
                             "for training and scoring")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="decay of an exponential moving average of the weights, scored and saved (0: off)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reference = stain.amibr_reference(args.data / "ami-br") if args.stain else None
    pool = load_pool(args.data, args.cache, args.verify_floor, pool_size(args.input_size, args.jitter), reference)
    allowed = training_mask(pool, args.data, args.holdout, args.holdout_domain)
    counts = {s: int((allowed & (pool["source"] == s)).sum()) for s in SOURCES}
    print(f"pool: {counts} ({time.perf_counter() - t0:.0f} s)", flush=True)
    net = train(pool, allowed, args)
    train_s = time.perf_counter() - t0
    scores = score_fields(net, args.data, args.cache, args.verify_floor, args.views, reference)
    np.savez(args.out / "scores.npz", **scores)
    by_views = {str(n): evaluate(scores, args.data, args.holdout, key=f"logit_views_{n}") for n in SCORED_VIEWS}
    result = {**by_views[str(args.views)], "by_views": by_views}  # ``logit`` is the --views column
    mosaic_scores, mosaic = score_amibr(net, args.data, args.cache, args.verify_floor, args.holdout_domain, reference)
    np.savez(args.out / "amibr_scores.npz", **mosaic_scores)
    result["amibr"] = {n: evaluate_amibr(mosaic_scores, mosaic, by_views[n]["chosen_on_training_slides"]["threshold"],
                                         mosaic_scores[f"logit_views_{n}"]) for n in by_views}
    detection_logit = crop_mosaics.shipped_manifest().thresholds.detection_logit
    result["amibr_stage1_alone"] = evaluate_amibr(mosaic_scores, mosaic, detection_logit,
                                                  crop_mosaics.stage1_logits(mosaic_scores["stage1"]))
    result.update({"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "pool_counts": counts, "train_seconds": round(train_s, 1)})
    runtime.write_json(result, args.out / "result.json")
    command = "python -m training.train_verifier " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    runtime.save_checkpoint({
        "arch": ARCH, "views": args.views, "config": {"width": args.width, "input_size": args.input_size,
                                 "mean": net.mean.flatten().tolist(), "std": net.std.flatten().tolist()},
        "state_dict": net.state_dict(), "threshold": result["chosen_on_training_slides"]["threshold"],
        "verify_floor": args.verify_floor, "metrics": result, "command": command,
        "data": "ICPR 2012 A+H (slides other than the held-out one), AMi-Br crops of the training split "
                "(data.evaluation_split), MIDOG++ hard negatives inside them, MITOS-ATYPIA-14 crops; "
                "from scratch, no pretrained weights",
        "holdout_domain": args.holdout_domain,
        "stain_reference": None if reference is None else {"method": "reinhard", "mean": reference.mean, "std": reference.std},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }, args.out / "verifier.pt")
    h = result.get("heldout")
    print(f"chosen t={result['chosen_on_training_slides']['threshold']}"
          + (f" held-out F1 {h['at_chosen']['f1']} (P {h['at_chosen']['precision']}, R {h['at_chosen']['recall']}),"
             f" oracle {h['oracle']}" if h else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
