"""A cohort of slides on Dask distributed: local worker processes by default, or the workers of
a running Dask cluster given its scheduler's address.

Each slide is one task (``task.run_slide``): the slide mode into ``<output>/slides/<id>/``,
resumable through its journal. A slide whose folder already holds a complete result of the same
slide, weights and settings is not submitted again ("earlier run"); a failed one has no complete
result, so rerunning the command retries exactly the failed (and the unfinished) slides. The
table is written once every slide has an answer, from this run or an earlier one.

Local workers: one slide at a time each. With GPUs (``nvidia-smi -L``) and a device other than
``cpu``, one worker per GPU, each seeing only its own (``CUDA_VISIBLE_DEVICES``); on the CPU the
cores are split between the workers (CPU affinity), so that ONNX Runtime's thread pools do not
fight over the same cores.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError
from ..log import log, warn
from ..manifest import Manifest
from ..outputs import check_writable
from ..settings import Settings
from ..slide.export import SUMMARY_JSON
from ..slide.journal import JOURNAL_FILE, slide_fingerprint
from ..slide.run import SlideOptions, run_settings
from .slides import CohortSlide
from .table import write_tables
from .task import failed_row, row_from_summary, run_slide, slide_folder

LOCK_FILE = ".cohort.lock"


def gpu_ids() -> list[str]:
    """GPUs this machine offers: CUDA_VISIBLE_DEVICES when set, else ``nvidia-smi -L``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i in range(sum(line.startswith("GPU ") for line in out.splitlines()))]


def default_workers(device: str) -> tuple[int, list[str]]:
    """(number of local workers, GPU ids to hand out): one worker per GPU where GPUs are used,
    else one worker per CPU core (each pinned to its core), as long as each has 1 GiB of memory
    (a CPU slide run peaks at about 0.6 GiB)."""
    gpus = gpu_ids() if device != "cpu" else []
    if gpus:
        return len(gpus), gpus
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(len(os.sched_getaffinity(0)), int(memory_gib))), []


