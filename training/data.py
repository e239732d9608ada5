"""AMi-Br: the crop table, the published patient-level split, slide-held-out validation, crops.

The data live outside the repository (``../shared/data/ami-br``) and are read at run time:

- ``AMI-BR.csv``: one row per crop (``slide``, ``dataset``, ``uid``, ``x``, ``y``, the three
  experts' atypical votes and ``majority_atypical``);
- ``amibr_train_split.csv``: the rows of the published training split (2,894); every other crop
  (826) is the test split, which only the final report may touch;
- ``crops/{atypical,normal}/<dataset>_<uid>.jpg``: 128 x 128 RGB at 0.25 um/px, centred on the figure.

Validation is taken out of the training split by *slide* (``dataset`` + ``slide``), never by
crop: neighbouring crops of one ROI share stain, scanner and often the same tumour clone.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

TABLE_FILE = "AMI-BR.csv"
TRAIN_SPLIT_FILE = "amibr_train_split.csv"
CROPS_DIR = "crops"
CROP_SUFFIX = ".jpg"
CROP_SIZE = 128
# Published sizes; a table that disagrees is not the AMi-Br we know.
N_TRAIN = 2894
N_TEST = 826
# Acquisition domains, for domain-adversarial training (``Crop.domain`` indexes this). MIDOG21's
# training ROIs were scanned by slide number: 001-050 Hamamatsu XR, 051-100 Hamamatsu S360,
# 101-150 Aperio ScanScope CS2 (Aubreville et al., MIDOG 2021). TUPAC16 (several centres, the
# scanner per case is not in the table) counts as one domain.
# The experts' phase labels in AMI-BR.csv (expert1_label, expert2_label): four normal (NMF) and
# four atypical (AMF) classes, spelled as the table spells them.
PHASES = ("NMF prometaphase", "NMF metaphase", "NMF anaphase-telophase", "NMF ring shape",
          "AMF segregation", "AMF multipolar", "AMF bipolar assymetric", "AMF other")
DOMAINS = ("MIDOG21 Hamamatsu XR", "MIDOG21 Hamamatsu S360", "MIDOG21 Aperio CS2", "TUPAC16")


class DataError(ValueError):
    """The data folder is missing, incomplete or inconsistent; the message says what and where."""


@dataclass(frozen=True)
class Crop:
    """One AMi-Br crop: where it comes from and what the experts said."""

    dataset: str  # "MIDOG21" or "TUPAC16"
    uid: int
    slide: str  # file of the original ROI
    x: int  # centre of the figure in the ROI, px
    y: int
    votes: tuple[bool, bool, bool]  # the three experts' atypical votes
    atypical: bool  # majority of the three votes
    path: Path
    phases: tuple[str, ...] = ()  # the phase labels (PHASES) of the experts who gave one

    @property
    def name(self) -> str:
        """``<dataset>_<uid>``, the crop's file stem."""
        return f"{self.dataset}_{self.uid}"

    @property
    def slide_key(self) -> tuple[str, str]:
        """The grouping unit of every split: slide names are only unique within a dataset."""
        return (self.dataset, self.slide)

    @property
    def domain(self) -> int:
        """Index into :data:`DOMAINS` (scanner for MIDOG21 slides by their number; TUPAC16)."""
        if self.dataset == "TUPAC16":
            return DOMAINS.index("TUPAC16")
        stem = Path(self.slide).stem
        if self.dataset != "MIDOG21" or not stem.isdigit() or not 1 <= int(stem) <= 150:
            raise DataError(f"no acquisition domain known for {self.dataset} slide {self.slide!r}")
        return (int(stem) - 1) // 50

    @property
    def hard(self) -> bool:
        """The experts disagree (not unanimous) about this figure."""
        return len(set(self.votes)) > 1

    @property
    def agreement(self) -> float:
        """Fraction of experts voting atypical (0, 1/3, 2/3 or 1)."""
        return sum(self.votes) / len(self.votes)


