#!/usr/bin/env python
"""Speed and memory of Track 1 on one region of interest, end to end, per stage.

For each ROI size a synthetic H&E-like image (``synthetic_roi.py``) is written to a temporary
tiled TIFF, so that reading and decoding are measured for real, and the product's own functions
run on it exactly as ``process.py`` calls them: ``read_roi`` -> ``analyse_roi`` (with a
``StageTimer``) -> ``points_document`` -> ``write_json_atomic``. Each (size, batch size,
precision) runs in a fresh Python process so that its peak RSS is its own.

Printed and saved (``--json``) per run:
  * end-to-end seconds, and the breakdown read / tiling / inference / stitching /
    postprocessing / classification / write (``other`` = what no stage covers);
  * Mpx/s: image pixels per second end to end, and for the inference stage alone;
  * tiles/s of the detector and crops/s of the classifier (batched as the pipeline batches,
    and one crop at a time), without TTA;
  * peak RSS of the process (``getrusage``), and RSS once the models are loaded;
  * "read alone": reading and decoding the ROI with nothing else, the floor a GPU run is judged
    against (target: the whole pipeline within 2x of it).
With ``--fp16`` the detector also runs in float16 (a given file, or one converted on the fly with
onnxruntime's float16 converter, inputs and outputs kept float32), and the detections are
compared with float32's: counts and the position shift of points matched within 7.5 um.

The weights' numbers do not change the speed of inference (same architecture), but untrained
weights give arbitrary numbers of candidates and hence arbitrary post-processing and
classification times: the candidate count is printed beside every figure.

Examples:
  python benchmarks/benchmark.py                                   # CPU here, both default sizes
  python benchmarks/benchmark.py --sizes 7215x5412 --repeat 3 --json out/bench_cpu.json
  python benchmarks/benchmark.py --device cuda --batch-size 8 16 32 64 --fp16 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _p in (REPO_ROOT, BENCH_DIR):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from mitosis_analysis.settings import Settings  # noqa: E402 (after the sys.path set-up)

STAGES = ("read", "tiling", "inference", "stitching", "postprocessing", "verification", "classification", "write")
DEFAULT_SIZES = ("2048x2048", "7215x5412")
MIDOGPP_SIZE = (7215, 5412)  # (width, height) of a MIDOG++ ROI
# Targets of issue 2 / issue 4.
TARGET_CPU_SECONDS = 90.0
TARGET_GPU_SECONDS = 1.5
TARGET_PEAK_RSS_BYTES = 3 * 1024**3
TARGET_GPU_OVER_READ = 2.0
MATCH_RADIUS_MM = 0.0075


@dataclass(frozen=True)
class RunSpec:
    """One measurement, handed to a fresh worker process."""

    image: str
    width: int
    height: int
    batch_size: int
    device: str
    precision: str  # "fp32" or "fp16"
    repeat: int
    warmup: int | None  # None: 1 on CUDA, 0 on the CPU
    classifier_crops: int
    output: str  # where the worker writes the last run's mitotic-figures.json
    weights_dir: str | None = None
    fp16_detector: str | None = None


# --------------------------------------------------------------------------- worker side


def rss_bytes() -> int:
    """Current resident set size of this process (Linux), 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def crops_per_second(classify, crops: np.ndarray, batch_size: int) -> float:
    """Crops/s of ``classify`` (N x S x S x 3 uint8 -> N) fed ``batch_size`` crops at a time."""
    start = time.perf_counter()
    for i in range(0, len(crops), batch_size):
        classify(crops[i : i + batch_size])
    return len(crops) / (time.perf_counter() - start)


