"""Train the atypical-vs-normal classifier on AMi-Br (from scratch: no pretrained weights).

    python -m training.train_classifier --data ../shared/data/ami-br --out training/runs/classifier

Protocol: the published AMi-Br split (``training/data.py``); validation = whole slides held out of
the training split (15 %); the test split is only predicted once, at the end, for the report.
Training: balanced sampling (each batch draws both classes equally often), focal loss on the
majority label plus an auxiliary *hardness* head (BCE on "the three experts disagree"), dihedral +
HED stain + brightness/contrast + blur/sharpen augmentation (``training/augment.py``), AdamW with
linear warm-up and cosine decay, an exponential moving average (EMA) of the weights, which is what
is validated and saved. The epoch with the best validation AUROC is kept; its operating threshold
is the equal-error point on validation (``classifier_eval.operating_threshold``), for the number of flip views the product averages
(``Settings.classifier_tta``), and for 1, 2, 4 and 8 views as well (``thresholds_by_views``).
``--adversarial W`` adds a domain-adversarial term (``training/adversarial.py``: a domain classifier
on the pooled features behind a gradient-reversal layer; domains: three MIDOG21 scanners, TUPAC16).
``--augment wide`` and ``--rrc-min-scale`` widen the augmentation, ``--augment light`` narrows it to
symmetries and a colour jitter; ``--mix mixup|cutmix`` mixes pairs of samples and their targets
(``augment.random_mix``). ``--phase-weight W`` adds an auxiliary head on the experts' eight mitotic
phase labels (soft cross-entropy; training only, never exported); ``--target votes`` trains on the
fraction of experts voting atypical instead of the majority; ``--sampling shuffle`` visits every
crop once per epoch at its own prevalence; ``--stem-pool 0`` drops the ResNet stem's max pool. ``--device`` picks cpu or cuda (default:
cuda when available); ``--precision bf16`` trains under bfloat16 autocast (a step about twice as
fast on CPUs with AVX-512 BF16, a whole epoch about 1.3 times; weights, validation and export stay
float32).

``--init CHECKPOINT`` starts from a previous run's selected weights instead (a warm restart: new
warm-up and cosine cycle, same normalisation); the checkpoint's ``initialisation`` says so.

Writes ``<checkpoint>`` (default ``training/checkpoints/classifier.pt``, the dict ``export.sh``
reads: arch, config, state_dict, threshold, metrics, ...), and in ``--out``: ``metrics.json``,
``history.json``, ``curves.png`` and ``threshold_sweep.png``. Everything is written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import pickle
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mitosis_analysis.manifest import InferencePlan  # noqa: E402
from model.classifier import ARCH, RESNET_ARCH, build_classifier  # noqa: E402
from training import adversarial  # noqa: E402
from training import augment as aug  # noqa: E402
from training import classifier_eval as ev  # noqa: E402
from training import data as amibr  # noqa: E402
from training import runtime  # noqa: E402

VIEWS = (1, 2, 4, 8)


AUGMENTS = {"default": aug.AugmentConfig, "wide": aug.AugmentConfig.wide, "light": aug.AugmentConfig.light}
SAMPLINGS = ("balanced", "shuffle")
TARGETS = ("majority", "votes")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    focal_gamma: float = 2.0
    hardness_weight: float = 0.2
    ema_decay: float = 0.99
    val_fraction: float = 0.15
    seed: int = 0  # initialisation, sampling, augmentation
    split_seed: int = 0  # which slides form validation: fixed across runs that are compared or ensembled
    # Network: model.classifier.ARCHS ("atypical-msresnet-v1", "atypical-resnet-v1",
    # "atypical-convnext-v1"); depths per stage as "2,2,2,2" ("": the architecture's default).
    arch: str = ARCH
    width: int = 16
    depths: str = ""
    dropout: float = 0.3
    # atypical-resnet-v1 only: 0 drops the stem's max pool (stages at twice the resolution).
    stem_pool: int = 1
    # Augmentation: "default" (AugmentConfig()), "light" (AugmentConfig.light(): symmetries and a
    # colour jitter only) or "wide" (AugmentConfig.wide(): hue/saturation,
    # grayscale blending, wider stain/contrast/focus); rrc_min_scale < 1 adds random resized crops.
    augment: str = "default"
    rrc_min_scale: float = 1.0
    # Target of the atypical loss: "majority" (0/1, the experts' majority) or "votes" (the fraction
    # of the three experts who said atypical). Sampling, selection and every report use the majority.
    target: str = "majority"
    # Weight of an auxiliary loss on the experts' mitotic phase labels (8 classes, soft cross-entropy
    # against the mean of the two experts' one-hot labels; atypical-resnet-v1 only; 0: off).
    phase_weight: float = 0.0
    # Order of the training crops each epoch: "balanced" (drawn with replacement, each class
    # equally likely) or "shuffle" (every crop once, the classes at their own prevalence).
    sampling: str = "balanced"
    # Mixing pairs of training samples (training.augment.MIX_MODES: none, mixup, cutmix), one
    # Beta(mix_alpha, mix_alpha) weight per batch; the atypical and hardness targets are mixed too.
    mix: str = "none"
    mix_alpha: float = 0.4
    # Leave one domain out (index into training.data.DOMAINS, -1: off): train and validate on the
    # other domains' training-split crops; every crop of the held-out domain (both splits) takes the
    # test split's place in the final report.
    holdout_domain: int = -1
    threads: int = 1
    # Arithmetic of the training forward/backward pass: "fp32", or "bf16" (autocast; weights, the
    # optimiser, validation and the exported model stay float32). On this project's CPUs (AVX-512
    # BF16) bf16 halves the time of a ResNet-18-layout w32 step.
    precision: str = "fp32"
    # Weight of the domain-adversarial term (0: off).
    adversarial: float = 0.1
    # "auto" (cuda when available), "cpu", "cuda", "cuda:N".
    device: str = "auto"
    # Keep only this many crops per split (stratified, seeded): for smoke tests.
    limit: int | None = None
    # Stop after the epoch that would overrun this many minutes (None: no limit).
    max_minutes: float | None = None
    # Start from this checkpoint's weights (a warm restart: a new warm-up + cosine cycle) instead
    # of random initialisation; its normalisation and architecture config are kept.
    init: str | None = None

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"--augment {self.augment!r}: one of {', '.join(AUGMENTS)}")
        if self.mix not in aug.MIX_MODES:
            raise ValueError(f"--mix {self.mix!r}: one of {', '.join(aug.MIX_MODES)}")
        if self.stem_pool not in (0, 1) or (not self.stem_pool and self.arch != RESNET_ARCH):
            raise ValueError(f"--stem-pool {self.stem_pool}: 1, or 0 with --arch {RESNET_ARCH}")
        if self.phase_weight < 0 or (self.phase_weight > 0 and self.arch != RESNET_ARCH):
            raise ValueError(f"--phase-weight {self.phase_weight}: >= 0, and > 0 only with --arch {RESNET_ARCH}")
        if self.target not in TARGETS:
            raise ValueError(f"--target {self.target!r}: one of {', '.join(TARGETS)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"--sampling {self.sampling!r}: one of {', '.join(SAMPLINGS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision {self.precision!r}: one of {', '.join(PRECISIONS)}")


# --- pure pieces --------------------------------------------------------------------------------


def focal_loss(logit: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017), mean over the batch; gamma = 0 is plain BCE."""
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    p = torch.sigmoid(logit)
    p_true = p * target + (1 - p) * (1 - target)
    return ((1 - p_true).pow(gamma) * bce).mean()