def _bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise DataError(f"{where}: expected True/False, got {value!r}")


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"AMi-Br table not found: {path}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_table(data_dir: Path | str, check_files: bool = True) -> list[Crop]:
    """All crops of ``AMI-BR.csv`` in table order; with ``check_files`` every crop must exist."""
    data_dir = Path(data_dir)
    path = data_dir / TABLE_FILE
    rows = _read_csv(path)
    crops = []
    for i, row in enumerate(rows):
        where = f"{path}:{i + 2}"
        try:
            votes = tuple(_bool(row[f"expert{k}_atypical"], where) for k in (1, 2, 3))
            atypical = _bool(row["majority_atypical"], where)
            dataset, uid = row["dataset"], int(row["uid"])
            phases = tuple(row[f"expert{k}_label"] for k in (1, 2) if row.get(f"expert{k}_label"))
            unknown = [p for p in phases if p not in PHASES]
            if unknown:
                raise ValueError(f"unknown phase label {unknown[0]!r} (known: {', '.join(PHASES)})")
            crop = Crop(
                dataset=dataset,
                uid=uid,
                slide=row["slide"],
                x=int(float(row["x"])),
                y=int(float(row["y"])),
                votes=votes,  # type: ignore[arg-type]
                atypical=atypical,
                phases=phases,
                path=data_dir / CROPS_DIR / ("atypical" if atypical else "normal") / f"{dataset}_{uid}{CROP_SUFFIX}",
            )
        except KeyError as exc:
            raise DataError(f"{path}: missing column {exc}") from None
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        if crop.atypical != (sum(votes) >= 2):
            raise DataError(f"{where}: majority_atypical disagrees with the three votes")
        if check_files and not crop.path.is_file():
            raise DataError(f"crop file missing: {crop.path}")
        crops.append(crop)
    if not crops:
        raise DataError(f"{path} holds no rows")
    return crops


def published_split(data_dir: Path | str, crops: Sequence[Crop] | None = None) -> tuple[list[Crop], list[Crop]]:
    """(train, test) of the published AMi-Br benchmark: rows of the split file vs. all others."""
    data_dir = Path(data_dir)
    crops = list(crops) if crops is not None else load_table(data_dir)
    path = data_dir / TRAIN_SPLIT_FILE
    try:
        train_keys = {(row["dataset"], int(row["uid"])) for row in _read_csv(path)}
    except KeyError as exc:
        raise DataError(f"{path}: missing column {exc}") from None
    known = {(c.dataset, c.uid) for c in crops}
    if unknown := train_keys - known:
        raise DataError(f"{path}: {len(unknown)} rows not in {TABLE_FILE}, e.g. {sorted(unknown)[0]}")
    train = [c for c in crops if (c.dataset, c.uid) in train_keys]
    test = [c for c in crops if (c.dataset, c.uid) not in train_keys]
    return train, test


def leave_domain_out(train: Sequence[Crop], test: Sequence[Crop], domain: int) -> tuple[list[Crop], list[Crop]]:
    """(training crops of the other domains, every crop of ``domain`` from both splits): one fold
    of leave-one-domain-out, the held-out domain never seen in training or validation."""
    if not 0 <= domain < len(DOMAINS):
        raise ValueError(f"domain must be an index into DOMAINS (0 ... {len(DOMAINS) - 1}), got {domain}")
    kept = [c for c in train if c.domain != domain]
    held = [c for c in (*train, *test) if c.domain == domain]
    return kept, held