def measure(spec: RunSpec) -> dict:
    """Load the models, then run the pipeline on ``spec.image`` warm-up + repeat times."""
    from mitosis_analysis.classify import extract_crops
    from mitosis_analysis.inference import CUDA, OnnxModel, load_models, select_providers
    from mitosis_analysis.decision import decide_detections
    from mitosis_analysis.outputs import points_document, to_jsonable, write_json_atomic
    from mitosis_analysis.pipeline import analyse_roi
    from mitosis_analysis.readers import read_roi
    from mitosis_analysis.tiling import tile_grid
    from mitosis_analysis.timing import StageTimer

    settings = Settings.from_env(weights_dir=spec.weights_dir, device=spec.device, batch_size=spec.batch_size)
    start = time.perf_counter()
    models = load_models(settings)
    if spec.precision == "fp16":
        models.detector = OnnxModel(Path(spec.fp16_detector), models.manifest.detector, select_providers(settings.device))
    model_load_s = time.perf_counter() - start
    provider = models.provider
    plan = models.manifest.plan
    tile, crop = plan.tile_size, plan.crop_size
    classifier_batch = settings.batch_size * 8  # as pipeline.classify_candidates batches

    # First calls allocate and (on CUDA) pick kernels: keep them out of every figure.
    models.mitosis_logit(np.full((settings.batch_size, tile, tile, 3), 200, np.uint8))
    models.atypical_probability(np.full((classifier_batch, crop, crop, 3), 200, np.uint8))
    rss_after_load = rss_bytes()

    image = Path(spec.image)
    read_alone = [_timed(read_roi, image, settings) for _ in range(max(1, spec.repeat))]

    warmup = spec.warmup if spec.warmup is not None else (1 if provider == CUDA else 0)
    runs = []
    for _ in range(warmup + spec.repeat):
        timer = StageTimer()
        begin = time.perf_counter()
        with timer.stage("read"):
            roi = read_roi(image, settings)
        candidates = analyse_roi(roi, models, settings, timer)
        with timer.stage("write"):
            document = points_document(decide_detections(candidates, models.manifest.thresholds), roi.spacing_mm)
            write_json_atomic(Path(spec.output), to_jsonable(document))
        total = time.perf_counter() - begin
        runs.append({
            "seconds": total,
            "stages": {name: timer.seconds.get(name, 0.0) for name in STAGES},
            "candidates": len(candidates),
            "mitotic_figures": sum(p.name == "mitotic figure" for p in document.points),
        })
        shape = roi.shape
        del roi, candidates, document
    peak_rss = peak_rss_bytes()  # of the pipeline runs (model load and read-alone included, lower)
    timed = runs[warmup:]
    median_run = sorted(timed, key=lambda r: r["seconds"])[(len(timed) - 1) // 2]

    # Classifier throughput on crops of this ROI (model alone: no TTA, no crop extraction).
    rng = np.random.default_rng(0)
    roi = read_roi(image, settings)
    centres = np.column_stack([rng.uniform(0, shape[1] - 1, spec.classifier_crops),
                               rng.uniform(0, shape[0] - 1, spec.classifier_crops)])
    crops = extract_crops(roi.pixels, centres, crop)
    del roi
    batched = crops_per_second(models.atypical_probability, crops, classifier_batch)
    single = crops_per_second(models.atypical_probability, crops[: min(len(crops), 128)], 1)

    padded = (max(shape[0], tile), max(shape[1], tile))
    n_tiles = len(tile_grid(padded[0], padded[1], tile, plan.stride()))
    megapixels = shape[0] * shape[1] / 1e6
    stages = median_run["stages"]
    end_to_end = median_run["seconds"]
    return {
        "size": {"width": shape[1], "height": shape[0], "megapixels": megapixels},
        "batch_size": settings.batch_size,
        "precision": spec.precision,
        "device_requested": spec.device,
        "provider": provider,
        "model_load_seconds": model_load_s,
        "warmup_runs": warmup,
        "seconds": {
            "end_to_end": end_to_end,
            "min": min(r["seconds"] for r in timed),
            "runs": [r["seconds"] for r in timed],
            "first_run": runs[0]["seconds"],
            "stages": stages,
            "other": end_to_end - sum(stages.values()),
            "read_alone": statistics.median(read_alone),
        },
        "ratio_to_read_alone": end_to_end / statistics.median(read_alone),
        "mpx_per_s": {
            "end_to_end": megapixels / end_to_end,
            "inference": megapixels / stages["inference"] if stages["inference"] > 0 else None,
        },
        "detector": {
            "tiles": n_tiles,
            "tile_size": tile,
            "tile_overlap": plan.tile_overlap,
            "tiles_per_s": n_tiles / stages["inference"] if stages["inference"] > 0 else None,
        },
        "classifier": {
            "crop_size": crop,
            "batch_size": classifier_batch,
            "crops_per_s_batched": batched,
            "crops_per_s_single": single,
            "crops_measured": len(crops),
            "pipeline_tta_views": plan.classifier_views,
        },
        "candidates": median_run["candidates"],
        "mitotic_figures": median_run["mitotic_figures"],
        "rss_after_load_bytes": rss_after_load,
        "peak_rss_bytes": peak_rss,
    }


def worker_main(spec_path: str, result_path: str) -> int:
    from mitosis_analysis.errors import InputError

    spec = RunSpec(**json.loads(Path(spec_path).read_text()))
    try:
        result = measure(spec)
    except InputError as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 2
    Path(result_path).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- parent side


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def run_worker(spec: RunSpec, workdir: Path) -> dict:
    """Run ``measure(spec)`` in a fresh interpreter; its stderr (the product's log) passes through."""
    tag = f"{spec.width}x{spec.height}_b{spec.batch_size}_{spec.precision}"
    spec_path, result_path = workdir / f"{tag}.spec.json", workdir / f"{tag}.result.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path), str(result_path)]
    proc = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0 or not result_path.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited with {proc.returncode}: {last}", "batch_size": spec.batch_size,
                "precision": spec.precision, "size": {"width": spec.width, "height": spec.height}}
    return json.loads(result_path.read_text())


