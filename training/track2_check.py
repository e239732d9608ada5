"""The shipped container job on the AMi-Br test split, scored by the challenge's own reading.

Writes the 826 test crops as one Track 2 stack (a temporary folder, never the repository), runs
``process.py`` on it with the weights of ``weights/`` (ONNX Runtime, the product's TTA and
threshold), and scores the output with ``python -m mitosis_analysis evaluate``. This checks the
exported model end to end, independently of the PyTorch figures of ``train_classifier.py``.

    python -m training.track2_check --data ../shared/data/ami-br
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import tifffile

from mitosis_analysis.settings import INPUTS_JSON, TRACK2
from training import data

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "ami-br")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    _, test = data.published_split(args.data, data.load_table(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stack = tmp / "input" / TRACK2.image_dir / "amibr-test.tif"
        stack.parent.mkdir(parents=True)
        tifffile.imwrite(stack, data.load_crops(test), compression="zlib")
        (tmp / "input" / INPUTS_JSON).write_text(json.dumps([{
            "interface": {"slug": TRACK2.slug, "relative_path": TRACK2.image_dir},
            "image": {"name": stack.name}}]))
        labels = [{"image": stack.name, "labels": ["atypical" if y else "normal" for y in data.labels(test)],
                   "tumordomains": [c.domain for c in test]}]
        (tmp / "labels.json").write_text(json.dumps(labels))
        run = [sys.executable, str(REPO_ROOT / "process.py"), "--input", str(tmp / "input"),
               "--output", str(tmp / "output" / "amibr-test"), "--device", args.device]
        subprocess.run(run, check=True)
        score = [sys.executable, "-m", "mitosis_analysis", "evaluate", "--labels", str(tmp / "labels.json"),
                 "--classifications", str(tmp / "output"), "--output", str(tmp / "eval")]
        return subprocess.run(score, cwd=REPO_ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