def split_by_slide(
    crops: Sequence[Crop], val_fraction: float = 0.15, seed: int = 0
) -> tuple[list[Crop], list[Crop]]:
    """(train, val): whole slides go to validation until it holds ``val_fraction`` of the crops
    *and* of the atypical crops (so the rare class is represented), in a seeded random slide order.

    No slide is ever on both sides.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    by_slide: dict[tuple[str, str], list[Crop]] = defaultdict(list)
    for c in crops:
        by_slide[c.slide_key].append(c)
    keys = sorted(by_slide)
    order = np.random.default_rng(seed).permutation(len(keys))
    need_all = val_fraction * len(crops)
    need_atypical = val_fraction * sum(c.atypical for c in crops)
    val_keys: set[tuple[str, str]] = set()
    n_all = n_atypical = 0
    for i in order:
        if n_all >= need_all and n_atypical >= need_atypical:
            break
        group = by_slide[keys[i]]
        group_atypical = sum(c.atypical for c in group)
        # Once the crop quota is met, only slides that bring atypical figures are worth taking.
        if n_all >= need_all and group_atypical == 0:
            continue
        val_keys.add(keys[i])
        n_all += len(group)
        n_atypical += group_atypical
    if len(val_keys) == len(keys):
        raise DataError("too few slides to hold out a validation part")
    train = [c for c in crops if c.slide_key not in val_keys]
    val = [c for c in crops if c.slide_key in val_keys]
    return train, val


def evaluation_split(data_dir: Path | str, holdout_domain: int = -1) -> tuple[list[Crop], list[Crop], str]:
    """(training crops, evaluation crops, what the evaluation crops are): the published split, or
    with ``holdout_domain >= 0`` one leave-one-domain-out fold (``leave_domain_out``)."""
    train, test = published_split(data_dir)
    if holdout_domain < 0:
        return train, test, "AMi-Br test split"
    train, held = leave_domain_out(train, test, holdout_domain)
    return train, held, f"held-out domain {DOMAINS[holdout_domain]} (all its crops, both splits)"


def run_splits(data_dir: Path | str, train_config: dict) -> tuple[list[Crop], list[Crop], list[Crop], str]:
    """(fit, validation, evaluation, what the evaluation is) of a finished classifier run, rebuilt
    from its checkpoint's ``train_config`` (holdout domain, validation fraction, split seed), so
    that every tool re-scoring a run judges it on the crops it was judged on."""
    train, test, evaluated_on = evaluation_split(data_dir, int(train_config.get("holdout_domain", -1)))
    fit, val = split_by_slide(train, train_config.get("val_fraction", 0.15), train_config.get("split_seed", 0))
    return fit, val, test, evaluated_on


def load_crop(path: Path | str) -> np.ndarray:
    """One crop as H x W x 3 uint8 RGB."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read crop {path}: {exc}") from None


def load_crops(crops: Iterable[Crop], size: int = CROP_SIZE) -> np.ndarray:
    """The crops' pixels as N x size x size x 3 uint8 (all AMi-Br crops: about 180 MB)."""
    crops = list(crops)
    out = np.empty((len(crops), size, size, 3), dtype=np.uint8)
    for i, c in enumerate(crops):
        image = load_crop(c.path)
        if image.shape != (size, size, 3):
            raise DataError(f"crop {c.path} is {image.shape[1]}x{image.shape[0]}, expected {size}x{size}")
        out[i] = image
    return out


def labels(crops: Sequence[Crop]) -> np.ndarray:
    """Majority labels, 1 = atypical, as float32 (N,)."""
    return np.array([c.atypical for c in crops], dtype=np.float32)


def vote_fractions(crops: Sequence[Crop]) -> np.ndarray:
    """The fraction of the three experts who called each figure atypical (0, 1/3, 2/3, 1), as
    float32 (N,): a soft target that keeps the experts' disagreement."""
    return np.array([sum(c.votes) / len(c.votes) for c in crops], dtype=np.float32)


def phase_targets(crops: Sequence[Crop]) -> np.ndarray:
    """N x len(PHASES) float32: each crop's phase labels as a distribution (the mean of its
    experts' one-hot labels; all zero where none was given)."""
    out = np.zeros((len(crops), len(PHASES)), dtype=np.float32)
    for i, c in enumerate(crops):
        for phase in c.phases:
            out[i, PHASES.index(phase)] += 1.0 / len(c.phases)
    return out


def domains(crops: Sequence[Crop]) -> np.ndarray:
    """Acquisition-domain indices (int64), see :data:`DOMAINS`."""
    return np.array([c.domain for c in crops], dtype=np.int64)


def hardness(crops: Sequence[Crop]) -> np.ndarray:
    """1 where the three experts disagree, as float32 (N,)."""
    return np.array([c.hard for c in crops], dtype=np.float32)


def summary(crops: Sequence[Crop]) -> str:
    """``n crops (a atypical) from s slides``, for logs."""
    return (
        f"{len(crops)} crops ({sum(c.atypical for c in crops)} atypical, {sum(c.hard for c in crops)} hard) "
        f"from {len({c.slide_key for c in crops})} slides"
    )