def make_fp16_detector(source: Path, target: Path) -> Path:
    """float16 copy of an ONNX model, inputs and outputs left float32 (so the pipeline is unchanged)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return target


def match_points(a: np.ndarray, b: np.ndarray, radius: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of two point sets (N x 2, M x 2), closest pairs first, pairs
    farther apart than ``radius`` left unmatched. Returns (index in a, index in b, distance)."""
    if len(a) == 0 or len(b) == 0:
        return []
    from scipy.spatial import cKDTree

    pairs = cKDTree(a).sparse_distance_matrix(cKDTree(b), radius, output_type="ndarray")
    pairs = pairs[pairs["v"] <= radius]
    used_a, used_b, matches = set(), set(), []
    for i, j, d in sorted(zip(pairs["i"], pairs["j"], pairs["v"]), key=lambda p: p[2]):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            matches.append((int(i), int(j), float(d)))
    return matches


def compare_detections(reference: dict, other: dict, radius_mm: float = MATCH_RADIUS_MM) -> dict:
    """How ``other``'s points (mitotic-figures.json) differ from ``reference``'s."""
    def points(doc, only_mitoses=False):
        pts = [p for p in doc["points"] if not only_mitoses or p["name"] == "mitotic figure"]
        return pts, np.array([p["point"][:2] for p in pts], np.float64).reshape(-1, 2)

    out = {}
    for key, only in (("all_candidates", False), ("mitotic_figures", True)):
        pa, xa = points(reference, only)
        pb, xb = points(other, only)
        matches = match_points(xa, xb, radius_mm)
        shifts_um = np.array([d for _, _, d in matches]) * 1000.0
        dprob = np.array([abs(pa[i]["probability"] - pb[j]["probability"]) for i, j, _ in matches])
        out[key] = {
            "fp32": len(pa), "fp16": len(pb), "difference": len(pb) - len(pa), "matched": len(matches),
            "shift_um_mean": float(shifts_um.mean()) if len(matches) else None,
            "shift_um_max": float(shifts_um.max()) if len(matches) else None,
            "probability_diff_max": float(dprob.max()) if len(matches) else None,
        }
    return out


