"""Train the 4-class segmentation detector (``model/unet.py``) on AMi-Br crops.

    python -m training.train_detector --data ../shared/data [--epochs 100] [--device cuda]

Data: the published AMi-Br training split; validation = whole slides taken out of it
(``training.data.split_by_slide``); the test split is not read here. Labels per crop come from
``training/labels.py`` (annotated mitoses, MIDOG++ hard negatives, classical-teacher nuclei).

A training sample is a 2 x 2 mosaic of randomly chosen crops (each with its own random symmetry and
HED stain / brightness / blur-sharpen jitter from ``training/augment.py``) from which a random
``--window`` px square is cut: the figures land anywhere in the input, next to crop seams as in the
evaluation mosaics. Loss: CE + class-ratio-weighted Dice + focal + point CE at annotated centres
(``training/losses.py``), a weak/strong-view feature-consistency term (``--consistency W``, default
0.2), and a domain-adversarial term (``--adversarial W``, default 0.1): a per-position domain
classifier on the bottleneck behind a gradient-reversal layer (``training/adversarial.py``; domains:
the three MIDOG21 scanners and TUPAC16, known per crop and so per mosaic quadrant). Real tissue
(``--real-windows N``, off in the shipped recipe): each batch also holds N windows of the ICPR 2012
fields (``training/field_windows.py``: scanner A with its mitoses, scanner H as negatives clear of
its painted region; ``--icpr-holdout`` keeps slides out for held-out evaluation), augmented as the
mosaics are and left out of the domain term. Teacher-student
(``--teacher-student``, off by default: it did not help in the ablation): from the first best
validation score at epoch >= ``--teacher-from-epoch``, a frozen copy of the best student relabels
background/normal-nucleus pixels where it is confident, refining the classical teacher's nucleus
masks; the copy is refreshed at each new best validation score. Augmentation runs batched on the
training device (``--device``, default cuda when available).

Every epoch: validation on slide-held-out mosaics (recall and FP/mm^2 sweep,
``training/detector_eval.py``); the best epoch (mean recall at 5/10/20/50/100/200 FP per mm^2, ``SELECTION_FP_RATES``) is saved to
``--checkpoint`` with its operating threshold (the lowest one within 5 FP/mm^2 on validation).
Writes ``metrics.json``, ``log.txt`` and ``curves.png`` in ``--run-dir``. Seeds are fixed.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from model import build_detector
from model.unet import stride_for
from training import adversarial, augment, data, detector_eval, field_windows, losses, plots, real_fields, runtime
from training import labels as label_lib
from training import teacher as teacher_lib

AMIBR_DIR = "ami-br"
FP_BUDGET_PER_MM2 = 5.0
# Model selection: mean recall at these false detections per mm^2 of crop area (wide enough to
# rank young models too; crops are far denser in mitoses than ROIs).
SELECTION_FP_RATES = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
TEMPERATURES = (1.0, 0.7, 0.5)


@dataclass
class LabelledCrops:
    """Crops, their label maps and ground-truth points, held in memory."""

    crops: list
    images: np.ndarray  # N x 128 x 128 x 3 uint8
    labels: np.ndarray  # N x 128 x 128 uint8
    points: np.ndarray  # N x 128 x 128 uint8 (IGNORE except at annotated centres)
    mitoses: list  # per crop (n, 2) crop-pixel points
    domains: np.ndarray  # N acquisition-domain indices (training.data.DOMAINS)

    def __len__(self) -> int:
        return len(self.crops)


def label_crops(crops, annotations, cache_dir: Path | None = None) -> LabelledCrops:
    """The crops with their label maps. With ``cache_dir``, label maps are read from / written to
    ``labels-<key>.npz`` there, the key being a hash of the crops' names and of the labelling code
    (``training/labels.py``, ``training/teacher.py``), so a changed teacher never reads stale maps."""
    images = data.load_crops(crops)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"labels-{runtime.cache_key((c.name for c in crops), label_lib, teacher_lib)}.npz"
    if cache is not None and cache.exists():
        z = np.load(cache, allow_pickle=False)
        labels, points = z["labels"], z["points"]
        mitoses = [z["mitoses"][z["owner"] == i] for i in range(len(crops))]
    else:
        maps = [label_lib.crop_labels(img, c, annotations) for img, c in zip(images, crops)]
        labels, points = np.stack([m.labels for m in maps]), np.stack([m.points for m in maps])
        mitoses = [np.asarray(m.mitoses, dtype=np.float64).reshape(-1, 2) for m in maps]
        if cache is not None:
            runtime.save_npz(cache, compressed=True, labels=labels, points=points, mitoses=np.concatenate(mitoses),
                             owner=np.repeat(np.arange(len(crops)), [len(m) for m in mitoses]))
    return LabelledCrops(list(crops), images, labels, points, mitoses, data.domains(crops))


@dataclass
class DeviceCrops:
    """The training crops as tensors on the training device (augmented there, batch by batch)."""

    images: torch.Tensor  # N x 128 x 128 x 3 uint8
    labels: torch.Tensor  # N x 128 x 128 uint8
    points: torch.Tensor  # N x 128 x 128 uint8
    domains: torch.Tensor  # N uint8

    @classmethod
    def of(cls, ds: LabelledCrops, device: torch.device) -> "DeviceCrops":
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        return cls(t(ds.images), t(ds.labels), t(ds.points), t(ds.domains.astype(np.uint8)))

    def __len__(self) -> int:
        return self.images.shape[0]


def _tile_2x2(x: torch.Tensor) -> torch.Tensor:
    """(4B, ..., s, s) in row-major quadrant order -> (B, ..., 2s, 2s) mosaics."""
    b, rest, s = x.shape[0] // 4, x.shape[1:-2], x.shape[-1]
    x = x.reshape(b, 2, 2, *rest, s, s)
    dims = list(range(3, 3 + len(rest)))
    return x.permute(0, *dims, 1, 3 + len(rest), 2, 4 + len(rest)).reshape(b, *rest, 2 * s, 2 * s)


def mosaic_batch(ds: DeviceCrops, groups: torch.Tensor, window: int, g: torch.Generator,
                 config: augment.AugmentConfig) -> dict[str, torch.Tensor]:
    """2 x 2 mosaics of the crops ``groups`` (B x 4 indices), each crop with its own random symmetry
    and photometric change, each mosaic cut to a random ``window`` px square: image (B x 3 x w x w,
    float in [0, 1]), labels and points (B x w x w) and the domain of each pixel (B x w x w)."""
    idx = groups.reshape(-1)
    image = augment.to_float(ds.images[idx])
    image, labels, points = augment.random_dihedral(image, ds.labels[idx], ds.points[idx], g=g)
    image = augment.augment_photometric(image, config, g)
    s = image.shape[-1]
    domains = ds.domains[idx][:, None, None].expand(-1, s, s)
    tiles = {"image": _tile_2x2(image), "labels": _tile_2x2(labels), "points": _tile_2x2(points),
             "domains": _tile_2x2(domains)}
    offsets = torch.randint(0, 2 * s - window + 1, (groups.shape[0], 2), generator=g, device=image.device).tolist()
    return {k: torch.stack([t[b, ..., y : y + window, x : x + window] for b, (y, x) in enumerate(offsets)])
            for k, t in tiles.items()}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 (numpy) -> N x 3 x H x W float in [0, 1]."""
    return augment.to_float(torch.from_numpy(np.ascontiguousarray(images)))