def balanced_indices(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices drawn with replacement so that each class is equally likely."""
    y = np.asarray(y).astype(bool)
    weights = np.where(y, 0.5 / max(1, y.sum()), 0.5 / max(1, (~y).sum()))
    return rng.choice(len(y), size=n, replace=True, p=weights / weights.sum())


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def load_init(path: str | Path, phase_weight: float) -> dict:
    """The ``--init`` checkpoint, checked before any crop is read: it exists, is a classifier
    checkpoint, and has the phase head that ``phase_weight > 0`` trains."""
    try:
        start = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        raise amibr.DataError(f"--init {path}: cannot read a checkpoint ({exc})") from None
    if not isinstance(start, dict) or not {"arch", "config", "state_dict"} <= start.keys():
        raise amibr.DataError(f"--init {path}: not a classifier checkpoint (no arch / config / state_dict)")
    if phase_weight > 0 and not start["config"].get("phases"):
        raise amibr.DataError(f"--init {path}: has no phase head, so --phase-weight {phase_weight} has nothing "
                              "to train; start from a run trained with --phase-weight, or use --phase-weight 0")
    return start


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of N x H x W x 3 uint8 images, in [0, 1] units."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


def stratified_subset(crops: Sequence[amibr.Crop], n: int, rng: np.random.Generator) -> list[amibr.Crop]:
    """``n`` crops, half atypical where possible, in table order."""
    pos = [i for i, c in enumerate(crops) if c.atypical]
    neg = [i for i, c in enumerate(crops) if not c.atypical]
    n_pos = min(len(pos), n // 2)
    keep = list(rng.choice(pos, n_pos, replace=False)) + list(rng.choice(neg, min(len(neg), n - n_pos), replace=False))
    return [crops[i] for i in sorted(keep)]


# --- training -----------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    checkpoint_path: Path,
    command: str = "",
    log=lambda msg: print(msg, file=sys.stderr, flush=True),
) -> dict:
    """Train, select, calibrate the threshold on validation, report on test; returns the checkpoint dict."""
    t_start = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    start = load_init(cfg.init, cfg.phase_weight) if cfg.init else None
    train_all, test, evaluated_on = amibr.evaluation_split(data_dir, cfg.holdout_domain)
    if cfg.limit:
        train_all = stratified_subset(train_all, cfg.limit, rng)
        test = stratified_subset(test, cfg.limit, rng)
    fit, val = amibr.split_by_slide(train_all, cfg.val_fraction, cfg.split_seed)
    log(f"fit: {amibr.summary(fit)}\nval: {amibr.summary(val)}\ntest: {amibr.summary(test)} = {evaluated_on} "
        "(reported at the end only)")
    x_fit, x_val = amibr.load_crops(fit), amibr.load_crops(val)
    y_fit, y_val = amibr.labels(fit), amibr.labels(val)
    h_fit, d_fit = amibr.hardness(fit), amibr.domains(fit)
    device = runtime.resolve_device(cfg.device)
    log(f"device: {device}")

    initialisation = "random (from scratch; no pretrained weights)"
    if start is not None:
        model_config = {"arch": start["arch"], **start["config"]}
        initialisation = (f"warm restart from {cfg.init} (epoch {start['metrics']['selected_epoch']} of: "
                          f"{start.get('command', '?')}), itself {start.get('initialisation', '?')}")
    else:
        mean, std = channel_stats(x_fit)
        model_config = {"arch": cfg.arch, "width": cfg.width, "dropout": cfg.dropout, "mean": list(mean), "std": list(std)}
        if cfg.depths:
            model_config["depths"] = [int(d) for d in cfg.depths.split(",")]
        if not cfg.stem_pool:
            model_config["stem_pool"] = False
        if cfg.phase_weight > 0:
            model_config["phases"] = len(amibr.PHASES)
    net = build_classifier(**model_config).to(memory_format=torch.channels_last)
    if start is not None:
        net.load_state_dict(start["state_dict"])
    net = net.to(device)
    log(f"initialisation: {initialisation}")
    ema = runtime.ema_of(net, cfg.ema_decay)
    domain_head = None
    if cfg.adversarial > 0:
        domain_head = adversarial.DomainHead(net.atypical_head.in_features, len(amibr.DOMAINS)).to(device)
    opt = runtime.adamw(list(net.parameters()) + (list(domain_head.parameters()) if domain_head else []),
                        cfg.lr, cfg.weight_decay)
    steps_per_epoch = max(1, len(fit) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, warmup_steps))
    aug_config = dataclasses.replace(
        AUGMENTS[cfg.augment](), rrc_min_scale=cfg.rrc_min_scale)
    gen = aug.generator(cfg.seed, device)
    x_fit_device = torch.from_numpy(x_fit).to(device)
    target_fit = amibr.vote_fractions(fit) if cfg.target == "votes" else y_fit
    t_fit_device, h_fit_device, d_fit_device, phase_fit_device = (
        torch.from_numpy(a).to(device) for a in (target_fit, h_fit, d_fit, amibr.phase_targets(fit)))

    amp_dtype = PRECISIONS[cfg.precision]
    history: list[dict] = []
    best = {"val_auroc": -1.0}
    best_state = None
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        net.train()
        order = (balanced_indices(y_fit, steps_per_epoch * cfg.batch_size, rng) if cfg.sampling == "balanced"
                 else rng.permutation(len(y_fit))[: steps_per_epoch * cfg.batch_size])
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            batch = torch.from_numpy(idx).to(device)
            images = aug.augment(aug.to_float(x_fit_device[batch]), aug_config, gen)
            images, (y_batch, h_batch, phase_batch), _ = aug.random_mix(
                images, (t_fit_device[batch], h_fit_device[batch], phase_fit_device[batch]), cfg.mix, cfg.mix_alpha, rng)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
                logit, hard_logit, features = net.logits(images.contiguous(memory_format=torch.channels_last),
                                                         return_features=True)
                domain_logits = None
                if domain_head is not None:
                    domain_logits = domain_head(features, adversarial.ramp(step / max(1, total_steps)))
                phase_logits = net.phase_logits(features) if cfg.phase_weight > 0 else None
            loss = focal_loss(logit.float(), y_batch, cfg.focal_gamma)
            loss = loss + cfg.hardness_weight * F.binary_cross_entropy_with_logits(hard_logit.float(), h_batch)
            if phase_logits is not None:
                loss = loss + cfg.phase_weight * F.cross_entropy(phase_logits.float(), phase_batch)
            if domain_logits is not None:
                loss = loss + cfg.adversarial * adversarial.domain_loss(domain_logits.float(), d_fit_device[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update_parameters(net)
            losses.append(float(loss.detach()))
            step += 1
        p_val = ev.predict(ema.module, x_val, n_views=1)
        val_bce = float(F.binary_cross_entropy(torch.from_numpy(p_val).double().clamp(1e-7, 1 - 1e-7),
                                               torch.from_numpy(y_val).double()))
        thr, ba = ev.best_threshold(y_val, p_val)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_bce": val_bce,
               "val_auroc": ev.auroc(y_val, p_val), "val_best_ba": ba, "val_best_threshold": thr,
               "lr": float(sched.get_last_lr()[0]), "seconds": time.time() - t0}
        history.append(row)
        if row["val_auroc"] > best["val_auroc"]:
            best = row
            best_state = {k: v.detach().cpu().clone() for k, v in ema.module.state_dict().items()}
        log(f"epoch {epoch:3d}/{cfg.epochs}  loss {row['train_loss']:.4f}  val bce {val_bce:.4f}  "
            f"auroc {row['val_auroc']:.4f}  best-BA {ba:.4f}  ({row['seconds']:.0f} s)")
        elapsed_min = (time.time() - t_start) / 60
        if cfg.max_minutes is not None and elapsed_min + row["seconds"] / 60 > cfg.max_minutes and epoch < cfg.epochs:
            log(f"stopping after epoch {epoch}: the next one would overrun --max-minutes {cfg.max_minutes}")
            break

    # --- selection, threshold on validation, final report on test ---
    final = build_classifier(**model_config).to(memory_format=torch.channels_last)
    final.load_state_dict(best_state)
    final = final.to(device).eval()
    product_views = InferencePlan().classifier_views
    x_test, y_test = amibr.load_crops(test), amibr.labels(test)
    result = ev.evaluate_views(final, x_val, y_val, x_test, y_test, VIEWS)
    thresholds, val_metrics, test_metrics, probs = (result[k] for k in ("thresholds", "validation", "test", "probs"))
    threshold = thresholds[str(product_views)]
    metrics = {
        "selected_epoch": best["epoch"],
        "epochs_run": len(history),
        "product_views": product_views,
        "threshold": threshold,
        "threshold_rule": ev.THRESHOLD_RULE,
        "validation": val_metrics,
        "test": test_metrics,
        "test_is": evaluated_on,
        "splits": {"fit": amibr.summary(fit), "validation": amibr.summary(val), "test": amibr.summary(test)},
        "train_minutes": (time.time() - t_start) / 60,
    }
    for line in ev.views_summary(result):
        log(line)

    arch = model_config.pop("arch")
    checkpoint = {
        "arch": arch,
        "config": model_config,
        "state_dict": best_state,
        "threshold": threshold,
        "thresholds_by_views": thresholds,
        "metrics": metrics,
        "train_config": dataclasses.asdict(cfg),
        "history": history,
        "command": command,
        "data": f"AMi-Br ({runtime.portable_path(data_dir)}): published training split"
                + (f" without {amibr.DOMAINS[cfg.holdout_domain]}" if cfg.holdout_domain >= 0 else "")
                + f", slide-held-out validation; {evaluated_on} for the report only",
        "initialisation": initialisation,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    runtime.save_checkpoint(checkpoint, checkpoint_path)
    runtime.write_json(metrics, out_dir / "metrics.json")
    runtime.write_json(history, out_dir / "history.json")
    ev.plot_training_curves(history, out_dir / "curves.png")
    p_val, p_test = probs[product_views]
    ev.plot_threshold_sweep({f"validation, {product_views} views": (y_val, p_val),
                             f"test, {product_views} views": (y_test, p_test)}, threshold, out_dir / "threshold_sweep.png")
    log(f"wrote {checkpoint_path} and {out_dir}/{{metrics.json,history.json,curves.png,threshold_sweep.png}}")
    return checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    defaults = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/data/ami-br")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "training/runs/classifier")
    ap.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "training/checkpoints/classifier.pt")
    for f in dataclasses.fields(TrainConfig):
        kind = {"int | None": int, "float | None": float, "str | None": str}.get(str(f.type), eval(str(f.type)))  # noqa: S307
        ap.add_argument("--" + f.name.replace("_", "-"), type=kind, default=getattr(defaults, f.name))
    args = ap.parse_args(argv)
    try:
        cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python -m training.train_classifier " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        train(cfg, args.data, args.out, args.checkpoint, command)
    except amibr.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