def machine_info() -> dict:
    import onnxruntime as ort

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "onnxruntime": ort.__version__,
        "providers_available": ort.get_available_providers(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             check=False, capture_output=True, text=True, timeout=20)
        if gpu.returncode == 0:
            info["gpu"] = gpu.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


def print_result(r: dict, file=sys.stdout) -> None:
    size = r["size"]
    head = f"{size['width']}x{size['height']} batch {r['batch_size']} {r['precision']}"
    if "error" in r:
        print(f"{head}: FAILED: {r['error']}", file=file)
        return
    s = r["seconds"]
    runs = ", ".join(f"{v:.2f}" for v in s["runs"])
    print(f"{head} on {r['provider']} ({size['megapixels']:.1f} Mpx, {r['candidates']} candidates, "
          f"{r['mitotic_figures']} mitotic figures)", file=file)
    print(f"  end to end      {s['end_to_end']:8.2f} s  (median of {len(s['runs'])}: {runs}; "
          f"first run {s['first_run']:.2f} s; model load {r['model_load_seconds']:.2f} s, not included)", file=file)
    for name in STAGES:
        v = s["stages"][name]
        print(f"    {name:<15}{v:8.2f} s  {100 * v / s['end_to_end']:5.1f} %", file=file)
    print(f"    {'other':<15}{s['other']:8.2f} s", file=file)
    inf, tiles_per_s = r["mpx_per_s"]["inference"], r["detector"]["tiles_per_s"]
    print(f"  Mpx/s           {r['mpx_per_s']['end_to_end']:8.2f} end to end, "
          + (f"{inf:.2f} inference alone" if inf else "no tile inferred"), file=file)
    print(f"  detector        {r['detector']['tiles']} tiles of {r['detector']['tile_size']} px"
          + (f", {tiles_per_s:.1f} tiles/s in the inference stage" if tiles_per_s else ""), file=file)
    c = r["classifier"]
    print(f"  classifier      {c['crops_per_s_batched']:8.1f} crops/s batched by {c['batch_size']}, "
          f"{c['crops_per_s_single']:.1f} crops/s one at a time (no TTA; the pipeline uses "
          f"{c['pipeline_tta_views']} views per candidate)", file=file)
    print(f"  read alone      {s['read_alone']:8.2f} s  (pipeline = {r['ratio_to_read_alone']:.1f}x read alone)", file=file)
    print(f"  peak RSS        {_gib(r['peak_rss_bytes']):>10}  ({_gib(r['rss_after_load_bytes'])} after model load)", file=file)
    for line in target_lines(r):
        print(f"  target          {line}", file=file)


def print_summary(results: list[dict], file=sys.stdout) -> None:
    """One line per run, for sweeps."""
    print(f"\n{'size':>11} {'batch':>5} {'prec':>4} {'provider':>9} {'end to end':>10} {'Mpx/s':>7} "
          f"{'infer Mpx/s':>11} {'crops/s':>8} {'peak RSS':>9}", file=file)
    for r in results:
        size = f"{r['size']['width']}x{r['size']['height']}"
        if "error" in r:
            print(f"{size:>11} {r['batch_size']:>5} {r['precision']:>4} failed: {r['error']}", file=file)
            continue
        print(f"{size:>11} {r['batch_size']:>5} {r['precision']:>4} {r['provider'].replace('ExecutionProvider', ''):>9} "
              f"{r['seconds']['end_to_end']:>8.2f} s {r['mpx_per_s']['end_to_end']:>7.2f} "
              f"{r['mpx_per_s']['inference'] or 0:>11.2f} {r['classifier']['crops_per_s_batched']:>8.0f} "
              f"{r['peak_rss_bytes'] / 1024**3:>5.2f} GiB", file=file)


