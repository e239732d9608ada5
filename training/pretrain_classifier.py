"""Pretrain the Track-2 classifier's trunk on the ICPR 2012 fields, for ``train_classifier --init``.

Issue #11 asks whether pretraining on every crop available pays. No downloaded weights exist here,
so this pretrains from scratch on crops the classifier never sees in its own training: the ICPR
2012 fields (both scanners, all five slides), 128 px (the classifier's input) around every stage-1
candidate (score >= ``train_verifier.VERIFY_FLOOR``), every restored scanner-A mitosis and random
points (the verifier's pool, ``train_verifier.load_pool``, without its AMi-Br and MITOS-ATYPIA-14
crops). Leaving AMi-Br out keeps one pretrained trunk valid for every leave-one-domain-out fold and
for the in-domain run: no held-out crop, labelled or not, reaches it. (MITOS-ATYPIA-14's 50 px crops
would be mostly mirrored padding at 128 px.)

Two tasks (``--task``):

- ``simclr``: self-supervised contrastive learning (Chen et al. 2020, NT-Xent): two augmented views
  of each crop (independent +-4 px windows and dihedral symmetry, random resized crops, the wide stain
  / colour / focus augmentation) are pulled together, the batch's other crops pushed apart, through a
  two-layer projection head that is discarded afterwards. No labels.
- ``mitosis``: supervised mitosis against look-alike (balanced batches; the sources weighted as the
  verifier samples them) through a separate linear head, also discarded.

The saved checkpoint is a classifier checkpoint (``arch``, ``config``, ``state_dict``) of the shipped
layout (ResNet-18, width 32, the phase head) whose atypical, hardness and phase heads are left at
their random initialisation: fine-tuning (``train_classifier --init``) starts from the trunk only.

    python -m training.pretrain_classifier --task simclr --minutes 30 --out training/runs/pretrain/simclr
    python -m training.classifier_lodo run --out training/runs/lodo/<recipe> -- --init \
        training/runs/pretrain/simclr/classifier.pt --epochs 30 --precision bf16 --augment light --phase-weight 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from model.classifier import RESNET_ARCH, build_classifier  # noqa: E402
from training import augment as aug  # noqa: E402
from training import data as amibr  # noqa: E402
from training import real_fields as rf  # noqa: E402
from training import runtime  # noqa: E402
from training import train_verifier as tv  # noqa: E402
from training.train_classifier import PRECISIONS, TrainConfig, channel_stats, lr_factor  # noqa: E402

CROP = 128  # the classifier's input side
ICPR_SOURCES = ("icpr_pos", "cand_A", "cand_H", "rand_A")  # the pool's sources cut from the ICPR fields
TASKS = ("simclr", "mitosis")
DROPOUT = TrainConfig.dropout  # the classifier recipe's, which the fine-tuning keeps from this checkpoint


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy: row i of ``z1`` and of ``z2`` are two
    views of one sample (the positive pair); every other row of both is a negative. Mean over the
    2N anchors."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def icpr_crops(data: Path, cache: Path) -> dict:
    """The verifier's pool at the classifier's input size (+ jitter), ICPR sources only."""
    pool = tv.load_pool(data, cache, tv.VERIFY_FLOOR, tv.pool_size(CROP))
    keep = np.isin(pool["source"], ICPR_SOURCES)
    return {k: v[keep] for k, v in pool.items()}


def views(images: np.ndarray, config: aug.AugmentConfig, rng: np.random.Generator, g: torch.Generator) -> torch.Tensor:
    """One augmented N x 3 x 128 x 128 float view of N x S x S x 3 uint8 crops (S >= 128)."""
    return aug.augment(aug.to_float(torch.from_numpy(tv.random_window(images, CROP, rng))), config, g)


def pretrain(pool: dict, args, log=print) -> tuple[nn.Module, list[dict]]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    g = aug.generator(args.seed)
    mean, std = channel_stats(tv.centre_window(pool["images"][:: max(1, len(pool["images"]) // 2000)], CROP))
    net = build_classifier(RESNET_ARCH, width=args.width, dropout=DROPOUT, mean=list(mean), std=list(std),
                           phases=len(amibr.PHASES))
    features = net.atypical_head.in_features
    head = (nn.Sequential(nn.Linear(features, features), nn.ReLU(inplace=True), nn.Linear(features, 128))
            if args.task == "simclr" else nn.Linear(features, 1))
    trunk = [p for name, p in net.named_parameters() if not name.split(".")[0].endswith("_head")]
    opt = runtime.adamw(trunk + list(head.parameters()), args.lr, args.weight_decay)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps, warmup))
    config = aug.AugmentConfig.wide()
    if args.task == "simclr":
        config = dataclasses.replace(config, rrc_min_scale=args.rrc_min_scale)
    weights = {s: tv.SOURCE_WEIGHTS[s] for s in ICPR_SOURCES}
    allowed = np.ones(len(pool["source"]), bool)
    amp = PRECISIONS[args.precision]
    net.train()
    head.train()
    history, t0 = [], time.perf_counter()
    for step in range(args.steps):
        # augmentation in float32, outside autocast (as train_classifier does); the network under it
        if args.task == "simclr":
            idx = rng.choice(len(pool["images"]), size=args.batch_size, replace=False)
            crops = pool["images"][idx]
            images = torch.cat([views(crops, config, rng, g), views(crops, config, rng, g)])
        else:
            idx = tv.sample(pool, allowed, weights, args.batch_size, rng)
            images = views(pool["images"][idx], config, rng, g)
        with torch.autocast("cpu", dtype=amp, enabled=amp != torch.float32):
            out = head(net.features(images.contiguous(memory_format=torch.channels_last))).float()
        if args.task == "simclr":
            loss = nt_xent(out[: len(idx)], out[len(idx):], args.temperature)
        else:
            loss = F.binary_cross_entropy_with_logits(out.squeeze(1), torch.from_numpy(pool["label"][idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append({"step": step, "loss": float(loss.item()), "seconds": time.perf_counter() - t0})
        if step % 50 == 0 or step == args.steps - 1:
            log(f"step {step} loss {loss.item():.4f} {time.perf_counter() - t0:.0f} s")
        if args.minutes and time.perf_counter() - t0 > 60 * args.minutes:
            log(f"stopped at step {step}: --minutes {args.minutes} reached")
            break
    return net.eval(), history


def checkpoint_of(net: nn.Module, args, history: list[dict], crops: int, command: str) -> dict:
    """What ``train_classifier --init`` reads (``load_init``): arch, config, state_dict, metrics."""
    last = history[-1]
    return {
        "arch": RESNET_ARCH,
        "config": {"width": args.width, "dropout": DROPOUT, "mean": net.mean.flatten().tolist(),
                   "std": net.std.flatten().tolist(), "phases": len(amibr.PHASES)},
        "state_dict": net.state_dict(),
        "metrics": {"selected_epoch": f"last (step {last['step'] + 1} of {args.steps})", "loss": last["loss"]},
        "command": command,
        "initialisation": (f"pretrained from scratch by {args.task} on {crops} crops of the ICPR 2012 fields "
                           "(no AMi-Br crop; heads left at random initialisation)"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=TASKS, default="simclr")
    ap.add_argument("--data", type=Path, default=rf.DATA_DIR)
    ap.add_argument("--cache", type=Path, default=rf.CACHE_DIR)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3000, help="cosine schedule length (--minutes may stop earlier)")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this many minutes of training")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--rrc-min-scale", type=float, default=0.4)
    ap.add_argument("--precision", choices=tuple(PRECISIONS), default="bf16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    pool = icpr_crops(args.data, args.cache)
    print(f"{len(pool['images'])} ICPR crops ({int(pool['label'].sum())} mitoses)", flush=True)
    net, history = pretrain(pool, args)
    last = history[-1]
    command = "python -m training.pretrain_classifier " + shlex.join(sys.argv[1:] if argv is None else argv)
    checkpoint = checkpoint_of(net, args, history, len(pool["images"]), command)
    runtime.save_checkpoint(checkpoint, args.out / "classifier.pt")
    runtime.write_json({"task": args.task, "crops": len(pool["images"]), "history": history}, args.out / "history.json")
    print(f"wrote {args.out / 'classifier.pt'} (loss {last['loss']:.4f} at step {last['step'] + 1}, "
          f"{last['seconds'] / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