def batches(ds: DeviceCrops, batch_size: int, window: int, rng: np.random.Generator, g: torch.Generator,
            config: augment.AugmentConfig, strong: augment.AugmentConfig | None = None):
    """One epoch: every crop once, in random groups of four, ``batch_size`` mosaics per batch;
    with ``strong``, also ``batch["strong"]``: the same mosaics under a stronger photometric change."""
    order = torch.from_numpy(rng.permutation(len(ds))).to(ds.images.device)
    groups = order[: len(order) // 4 * 4].reshape(-1, 4)
    for b in range(0, len(groups), batch_size):
        batch = mosaic_batch(ds, groups[b : b + batch_size], window, g, config)
        if strong is not None:  # same geometry, stronger photometric change
            batch["strong"] = augment.augment_photometric(batch["image"], strong, g)
        yield batch


def with_real_windows(batch: dict[str, torch.Tensor], windows: field_windows.FieldWindows, n: int,
                      rng: np.random.Generator, g: torch.Generator, config: augment.AugmentConfig,
                      strong: augment.AugmentConfig | None = None) -> dict[str, torch.Tensor]:
    """``batch`` with ``n`` real-tissue windows appended, augmented as the mosaics are (a random
    symmetry, the photometric change; the strong view too when the batch has one). Their domain is
    ``adversarial.IGNORE``: the domain classifier learns the crops' four domains only."""
    device = batch["image"].device
    real = {k: torch.from_numpy(v).to(device) for k, v in windows.sample(n, rng).items()}
    image, labels, points = augment.random_dihedral(augment.to_float(real["image"]), real["labels"], real["points"], g=g)
    extra = {"image": augment.augment_photometric(image, config, g), "labels": labels, "points": points,
             "domains": torch.full_like(labels, adversarial.IGNORE, dtype=batch["domains"].dtype)}
    if "strong" in batch:
        extra["strong"] = augment.augment_photometric(extra["image"], strong, g)
    return {k: torch.cat([v, extra[k]]) for k, v in batch.items()}


def refine_with_teacher(teacher: torch.nn.Module, image: torch.Tensor, labels: torch.Tensor,
                        confidence: float = 0.8) -> torch.Tensor:
    """Background/normal-nucleus pixels relabelled by the teacher where it is confident between the
    two; mitosis and hard-negative labels (annotations) are never touched."""
    with torch.no_grad():
        p = torch.softmax(teacher(image), dim=1)
    p_bg, p_normal = p[:, label_lib.BACKGROUND], p[:, label_lib.NORMAL]
    share = p_normal / (p_bg + p_normal).clamp(min=1e-6)
    editable = (labels == label_lib.BACKGROUND) | (labels == label_lib.NORMAL)
    out = labels.clone()
    out[editable & (share >= confidence)] = label_lib.NORMAL
    out[editable & (share <= 1 - confidence)] = label_lib.BACKGROUND
    return out


def domains_at(domain_map: torch.Tensor, stride: int) -> torch.Tensor:
    """The domain map (N x H x W) sampled at the centres of ``stride`` px cells: the domain of each
    bottleneck position."""
    return domain_map[:, stride // 2 :: stride, stride // 2 :: stride]


def validation_mosaics(ds: LabelledCrops, cols: int = 8) -> list[detector_eval.Mosaic]:
    per = cols * cols
    return [detector_eval.build_mosaic(ds.images[i : i + per], ds.mitoses[i : i + per], cols=cols)
            for i in range(0, len(ds), per)]


def validate(net: torch.nn.Module, mosaics: list[detector_eval.Mosaic],
             temperatures=TEMPERATURES) -> tuple[float, detector_eval.Sweep]:
    """(temperature, sweep) of the best-scoring calibration temperature on the validation mosaics.

    The candidate floor of the product (P >= 0.1) merges everything into one component when the
    background's P(mitosis) hovers around it (focal loss leaves well-classified pixels
    under-confident); dividing the logits by a temperature < 1 sharpens them, so it is chosen here,
    on validation, and stored in the model."""
    net.eval()
    with torch.no_grad():
        logits = [net(to_tensor(m.image[None]).to(runtime.device_of(net))).cpu() for m in mosaics]
    best = None
    for t in temperatures:
        parts = []
        for m, lg in zip(mosaics, logits):
            p = torch.softmax(lg / t, dim=1)[0, label_lib.MITOSIS].numpy()
            pts, scores = detector_eval.candidates_from_map(p)
            parts.append((pts, scores, m.gt_points))
        points, scores, gt = detector_eval.merge_detections(parts)
        sweep = detector_eval.sweep(points, scores, gt, sum(m.crop_area_mm2 for m in mosaics))
        if best is None or selection_score(sweep) > selection_score(best[1]):
            best = (t, sweep)
    return best


def selection_score(sweep: detector_eval.Sweep) -> float:
    return detector_eval.partial_froc(sweep, SELECTION_FP_RATES)


def plot_curves(history: list[dict], path: Path) -> None:
    plt = plots.pyplot(path)
    if plt is None:
        return

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "ce", "dice", "focal", "point", "consistency", "domain"):
        if key in history[0]:
            axes[0].plot(epochs, [h[key] for h in history], label=key)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("training loss (mean per epoch)")
    axes[0].legend()
    for key in ("val_score", "val_recall_at_5fp", "val_recall_at_20fp", "val_recall_at_100fp"):
        axes[1].plot(epochs, [h[key] for h in history], label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("validation (slide-held-out mosaics)")
    axes[1].legend()
    fig.tight_layout()
    plots.save(fig, path)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "training" / "checkpoints" / "detector.pt")
    p.add_argument("--run-dir", type=Path, default=None, help="default training/runs/detector-<UTC time>")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--minutes", type=float, default=None, help="stop after the epoch that passes this wall time")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    p.add_argument("--limit-crops", type=int, default=None, help="use only this many training crops (smoke tests)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--window", type=int, default=192)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--val-fraction", type=float, default=0.15)
    # Defaults = the shipped recipe; the ablation (training/ablation.py, training/README.md) found
    # no gain from teacher-student on validation, so it is off unless asked for.
    p.add_argument("--teacher-student", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--teacher-from-epoch", type=int, default=6,
                   help="the first best student that may become the teacher (earlier ones are too raw)")
    p.add_argument("--consistency", type=float, default=0.2, help="weight of the weak/strong feature term (0: off)")
    p.add_argument("--adversarial", type=float, default=0.1,
                   help="weight of the domain-adversarial term (0: off); the reversal strength ramps up over training")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    p.add_argument("--label-cache", type=Path, default=REPO_ROOT / "training" / "cache",
                   help="folder of cached label maps (keyed by crops and labelling code); '' to disable")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="initialisation, sampling and augmentation")
    p.add_argument("--split-seed", type=int, default=0,
                   help="which slides form validation (keep it fixed across runs that are compared or ensembled)")
    p.add_argument("--real-windows", type=int, default=0,
                   help="real-tissue windows (ICPR 2012 fields, training/field_windows.py) added to each batch "
                        "of --batch-size mosaics (0: crops only, the shipped recipe)")
    p.add_argument("--real-positive-fraction", type=float, default=0.5,
                   help="share of the real windows drawn around a scanner-A mitosis (the rest uniform)")
    p.add_argument("--icpr-holdout", nargs="*", default=[], choices=real_fields.SLIDES, metavar="SLIDE",
                   help="ICPR 2012 slides kept out of the real windows (A and H), for held-out evaluation")
    args = p.parse_args(argv)
    if args.window % stride_for(args.channels):
        p.error(f"--window {args.window} must be a multiple of the network's stride {stride_for(args.channels)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python -m training.train_detector " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    started = time.time()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    run_dir = args.run_dir or REPO_ROOT / "training" / "runs" / f"detector-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        line = f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {msg}"
        print(line, file=sys.stderr, flush=True)
        with open(run_dir / "log.txt", "a") as log_file:
            print(line, file=log_file)

    amibr = args.data / AMIBR_DIR
    table = data.load_table(amibr)
    train_crops, _test = data.published_split(amibr, table)  # the test split is never used here
    train_crops, val_crops = data.split_by_slide(train_crops, args.val_fraction, seed=args.split_seed)
    if args.limit_crops:
        train_crops, val_crops = train_crops[: args.limit_crops], val_crops[: max(4, args.limit_crops // 4)]
    annotations = label_lib.data_annotations(table, args.data)
    log(f"train: {data.summary(train_crops)}; val: {data.summary(val_crops)}")
    cache = args.label_cache if str(args.label_cache) not in ("", ".") else None
    train_ds, val_ds = label_crops(train_crops, annotations, cache), label_crops(val_crops, annotations, cache)
    class_share = np.bincount(train_ds.labels.ravel(), minlength=4) / train_ds.labels.size
    log(f"labels ready ({time.time() - started:.0f} s); pixel shares {np.round(class_share, 4).tolist()}; "
        f"extra mitoses in crops: {sum(len(m) - 1 for m in train_ds.mitoses)}")
    val_mosaics = validation_mosaics(val_ds)
    windows = None
    if args.real_windows > 0:
        fields = field_windows.load_fields(args.data, args.label_cache, tuple(args.icpr_holdout))
        windows = field_windows.FieldWindows(fields, args.window, args.real_positive_fraction)
        log(f"real windows: {args.real_windows} per batch from {len(fields)} ICPR 2012 fields "
            f"({len(windows.mitoses)} mitoses; slides held out: {args.icpr_holdout or 'none'}; "
            f"{time.time() - started:.0f} s)")

    device = runtime.resolve_device(args.device)
    log(f"device: {device}")
    config = {"channels": list(args.channels)}
    net = build_detector(**config).to(device)
    params = list(net.parameters())
    domain_head = None
    if args.adversarial > 0:
        domain_head = adversarial.DomainHead(net.channels[-1], len(data.DOMAINS)).to(device)
        params += list(domain_head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_ds) // 4 / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    warmup = min(100, total_steps // 10 + 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    train_on_device = DeviceCrops.of(train_ds, device)
    gen = augment.generator(args.seed, device)
    weak_cfg = augment.AugmentConfig()
    strong_cfg = augment.AugmentConfig.strong() if args.consistency > 0 else None
    teacher = None
    history: list[dict] = []
    best = {"val_score": -1.0}
    step = 0
    for epoch in range(1, args.epochs + 1):
        net.train()
        t0 = time.time()
        sums: dict[str, float] = {}
        n = 0
        for batch in batches(train_on_device, args.batch_size, args.window, rng, gen, weak_cfg, strong_cfg):
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            if windows is not None:
                batch = with_real_windows(batch, windows, args.real_windows, rng, gen, weak_cfg, strong_cfg)
            target = batch["labels"]
            if teacher is not None:
                target = refine_with_teacher(teacher, batch["image"], target)
            logits, f_weak = net(batch["image"], return_features=True)
            loss, terms = losses.detector_loss(logits, target, batch["points"])
            if strong_cfg is not None:
                _, f_strong = net(batch["strong"], return_features=True)
                consistency = losses.feature_consistency(f_weak, f_strong)
                loss = loss + args.consistency * consistency
                terms["consistency"] = float(consistency.detach())
            if domain_head is not None:
                strength = adversarial.ramp(step / max(1, total_steps))
                domain_logits = domain_head(f_weak, strength)
                domain = adversarial.domain_loss(domain_logits, domains_at(batch["domains"], net.stride))
                loss = loss + args.adversarial * domain
                terms["domain"] = float(domain.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            terms["loss"] = float(loss.detach())
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            step += 1
            if step % 20 == 0:
                log(f"epoch {epoch} step {step} loss {terms['loss']:.4f} ({(time.time() - t0) / n:.2f} s/step)")
            if args.max_steps and step >= args.max_steps:
                break
        train_s = time.time() - t0
        temperature, sweep = validate(net, val_mosaics)
        record = {"epoch": epoch, "step": step, "lr": lr_at(step), "train_s": train_s,
                  "val_s": time.time() - t0 - train_s, **{k: v / max(n, 1) for k, v in sums.items()},
                  "val_score": selection_score(sweep), "val_temperature": temperature,
                  "val_recall_at_5fp": sweep.recall_at_fp(5.0), "val_recall_at_20fp": sweep.recall_at_fp(20.0),
                  "val_recall_at_100fp": sweep.recall_at_fp(100.0),
                  "teacher_student_active": teacher is not None}
        history.append(record)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
        if record["val_score"] > best["val_score"]:
            threshold = sweep.threshold_for_fp(FP_BUDGET_PER_MM2)
            best = {**record, "threshold": threshold, "val_at_threshold": sweep.at(threshold),
                    "val_best_f1": sweep.at(sweep.best_f1_threshold())}
            net.temperature.fill_(temperature)
            state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            net.temperature.fill_(1.0)
            ckpt = {
                "arch": "light_unet", "config": config, "state_dict": state, "threshold": threshold,
                "metrics": {"validation": {k: best[k] for k in ("epoch", "val_score", "val_temperature",
                                                                "val_recall_at_5fp", "val_recall_at_20fp",
                                                                "val_recall_at_100fp", "val_at_threshold", "val_best_f1")},
                            "selection": f"mean recall at {SELECTION_FP_RATES} FP/mm^2 of crop area",
                            "n_train_crops": len(train_ds), "n_val_crops": len(val_ds),
                            "threshold_rule": f"lowest threshold with <= {FP_BUDGET_PER_MM2} FP/mm^2 on validation"},
                "command": command, "data": "AMi-Br crops, published training split (validation by slide), "
                                            "AMI-BR.csv, MIDOG++.json (../shared/data)"
                                            + (f"; ICPR 2012 fields A and H (windows), slides held out: "
                                               f"{args.icpr_holdout or 'none'}" if windows is not None else ""),
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "sweep": sweep.to_dict(),
            }
            runtime.save_checkpoint(ckpt, args.checkpoint)
            detector_eval.plot_sweep(sweep, run_dir / "val_sweep.png", f"validation, epoch {epoch}", threshold)
            log(f"new best (score {record['val_score']:.4f}); threshold {threshold:.2f}: {best['val_at_threshold']}")
            if args.teacher_student and epoch >= args.teacher_from_epoch:
                teacher = copy.deepcopy(net).eval()  # temperature 1, as trained
                for p in teacher.parameters():
                    p.requires_grad_(False)
        runtime.write_json({"args": {k: str(v) for k, v in vars(args).items()}, "command": command,
                    "history": history, "best": best}, run_dir / "metrics.json")
        plot_curves(history, run_dir / "curves.png")
        if args.max_steps and step >= args.max_steps:
            break
        if args.minutes and time.time() - started > args.minutes * 60:
            log(f"time budget of {args.minutes} min reached after epoch {epoch}")
            break
    log(f"done in {(time.time() - started) / 60:.1f} min; best epoch {best.get('epoch')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