def finished_row(slide: CohortSlide, output: Path, settings: Settings, options: SlideOptions,
                 manifest: Manifest) -> dict | None:
    """The row of a slide that an earlier run finished with the same slide file, weights, settings
    and options; None when it must (still) be run."""
    folder = slide_folder(output, slide)
    try:
        summary = json.loads((folder / SUMMARY_JSON).read_text())
        with open(folder / JOURNAL_FILE, "rb") as f:
            header = json.loads(f.readline())
        same = (
            summary.get("complete") is True
            and header.get("weights") == manifest.weights_identity()
            and header["slide"]["fingerprint"] == slide_fingerprint(slide.path)
            and abs(summary["hotspot"]["area_mm2"] - options.hotspot_area_mm2) < 1e-9
            and header.get("settings") == run_settings(manifest, settings)
            and all(json.loads(json.dumps(asdict(options).get(k))) == v for k, v in header["options"].items())
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not same:
        return None
    return {**row_from_summary(slide, output, summary), "run": "earlier run"}


def run_cohort(slides: Sequence[CohortSlide], output: Path | str, settings: Settings | None = None,
               options: SlideOptions | None = None, workers: int | None = None, scheduler: str | None = None,
               weights_given: bool = True, task=None) -> list[dict]:
    """Run every slide not finished yet, write cohort.csv, cohort.parquet and cohort.png into
    ``output`` and return the rows (slide list order).

    ``scheduler``: address of a running Dask scheduler (``tcp://host:8786``); its workers must
    see the slides and ``output`` at the same paths. Without it, ``workers`` local worker
    processes (default: one per GPU, else one per CPU core). ``weights_given=False`` lets each
    worker use its own installed weights (checked against the client's by sha256). ``task``
    replaces the per-slide function (tests: a worker that dies)."""
    settings = settings or Settings.from_env()
    options = options or SlideOptions(progress=False)
    output = Path(output).resolve()
    manifest = Manifest.load(settings.weights_dir)  # bad weights: one error before any cluster starts
    for entry in (manifest.detector, manifest.classifier, manifest.verifier):
        if entry is not None:
            manifest.verified_path(settings.weights_dir, entry)
    weights = manifest.weights_identity()
    check_writable(output)
    with _locked(output):
        rows: dict[str, dict] = {}
        todo = []
        for slide in slides:
            row = None if options.restart else finished_row(slide, output, settings, options, manifest)
            if row is not None:
                rows[slide.id] = row
            else:
                todo.append(slide)
        if rows:
            log(f"cohort: {len(rows)} of {len(slides)} slides finished by an earlier run (kept)")
        if todo:
            _run_on_dask(todo, output, settings, options, workers, scheduler, weights, weights_given, rows,
                         task or _run_checked)
        ordered = [rows[s.id] for s in slides]
        files = write_tables(output, ordered)
    failed = [r for r in ordered if r["status"] != "done"]
    log(f"cohort: {len(ordered) - len(failed)} done, {len(failed)} failed; wrote {', '.join(f.name for f in files)} "
        f"in {output}")
    if failed:
        warn(f"{len(failed)} slide(s) failed ({', '.join(r['slide'] for r in failed[:5])}"
             f"{', ...' if len(failed) > 5 else ''}): see 'reason' in cohort.csv; "
             "run the same command again to retry only them")
    return ordered


def _run_on_dask(todo: Sequence[CohortSlide], output: Path, settings: Settings, options: SlideOptions,
                 workers: int | None, scheduler: str | None, weights: dict[str, str | None], weights_given: bool,
                 rows: dict[str, dict], task) -> None:
    try:
        import dask
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise InputError(f"the cohort command needs Dask distributed ({exc.name} is missing): "
                         "pip install 'dask[distributed]'") from None
    start = time.perf_counter()
    cluster = None
    # local scheduler: a slide that kills its worker is tried on one other worker, then failed; each
    # worker holds one task at a time (worker-saturation 1.0 with one thread), so a worker that dies
    # takes no queued, innocent slide with it
    local_config = {"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set(local_config):
        if scheduler:
            try:
                client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
            n = len(client.scheduler_info().get("workers", {}))
            log(f"cohort: {len(todo)} slides on the Dask cluster at {scheduler} ({n} workers now)")
        else:
            n, gpus = default_workers(settings.device)
            said = "" if workers else " (default: " + ("one per GPU)" if gpus else "one per CPU core)")
            n = min(workers or n, len(todo))
            from .pinning import PinWorker

            cores = sorted(os.sched_getaffinity(0))
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
            client.register_plugin(PinWorker(gpus, cores, n), name="mitosis-pin-worker")
            where = f"GPUs {','.join(gpus[:n])}" if gpus else f"{len(cores)} CPU cores"
            log(f"cohort: {len(todo)} slides on {n} local worker processes{said}, {where}")
    try:
        ship = settings if weights_given else settings.model_copy(update={"weights_dir": None})
        futures = {
            client.submit(task, slide, str(output), ship, options, weights, key=f"slide-{i}-{slide.id}",
                          pure=False): slide
            for i, slide in enumerate(todo)
        }
        for done, future in enumerate(as_completed(futures), start=1):
            slide = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # noqa: BLE001 - worker died, or could not run the task
                row = failed_row(slide, output, f"the task failed on its worker ({type(exc).__name__}: {exc})")
                row["run"] = "this run"
            rows[slide.id] = row
            log(f"[{done}/{len(todo)}] {_describe(row)}")
    except KeyboardInterrupt:
        log(f"interrupted: finished slides are kept in {output / 'slides'}; run the same command again to continue")
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    log(f"cohort: {len(todo)} slides in {time.perf_counter() - start:.1f} s")


def _run_checked(slide: CohortSlide, output: str, settings: Settings, options: SlideOptions,
                 weights: dict[str, str | None]) -> dict:
    """``run_slide`` on a worker, with the worker's own weights when none were given, refused
    when they are not the client's."""
    if settings.weights_dir is None:
        from ..settings import default_weights_dir

        settings = settings.model_copy(update={"weights_dir": default_weights_dir()})
    try:
        manifest = Manifest.load(settings.weights_dir)
        found = manifest.weights_identity()
    except InputError as exc:
        return {**failed_row(slide, Path(output), f"worker weights: {exc}"), "run": "this run"}
    if found != weights:
        return {**failed_row(slide, Path(output), f"the worker's weights in {settings.weights_dir} are not the "
                             "client's (other sha256); install the same version everywhere or give --weights"),
                "run": "this run"}
    return run_slide(slide, output, settings, options)


def _describe(row: dict) -> str:
    if row["status"] != "done":
        return f"{row['slide']}: failed: {row['reason']}"
    density = row.get("mitotic_count_per_mm2")
    density = "n/a" if density is None else f"{density:.3g}/mm^2"
    return (f"{row['slide']}: done, {row['mitotic_figures']} mitotic figures ({density}), hotspot "
            f"{row['hotspot_count']}, {row.get('wall_seconds') or 0:.1f} s on worker {row.get('worker')}")


class _locked:
    """Holds ``<output>/.cohort.lock``: two cohort runs never share an output folder."""

    def __init__(self, output: Path):
        self.path = output / LOCK_FILE

    def __enter__(self):
        self.file = open(self.path, "a")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise InputError(f"another cohort run is using {self.path.parent}") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
        self.file.close()