def target_lines(r: dict) -> list[str]:
    """Issue 2/4 targets that apply to this run, each with 'met' or 'MISSED'."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = []
    s, gpu = r["seconds"], r["provider"] == "CUDAExecutionProvider"
    peak = r["peak_rss_bytes"]
    if (r["size"]["width"], r["size"]["height"]) == MIDOGPP_SIZE:
        limit = TARGET_GPU_SECONDS if gpu else TARGET_CPU_SECONDS
        lines.append(f"end to end <= {limit:g} s: {s['end_to_end']:.2f} s, {verdict(s['end_to_end'] <= limit)}")
    if gpu:
        ratio = r["ratio_to_read_alone"]
        lines.append(f"<= {TARGET_GPU_OVER_READ:g}x read alone: {ratio:.1f}x, {verdict(ratio <= TARGET_GPU_OVER_READ)}")
    else:
        lines.append(f"peak RSS <= 3 GiB: {_gib(peak)}, {verdict(peak <= TARGET_PEAK_RSS_BYTES)}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
                   metavar="WxH", help=f"synthetic ROI sizes (default {' '.join(DEFAULT_SIZES)})")
    p.add_argument("--image", type=Path, default=None,
                   help="benchmark this ROI file (TIFF/MHA) instead of synthetic ones; --sizes is ignored")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="inference device (default auto)")
    p.add_argument("--batch-size", nargs="+", type=int, default=[Settings().batch_size], metavar="N",
                   help=f"detector tiles per batch; several values sweep (default {Settings().batch_size})")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the median is reported (default 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed pipeline runs first (default: 1 on CUDA, 0 on the CPU)")
    p.add_argument("--fp16", action="store_true", help="also run a float16 detector and compare its detections with fp32's")
    p.add_argument("--fp16-detector", type=Path, default=None,
                   help="float16 detector ONNX to use with --fp16 (default: weights/detector_fp16.onnx if present, "
                        "else converted on the fly)")
    p.add_argument("--compression", choices=["jpeg", "deflate", "lzw", "zstd", "none"], default="jpeg",
                   help="compression of the synthetic TIFF (default jpeg, quality 90, 256 px tiles)")
    p.add_argument("--classifier-crops", type=int, default=1024, help="crops for the classifier's crops/s (default 1024)")
    p.add_argument("--weights", type=Path, default=None, help="weights folder (default: weights/ of the repo)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="save every figure to this JSON file")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
    if args.repeat < 1 or min(args.batch_size) < 1 or args.classifier_crops < 1:
        print("benchmark: --repeat, --batch-size and --classifier-crops must be >= 1", file=sys.stderr)
        return 2
    if args.image is not None and not args.image.is_file():
        print(f"benchmark: image not found: {args.image}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print(f"benchmark: --device cuda but this onnxruntime has no CUDA provider "
                  f"(available: {ort.get_available_providers()}; install onnxruntime-gpu)", file=sys.stderr)
            return 2
    report = {
        "benchmark": "roi end to end (benchmarks/benchmark.py)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else argv)),
        "machine": machine_info(),
        "weights": _weights_info(args.weights),
        "results": [],
        "fp16_vs_fp32": [],
    }
    if "error" in report["weights"]:
        print(f"benchmark: {report['weights']['error']}", file=sys.stderr)
        return 2
    failed = False
    with tempfile.TemporaryDirectory(prefix="roi-benchmark-") as tmp:
        workdir = Path(tmp)
        fp16_path = _fp16_detector(args, workdir) if args.fp16 else None
        precisions = ["fp32"] + (["fp16"] if args.fp16 else [])
        for image, source in _images(args, workdir):
            for batch_size in args.batch_size:
                outputs = {}
                for precision in precisions:
                    out = workdir / f"{image.stem}_b{batch_size}_{precision}.json"
                    spec = RunSpec(
                        image=str(image), width=source.get("width", 0), height=source.get("height", 0),
                        batch_size=batch_size, device=args.device, precision=precision, repeat=args.repeat,
                        warmup=args.warmup, classifier_crops=args.classifier_crops, output=str(out),
                        weights_dir=None if args.weights is None else str(args.weights),
                        fp16_detector=None if fp16_path is None else str(fp16_path),
                    )
                    result = run_worker(spec, workdir)
                    result["image"] = source
                    report["results"].append(result)
                    print_result(result)
                    sys.stdout.flush()
                    failed |= "error" in result
                    if "error" not in result:
                        outputs[precision] = json.loads(out.read_text())
                if len(outputs) == 2:
                    diff = {"size": report["results"][-1]["size"], "batch_size": batch_size,
                            **compare_detections(outputs["fp32"], outputs["fp16"])}
                    report["fp16_vs_fp32"].append(diff)
                    print(_describe_fp16(diff))
    if len(report["results"]) > 1:
        print_summary(report["results"])
    if args.json is not None:
        from mitosis_analysis.outputs import write_json_atomic

        write_json_atomic(args.json, report)
        print(f"figures saved to {args.json}")
    return 1 if failed else 0


def _images(args, workdir: Path):
    """(path, description) of each ROI to benchmark: the given file, or one synthetic TIFF per size."""
    if args.image is not None:
        yield args.image, {"path": str(args.image), "synthetic": False, "file_bytes": args.image.stat().st_size}
        return
    from synthetic_roi import synthetic_he_roi, write_roi_tiff

    for width, height in args.sizes:
        start = time.perf_counter()
        pixels = synthetic_he_roi(height, width, seed=0)
        path = write_roi_tiff(workdir / f"synthetic_{width}x{height}.tif", pixels, args.compression)
        del pixels
        yield path, {"synthetic": True, "width": width, "height": height, "compression": args.compression,
                     "file_bytes": path.stat().st_size, "generation_seconds": time.perf_counter() - start}


def _fp16_detector(args, workdir: Path) -> Path:
    from mitosis_analysis.manifest import Manifest

    if args.fp16_detector is not None:
        return args.fp16_detector
    weights = args.weights or Settings().weights_dir
    shipped = Path(weights) / "detector_fp16.onnx"
    if shipped.is_file():
        return shipped
    source = Path(weights) / Manifest.load(Path(weights)).detector.file
    print(f"benchmark: converting {source} to float16 (onnxruntime.transformers.float16, I/O kept float32)",
          file=sys.stderr)
    return make_fp16_detector(source, workdir / "detector_fp16.onnx")


def _weights_info(weights: Path | None) -> dict:
    from mitosis_analysis.errors import InputError
    from mitosis_analysis.manifest import Manifest

    folder = Path(weights or Settings().weights_dir)
    try:
        m = Manifest.load(folder)
    except InputError as exc:
        return {"folder": str(folder), "error": str(exc)}
    return {"folder": str(folder), "trained": m.provenance.trained, "detector_sha256": m.detector.sha256,
            "classifier_sha256": m.classifier.sha256}


def _describe_fp16(diff: dict) -> str:
    lines = [f"fp16 vs fp32 detector, {diff['size']['width']}x{diff['size']['height']} batch {diff['batch_size']}:"]
    for key in ("all_candidates", "mitotic_figures"):
        d = diff[key]
        shift = (f"shift mean {d['shift_um_mean']:.3f} um, max {d['shift_um_max']:.3f} um, "
                 f"probability diff max {d['probability_diff_max']:.2e}") if d["matched"] else "no matches"
        lines.append(f"  {key.replace('_', ' '):<16} fp32 {d['fp32']}, fp16 {d['fp16']} "
                     f"(difference {d['difference']:+d}), matched {d['matched']} within 7.5 um; {shift}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
