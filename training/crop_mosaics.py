"""Stage 1 on mosaics of AMi-Br crops, cached: the candidates the product would propose on the
evaluation mosaics (``detector_eval.crop_mosaic``), so that each verifier run is judged on them
(recall and false detections per mm^2 of the two stages, as ``evaluate_detector`` judges the product).

A mosaic is named by what it holds (``mosaic_name``): ``amibr_test`` (the published test split)
or ``amibr_domain<d>`` (every crop of domain ``d``, both splits: the held-out part
of a leave-one-domain-out fold, ``data.evaluation_split``). Its candidates are cached like a real
field's (``real_fields.candidates_path``), from the shipped detector (``weights/``), at the floors
asked for; a cache made by other weights is refused by its detector checksum.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mitosis_analysis.decision import logit
from training import data as amibr
from training import detector_eval as ev
from training import labels as label_lib
from training import real_fields as rf
from training.runtime import write_json


def mosaic_name(holdout_domain: int = -1) -> str:
    """Cache name of an evaluation mosaic: the test split's, or a held-out domain's."""
    return "amibr_test" if holdout_domain < 0 else f"amibr_domain{holdout_domain}"


def evaluation_mosaic(data_dir: Path, holdout_domain: int = -1) -> tuple[list, ev.Mosaic, str]:
    """(crops, mosaic, what they are) of ``data.evaluation_split``'s evaluation crops: the test split,
    or every crop of the held-out domain. The test split's mosaic is the one
    ``evaluate_detector --split test`` builds."""
    _train, held, described = amibr.evaluation_split(Path(data_dir) / "ami-br", holdout_domain)
    table = amibr.load_table(Path(data_dir) / "ami-br")
    return held, ev.crop_mosaic(held, label_lib.data_annotations(table, data_dir)), described


def stage1_logits(probabilities: np.ndarray) -> np.ndarray:
    """The cached stage-1 peak probabilities (rounded to 6 decimals, so 0 and 1 occur) as logits."""
    return logit(np.clip(probabilities, 1e-7, 1 - 1e-7))


def mosaic_candidates(name: str, mosaic: ev.Mosaic, floor: float, cache: Path, threads: int = 1) -> np.ndarray:
    """Stage-1 candidates (n, 3: x, y, peak probability; score >= ``floor``) of the product's detector
    on ``mosaic``, cached under ``name`` (remade when the cache is of another detector or a higher floor)."""
    path = rf.candidates_path(name, cache)
    detector = shipped_manifest().detector.sha256
    if path.is_file():
        with open(path) as f:
            record = json.load(f)
        usable = [float(f) for f in record["candidates"] if float(f) <= floor]
        if usable and record.get("detector_sha256") == detector:
            found = rf.load_candidates(name, max(usable), cache)
            return found[found[:, 2] >= floor]
    models, settings = rf.cpu_models(threads)
    found = rf.stage1(mosaic.image, models, settings, (floor,))[floor]
    write_json({"mosaic": name, "n_crops": mosaic.n_crops, "shape": list(mosaic.image.shape[:2]),
                "detector_sha256": detector, "candidates": {f"{floor:g}": np.round(found, 6).tolist()}}, path)
    return found


def shipped_manifest():
    """The manifest of the weights stage 1 runs with (``Settings.from_env``: ``MITOSIS_WEIGHTS_DIR`` or the shipped ``weights/``)."""
    from mitosis_analysis.manifest import Manifest
    from mitosis_analysis.settings import Settings

    return Manifest.load(Path(Settings.from_env(device="cpu").weights_dir))
