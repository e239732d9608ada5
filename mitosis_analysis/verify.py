"""Stage 2 of detection (issue #10): crops for the verifier, which tells a mitotic figure from a
look-alike on a small crop centred on each stage-1 candidate.

How the product should call it (not wired yet; the verifier ships as ``verifier.onnx`` with a JSON
giving ``input_size``, ``output_name`` = "logit", the logit threshold and the stage-1 floor):

1. stage 1 as today: ``detect_candidates`` (components of the mitosis map at the candidate floor,
   peak score, suppression at 7.5 um), on the pixels at the models' spacing (0.25 um/px);
2. take the candidates whose stage-1 score reaches the verifier's floor (``verify_floor`` of its
   JSON: 0.2) and cut their crops::

       crops = verifier_crops(pixels, np.array([[c.x, c.y] for c in chosen]), size=input_size)

3. run the verifier on the crops in batches through the product's ``OnnxModel`` contract
   (``to_model_input``: N x 3 x S x S float32 in [0, 1]; the normalisation is in the graph) and
   read the output ``logit`` (N,);
4. a candidate is a "mitotic figure" when ``logit >= threshold`` (the JSON's threshold); every other
   candidate (below the floor, or rejected) stays a "non-mitotic figure" with its score.

The verifier runs on candidates only, so its cost follows their number (about 110 per Mpx at floor
0.2 on the ICPR 2012 fields, so about 4,300 for a 7215 x 5412 ROI of such tissue; 0.27 ms per crop
at batch 64 on one CPU thread with ONNX Runtime: about 1.2 s), not the image size.
"""

from __future__ import annotations

import numpy as np

from .classify import extract_crops


def verifier_crops(pixels: np.ndarray, centres_xy: np.ndarray, size: int) -> np.ndarray:
    """N x size x size x 3 uint8 crops of ``pixels`` (H x W x 3 uint8, at the models' spacing)
    centred on each candidate (x, y) (rounded to the nearest pixel; borders by reflection), exactly
    as the verifier was trained (``training/train_verifier.py`` cuts its crops the same way)."""
    centres = np.asarray(centres_xy, dtype=np.float64).reshape(-1, 2)
    return extract_crops(pixels, centres, size)
