"""Does the Track-2 classifier's trunk tell mitoses from look-alikes? A linear probe, leave one ICPR
slide out, judged as ``train_verifier`` judges the verifier.

Issue #10 lets stage 2 share a trunk with the atypical classifier, or not, if measured. This takes
the shipped classifier (``weights/classifier.onnx``) frozen, reads its pooled features (the input of
its atypical head) on 128 px crops (its own input: 32 um at 0.25 um/px) of the verifier's training
pool (``train_verifier.build_pool``: the same sources, the same slides) and of every scanner-A
stage-1 candidate, fits a logistic regression per held-out slide on the training slides' crops
(each source weighted as ``train_verifier.SOURCE_WEIGHTS`` samples it; half positives, half
negatives) and reports held-out F1 at 7.5 um at the threshold its training slides choose
(``train_verifier.evaluate``), pooled over the five slides.

    python -m training.trunk_probe [--views 1] [--out training/runs/trunk_probe.json]

Features are cached in ``training/cache/`` (keyed by the classifier's sha256 and the views).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.classify import tta_views  # noqa: E402
from mitosis_analysis.evaluate.detection import DetectionCounts  # noqa: E402
from mitosis_analysis.manifest import sha256_file  # noqa: E402
from training import real_fields as rf  # noqa: E402
from training import train_verifier as tv  # noqa: E402
from training.runtime import save_npz, write_json  # noqa: E402

CROP = 128  # the classifier's input side
FEATURES_OUTPUT = "/net/members.0/ReduceMean_output_0"  # pooled features of the exported ResNet member


def feature_session(classifier_onnx: Path, threads: int = 1):
    """An ONNX Runtime session of the classifier with its pooled features as an extra output."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(classifier_onnx))
    if not any(FEATURES_OUTPUT in n.output for n in model.graph.node):
        raise SystemExit(f"{classifier_onnx}: no {FEATURES_OUTPUT} (not the single ResNet member this probe reads)")
    model.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES_OUTPUT, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def features(session, crops: np.ndarray, views: int, batch: int = 256) -> np.ndarray:
    """Mean pooled features over the first ``views`` flip views of N x 128 x 128 x 3 uint8 crops."""
    each = []
    for view in tta_views(crops, views):
        each.append(np.concatenate([session.run([FEATURES_OUTPUT], {"image": np.ascontiguousarray(view[s : s + batch])})[0]
                                    for s in range(0, len(view), batch)]))
    return np.mean(each, axis=0)


def source_weights(source: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per-crop sample weights: each half (positive, negative) sums to 1, split among its
    sources by ``SOURCE_WEIGHTS`` and evenly within a source; 0 where not ``allowed``."""
    w = np.zeros(len(source))
    for group in (tv.POSITIVE_SOURCES, tv.NEGATIVE_SOURCES):
        present = [s for s in group if tv.SOURCE_WEIGHTS[s] > 0 and (allowed & (source == s)).any()]
        total = sum(tv.SOURCE_WEIGHTS[s] for s in present)
        for s in present:
            k = allowed & (source == s)
            w[k] = tv.SOURCE_WEIGHTS[s] / total / k.sum()
    return w


def cached_features(data: Path, cache: Path, classifier_onnx: Path, views: int, threads: int) -> dict:
    key = sha256_file(classifier_onnx)[:16]
    path = cache / f"trunk-probe-{key}-v{views}-pool{tv.POOL_VERSION}.npz"
    if path.is_file():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    session = feature_session(classifier_onnx, threads)
    pool = tv.build_pool(data, cache, tv.VERIFY_FLOOR, CROP)
    out = {"pool": features(session, pool["images"], views), "source": pool["source"], "slide": pool["slide"],
           "amibr": pool["amibr"], "label": pool["label"]}
    del pool
    rows, feats = [], []
    for i, c, crops in tv.field_candidate_crops(data, cache, tv.VERIFY_FLOOR, CROP):
        feats.append(features(session, crops, views))
        rows.append(np.c_[np.full(len(c), i), c])
    a = np.concatenate(rows)
    out.update({"field": a[:, 0].astype(int), "xy": a[:, 1:3], "stage1": a[:, 3], "candidates": np.concatenate(feats)})
    save_npz(path, **out)
    return out


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=rf.DATA_DIR)
    parser.add_argument("--cache", type=Path, default=rf.CACHE_DIR)
    parser.add_argument("--classifier", type=Path, default=REPO_ROOT / "weights" / "classifier.onnx")
    parser.add_argument("--views", type=int, default=1, choices=tv.SCORED_VIEWS)
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    f = cached_features(args.data, args.cache, args.classifier, args.views, args.threads)
    pool = {"source": f["source"], "slide": f["slide"], "amibr": f["amibr"]}
    total, per_slide = DetectionCounts(), {}
    for slide in rf.SLIDES:
        allowed = tv.training_mask(pool, args.data, slide)
        w = source_weights(f["source"], allowed)
        k = w > 0
        scaler = StandardScaler().fit(f["pool"][k])
        probe = LogisticRegression(C=args.C, max_iter=2000).fit(scaler.transform(f["pool"][k]), f["label"][k],
                                                                sample_weight=w[k] * k.sum())
        logit = np.clip(probe.decision_function(scaler.transform(f["candidates"])), -6.0, 8.0)
        result = tv.evaluate({"field": f["field"], "xy": f["xy"], "stage1": f["stage1"], "logit": logit}, args.data, slide)
        at = result["heldout"]["at_chosen"]
        per_slide[slide] = {"threshold": result["chosen_on_training_slides"]["threshold"],
                            "training_slides_f1": result["chosen_on_training_slides"]["f1"], "heldout": at,
                            "heldout_oracle_f1": result["heldout"]["oracle"]["f1"]}
        total = total + DetectionCounts(at["tp"], at["fp"], at["fn"])
        print(f"slide {slide}: t={per_slide[slide]['threshold']} held-out F1 {at['f1']:.3f}", flush=True)
    summary = {"pooled": total.as_dict(), "per_slide": per_slide, "views": args.views, "C": args.C,
               "classifier": str(args.classifier), "seconds": round(time.perf_counter() - t0, 1)}
    print(f"pooled held-out F1 {total.f1:.3f} (P {total.precision:.3f}, R {total.recall:.3f})")
    if args.out:
        write_json(summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
