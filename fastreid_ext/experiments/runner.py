"""The experiment runner: named comparisons (:mod:`.comparisons`) for several seeds, each FastReID run in a child
process, resumable, with a table and a plot (:mod:`.report`). ``tools/run_experiment.py`` is its command line.

Layout under ``--out`` (default ``logs/experiments``):

* ``stages/<config>_s<seed>_<hash>/``: one FastReID run (``OUTPUT_DIR``): FastReID's files, ``stdout.txt`` (the
  child's output), ``stage_result.json`` once finished (its command, metrics, measurements, seconds). The hash covers
  the config, the overrides, the seed and the inputs (the hashes of the stages whose weights it takes), not the
  device, threads or loader workers: identical runs of two arms or two comparisons are run once.
* ``<comparison>/<arm>/seed<seed>/result.json``: an arm's numbers for one seed (its last stage's metrics plus
  included stages' under a prefix), written once all its stages finished; a re-run skips it.
* ``<comparison>/report.md``, ``report.png``, ``results.json``: :func:`fastreid_ext.experiments.report.write_report`.

Each stage runs ``tools/train_net.py`` in a child process (``OMP_NUM_THREADS`` per child, ``MODEL.DEVICE`` from
``--device``), then its measurements (``python -m fastreid_ext.experiments.measure``). The metrics are FastReID's
final evaluation tables (``Evaluation results in csv format``, one per test set, keyed ``<test set>/<metric>``),
read from the run's output: FastReID's ``metrics.json`` misses the last evaluation when it falls on the last
iteration (its JSONWriter skips scalars of an iteration it already wrote). A failed child is reported and its
dependants skipped; the other runs go on. An interrupted run (``OUTPUT_DIR`` without ``stage_result.json``) starts
again (``--overwrite``), or continues from its last checkpoint with ``resume=True`` (``--resume``).

The SynthPed datasets every pending run needs are generated once, in this process, before any child starts
(parallel children would race to create them); so are the segmenter masks of a stage that asks for them
(``Stage.masks``, e.g. ``mediapipe``): written to ``<datasets' parent>/masks_<backend>/<dataset>/`` (SynthPed's exact
``masks/`` untouched), passed to the run as ``DATASETS.ANNOTATIONS.MASK_ROOTS`` with ``ON_MISSING empty`` (images
without a person found are used unmasked, logged); the mask source is part of the stage's hash.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .comparisons import SMOKE_OPTS, Comparison, Stage, get_comparison

logger = logging.getLogger(__name__)

#: the repository root (configs, ``tools/train_net.py``; the children's working directory): the current directory
#: unless :func:`set_root` (``tools/run_experiment.py`` sets its own checkout)
ROOT = Path.cwd()
TRAIN_NET = "tools/train_net.py"


def set_root(path) -> Path:
    """Use ``path`` as the repository root (config paths, ``tools/train_net.py``, the children's cwd)."""
    global ROOT
    ROOT = Path(path).resolve()
    if not (ROOT / TRAIN_NET).is_file():
        raise FileNotFoundError(f"{ROOT / TRAIN_NET} not found: the runner needs a checkout of the repository")
    return ROOT

__all__ = ["set_root", "StageTask", "MissingConfigs", "plan", "run_experiments", "parse_eval_tables", "missing_configs",
           "execute_stage", "slug", "segmenter_mask_root", "segmenter_mask_roots", "prepare_segmenter_masks"]


class MissingConfigs(FileNotFoundError):
    """Config files a comparison needs do not exist (raised before anything runs)."""


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"


@dataclass
class StageTask:
    """One (stage, seed) run: its command and where it runs."""

    stage: Stage
    seed: int
    key: str                           # hash of everything that defines the run (not device / threads / workers)
    out_dir: Path
    argv: List[str]                    # tools/train_net.py argv, without the interpreter
    deps: List[str] = field(default_factory=list)   # keys of the stages whose weights it takes
    measure_opts: List[str] = field(default_factory=list)

    @property
    def result_file(self) -> Path:
        return self.out_dir / "stage_result.json"

    @property
    def command(self) -> str:
        return "python " + " ".join(shlex.quote(a) for a in self.argv)

    def done(self) -> bool:
        return self.result_file.is_file()


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def config_digest(config: str) -> str:
    """Hash of a config file's text and of its ``_BASE_`` chain (so that an edited config is a new run)."""
    h, seen = hashlib.sha1(), set()
    path = ROOT / config
    while path.is_file() and path not in seen:
        seen.add(path)
        text = path.read_text()
        h.update(text.encode())
        m = re.search(r"^_BASE_:\s*['\"]?([^'\"\s#]+)", text, re.M)
        if not m:
            break
        path = (path.parent / m.group(1)).resolve()
    return h.hexdigest()[:12]


def missing_configs(comps: Sequence[Comparison], arms: Optional[Sequence[str]] = None) -> List[str]:
    """The config files (relative to the repository root) the comparisons' stages name that do not exist."""
    missing = []
    for comp in comps:
        for s in comp.stage_order(arms):
            cfg = comp.stages[s].config
            if not (ROOT / cfg).is_file() and cfg not in missing:
                missing.append(cfg)
    return missing


def plan(comp: Comparison, seeds: Sequence[int], out: Path, *, budget: str = "default",
         overrides: Sequence[str] = (), device: str = "cpu", workers: Optional[int] = None,
         arms: Optional[Sequence[str]] = None) -> Dict[str, Dict]:
    """The tasks of ``comp``: ``{"stages": {key: StageTask}, "arms": [(arm, seed, [stage keys], {stage: key})]}``.

    A stage's command: its config, its overrides, the budget (``smoke``: :data:`SMOKE_OPTS`), ``overrides``
    (for every stage), ``SEED``, its seed keys, the weights of earlier stages, ``OUTPUT_DIR``, then ``MODEL.DEVICE``
    and ``DATALOADER.NUM_WORKERS`` (not part of the hash)."""
    if budget not in ("default", "smoke"):
        raise ValueError(f"unknown budget {budget!r} (default, smoke)")
    out = Path(out)
    stages: Dict[str, StageTask] = {}
    by_seed: Dict[int, Dict[str, str]] = {}
    for seed in seeds:
        keys: Dict[str, str] = {}
        for name in comp.stage_order(arms):
            st = comp.stages[name]
            run_seed = int(seed) + st.seed_offset
            opts = list(st.opts) + (list(SMOKE_OPTS) if budget == "smoke" else []) + list(overrides)
            opts += ["SEED", str(run_seed)]
            for k in st.seed_keys:
                opts += [k, str(run_seed)]
            if st.masks:  # images the segmenter found no person in are used unmasked (logged by the loader)
                opts += ["DATASETS.ANNOTATIONS.ON_MISSING", "empty"]
            deps = [keys[d] for _, d in st.weights]
            ident = {"config": st.config, "digest": config_digest(st.config), "opts": opts, "eval_only": st.eval_only, "measure": list(st.measure),
                     "weights": [[k, keys[d]] for k, d in st.weights]}
            if st.masks:  # only then: the other stages keep their keys (and their finished runs)
                ident["masks"] = st.masks
            key = _hash(ident)
            d = out / "stages" / f"{Path(st.config).stem}_s{run_seed}_{key}"
            if st.masks:  # where the masks are (not in the hash, as OUTPUT_DIR): the datasets' segmenter roots
                roots = [_rel(Path(r)) for r in segmenter_mask_roots(_stage_cfg(st.config, opts), st.masks)]
                opts += ["DATASETS.ANNOTATIONS.MASK_ROOTS", json.dumps(roots)]
            for k, dep in st.weights:
                opts += [k, _rel(stages[keys[dep]].out_dir / "model_final.pth")]
            opts += ["OUTPUT_DIR", _rel(d)]  # relative to the repository root (the children's cwd) when inside
            measure_opts = list(opts) + ["MODEL.DEVICE", device]
            opts += ["MODEL.DEVICE", device]
            if workers is not None:
                opts += ["DATALOADER.NUM_WORKERS", str(workers)]
            argv = [TRAIN_NET, "--config-file", st.config] + (["--eval-only"] if st.eval_only else []) + opts
            keys[name] = key
            if key not in stages:
                stages[key] = StageTask(st, run_seed, key, d, argv, deps, measure_opts)
        by_seed[int(seed)] = keys
    arm_list = []
    for seed in seeds:
        keys = by_seed[int(seed)]
        for arm in comp.arms:
            if arms is not None and arm.name not in arms:
                continue
            needed = list(arm.stages) + [s for s, _ in arm.include]
            arm_list.append((arm, int(seed), [keys[s] for s in needed], {s: keys[s] for s in needed}))
    return {"stages": stages, "arms": arm_list}


def arm_result_path(out: Path, comp: Comparison, arm_name: str, seed: int) -> Path:
    return Path(out) / comp.name / slug(arm_name) / f"seed{seed}" / "result.json"


# ---------------------------------------------------------------------------------------------------- parsing
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_eval_tables(text: str) -> Dict[str, float]:
    """FastReID's final evaluation tables in a run's output (``print_csv_format``: a pipe table per test set after
    ``Evaluation results in csv format``), flattened to ``{"<test set>/<metric>": value}``; the last table of each
    test set wins (earlier ones are intermediate evaluations)."""
    lines = _ANSI.sub("", text).splitlines()
    found: Dict[str, Dict[str, float]] = {}
    for i, line in enumerate(lines):
        if "Evaluation results in csv format" not in line:
            continue
        rows = [x for x in lines[i + 1:i + 6] if x.strip().startswith("|")]
        if len(rows) < 3:
            continue
        head = [c.strip() for c in rows[0].strip().strip("|").split("|")]
        vals = [c.strip() for c in rows[2].strip().strip("|").split("|")]
        if not head or head[0] != "Dataset" or len(vals) != len(head):
            continue
        res = {}
        for k, v in zip(head[1:], vals[1:]):
            try:
                res[k] = float(v)
            except ValueError:
                pass
        found[vals[0]] = res
    return {f"{ds}/{k}": v for ds, r in found.items() for k, v in r.items()}


# ---------------------------------------------------------------------------------------------------- execution
def _child(argv: List[str], log: Path, env: dict, stop: threading.Event) -> int:
    """Run ``argv`` (cwd: the repository root) with its output in ``log``; killed (process group) when ``stop``
    is set. Returns the exit code (-15 when stopped)."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(shlex.quote(a) for a in argv)}\n")
        f.flush()
        p = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while True:
            try:
                return p.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                        p.wait(timeout=20)
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        try:
                            os.killpg(p.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    p.wait()
                    return -15


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def execute_stage(task: StageTask, *, threads: int = 1, resume: bool = False,
                  stop: Optional[threading.Event] = None) -> Dict:
    """Run one stage in child processes: ``tools/train_net.py`` then its measurements. Returns the stage result
    (also written to ``stage_result.json``); raises ``RuntimeError`` (with the output's tail) when a child fails."""
    stop = stop or threading.Event()
    d = task.out_dir
    d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads and threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    argv = list(task.argv)
    if not task.stage.eval_only and (d / "last_checkpoint").is_file():
        argv.insert(1, "--resume" if resume else "--overwrite")
    log = d / "stdout.txt"
    if log.exists():
        log.replace(d / "stdout.prev.txt")
    t0 = time.time()
    rc = _child([sys.executable] + argv, log, env, stop)
    if rc != 0:
        raise RuntimeError(f"exit code {rc}: {task.command}\n{_tail(log)}")
    metrics = parse_eval_tables(log.read_text(errors="replace"))
    if not metrics:
        raise RuntimeError(f"no evaluation table in {log}: {task.command}\n{_tail(log)}")
    seconds = time.time() - t0
    measures: Dict[str, float] = {}
    weights = str(d / "model_final.pth")
    if task.stage.eval_only and "MODEL.WEIGHTS" in argv:  # an evaluation measures the weights it evaluated
        weights = argv[len(argv) - 1 - argv[::-1].index("MODEL.WEIGHTS") + 1]
    for name in task.stage.measure:
        mfile = d / f"measure_{name}.json"
        margv = [sys.executable, "-m", "fastreid_ext.experiments.measure", "--config-file", task.stage.config,
                 "--weights", weights, "--out", str(mfile), name] + task.measure_opts
        rc = _child(margv, d / f"measure_{name}.txt", env, stop)
        if rc != 0:
            raise RuntimeError(f"measurement {name} failed (exit code {rc}): {d / f'measure_{name}.txt'}\n"
                               f"{_tail(d / f'measure_{name}.txt')}")
        measures.update(json.loads(mfile.read_text()))
    res = {"stage": task.stage.name, "seed": task.seed, "key": task.key, "command": task.command,
           "metrics": metrics, "measures": measures, "train_seconds": seconds,
           "seconds": time.time() - t0, "threads": threads}
    _write_json(task.result_file, res)
    return res


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _stage_cfg(config: str, pairs: Sequence[str]):
    """The config of a run: ``config`` (relative to the repository root) with the ``KEY VALUE`` ``pairs``."""
    import fastreid_ext

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(str(ROOT / config))
    cfg.merge_from_list([a for a in pairs if a != "--eval-only"])
    return cfg


def synthped_dirs(cfg) -> List[tuple]:
    """``(name, folder, is_train)`` of the SynthPed datasets of ``cfg`` (``DATASETS.NAMES`` then ``DATASETS.TESTS``,
    with its ``DATASETS.SYNTHPED`` options; folders absolute, under the datasets root as the children see it)."""
    from fastreid.data.datasets import DATASET_REGISTRY

    from ..data.build import datasets_root
    from ..data.datasets import _SynthPed, synthped_dir, synthped_options

    root = datasets_root()
    if not os.path.isabs(root):
        root = str(ROOT / root)  # the children run in the repository root
    opts = synthped_options(cfg)
    found = []
    for names, is_train in ((cfg.DATASETS.NAMES, True), (cfg.DATASETS.TESTS, False)):
        for name in names:
            try:
                cls = DATASET_REGISTRY.get(name)
            except KeyError:
                continue
            if isinstance(cls, type) and issubclass(cls, _SynthPed):
                found.append((name, synthped_dir(root, cls.domain, opts), is_train))
    return found


def segmenter_mask_root(dataset_dir: str, backend: str) -> str:
    """The mask root of ``backend``'s masks for the datasets beside ``dataset_dir``: ``<its parent>/masks_<backend>``,
    holding ``<dataset folder name>/<rel>.png`` for each (never the dataset's own ``masks/``). As
    ``DATASETS.ANNOTATIONS.MASK_ROOTS`` the image ``<parent>/<dataset>/<rel>`` maps to it through the parent, so
    datasets with the same relative file names (the SynthPed domains) never take each other's masks."""
    return os.path.join(os.path.dirname(os.path.abspath(dataset_dir)), f"masks_{backend}")


def segmenter_mask_roots(cfg, backend: str) -> List[str]:
    """The ``DATASETS.ANNOTATIONS.MASK_ROOTS`` of a run with ``backend``'s masks for its SynthPed datasets."""
    dirs = synthped_dirs(cfg)
    if not dirs:
        raise ValueError(f"segmenter masks ({backend}) are made for SynthPed datasets only; the run names "
                         f"{list(cfg.DATASETS.NAMES)} / {list(cfg.DATASETS.TESTS)}")
    return list(dict.fromkeys(segmenter_mask_root(d, backend) for _, d, _ in dirs))


SEGMENTER_DONE = "_done.json"
#: the image folders of a SynthPed dataset (Market-1501 layout) whose masks a run needs: a training set's train
#: split, a test set's query + gallery; "all": every image
SEGMENTER_PARTS = {"all": (), "train": ("bounding_box_train",), "test": ("query", "bounding_box_test")}


def prepare_segmenter_masks(dataset_dir: str, backend: str, part: str = "all") -> Dict:
    """``backend``'s masks of every image of ``dataset_dir`` in ``segmenter_mask_root(dataset_dir)/<dataset>``
    (:func:`fastreid_ext.segmentation.extract_masks`: resumable, masks already written are kept), once: a finished
    folder holds ``_done.json`` (its numbers) and is not redone. Also measures the masks against the dataset's own
    ``masks/`` (SynthPed's exact masks): mean IoU, fraction of images without a person. Returns the numbers."""
    from ..data.annotations import MASKS_DIRNAME
    from ..segmentation import build_segmenter, extract_masks, list_images, mask_path_for
    from ..segmentation.quality import mask_agreement

    out = Path(segmenter_mask_root(dataset_dir, backend)) / Path(dataset_dir).name
    if part not in SEGMENTER_PARTS:
        raise ValueError(f"part must be one of {sorted(SEGMENTER_PARTS)}, got {part!r}")
    done = out / (SEGMENTER_DONE if part == "all" else f"_done_{part}.json")
    if done.is_file():
        return json.loads(done.read_text())
    images = list_images(dataset_dir)
    if SEGMENTER_PARTS[part]:  # only the folders the run reads (mediapipe costs 0.2-0.3 s per image on one core)
        images = [p for p in images if Path(p).relative_to(dataset_dir).parts[0] in SEGMENTER_PARTS[part]]
    with build_segmenter(backend) as seg:
        stats = extract_masks(images, dataset_dir, seg, out_root=out, progress=False)
    exact = Path(dataset_dir) / MASKS_DIRNAME
    q = mask_agreement([str(p) for p in images], lambda p: mask_path_for(p, dataset_dir, out),
                       lambda p: mask_path_for(p, dataset_dir, exact))
    computed = stats.written + len(stats.no_person)
    info = {"backend": backend, "dataset": str(dataset_dir), "part": part, "masks": str(out), "images": len(images),
            "no_person": len(stats.no_person), "unreadable": len(stats.unreadable), "iou_exact": q["iou"],
            "no_person_fraction": q["no_mask"], "seconds": stats.seconds,
            "seconds_per_image": stats.seconds / computed if computed else None}
    _write_json(done, info)
    print(f"[runner] {backend} masks of {dataset_dir} -> {out}: {stats}; against the exact masks: mean IoU "
          f"{q['iou']:.3f}, no person found in {info['no_person']} of {len(images)} images"
          + (f" ({info['seconds_per_image']:.3f} s per image)" if computed else ""), flush=True)
    return info


def prepare_datasets(tasks: Sequence[StageTask], workers: int = 1) -> List[str]:
    """Generate the SynthPed datasets (``DATASETS.NAMES`` + ``DATASETS.TESTS`` with their ``DATASETS.SYNTHPED``
    options) the tasks need and that do not exist yet, one after the other with ``workers`` processes each; other
    datasets are left to the runs. For a stage with segmenter masks (``Stage.masks``), the segmenter's masks of its
    SynthPed datasets are extracted next (:func:`prepare_segmenter_masks`, once). Returns the folders generated."""
    from fastreid.data.datasets import DATASET_REGISTRY

    from ..data.datasets import synthped_options
    from ..data.synthped import generate_dataset

    made, seen = [], set()
    for t in tasks:
        cfg = _stage_cfg(t.stage.config, t.argv[t.argv.index(t.stage.config) + 1:])
        opts = synthped_options(cfg)
        for name, d, is_train in synthped_dirs(cfg):
            if d not in seen and not os.path.isfile(os.path.join(d, "meta.json")):
                t0 = time.time()
                generate_dataset(os.path.dirname(d), domain=DATASET_REGISTRY.get(name).domain, seed=opts["seed"],
                                 num_train_ids=opts["num_train_ids"], num_test_ids=opts["num_test_ids"],
                                 preset=opts["preset"], vertical_misalign=opts["vertical_misalign"],
                                 progress=False, workers=max(1, int(workers)))
                print(f"[runner] generated {d} in {time.time() - t0:.0f} s ({workers} worker(s))", flush=True)
                made.append(d)
            seen.add(d)
            # the segmenter's masks of the splits the run reads, beside the datasets (prepare_segmenter_masks)
            part = "train" if is_train else "test"
            if t.stage.masks and (d, t.stage.masks, part) not in seen:
                seen.add((d, t.stage.masks, part))
                prepare_segmenter_masks(d, t.stage.masks, part)
    return made


def _arm_record(comp: Comparison, arm, seed: int, stage_keys: Dict[str, str], stage_results: Dict[str, Dict],
                sig: str) -> Dict:
    last = stage_results[stage_keys[arm.stages[-1]]]
    metrics = dict(last["metrics"])
    metrics.update(last.get("measures", {}))
    for s, prefix in arm.include:
        r = stage_results[stage_keys[s]]
        metrics.update({prefix + k: v for k, v in {**r["metrics"], **r.get("measures", {})}.items()})
    stages = []
    for s in dict.fromkeys(list(arm.stages) + [s for s, _ in arm.include]):
        r = stage_results[stage_keys[s]]
        stages.append({"stage": s, "command": r["command"], "seconds": r.get("seconds"), "key": r.get("key")})
    return {"comparison": comp.name, "arm": arm.name, "seed": seed, "signature": sig, "metrics": metrics,
            "seconds": sum(x["seconds"] or 0 for x in stages), "stages": stages}


def run_experiments(names: Sequence[str], seeds: Sequence[int], out="logs/experiments", *, device: str = "cpu",
                    jobs: int = 1, threads: Optional[int] = None, workers: Optional[int] = None,
                    budget: str = "default", overrides: Sequence[str] = (), arms: Optional[Sequence[str]] = None,
                    resume: bool = False, dry_run: bool = False, time_limit: float = 0.0,
                    gen_workers: Optional[int] = None, command: str = "",
                    executor: Optional[Callable[[StageTask], Dict]] = None, prepare: bool = True,
                    report: bool = True, skip_missing: bool = False, root=None) -> Dict:
    """Run the comparisons ``names`` for ``seeds``; returns ``{"records": {comparison: [arm records]}, "failed":
    {command: why}, "timed_out": bool}`` (records: the finished arms, earlier ones included).

    ``jobs`` children at a time (each with ``threads`` torch threads; default: the CPU count // jobs); ``time_limit``
    (seconds, 0: none): no run starts after it and running children are stopped, the report shows what finished (a
    re-run continues). ``root``: the repository root (default: as set, the current directory).
    ``executor(task) -> stage result`` replaces the child processes (tests). Raises
    :class:`MissingConfigs` before anything runs when a config file is missing (``skip_missing``: leave such a
    comparison out, with a message, and run the others)."""
    t_start = time.time()
    if root is not None:
        set_root(root)
    out = Path(out)
    if not out.is_absolute():
        out = ROOT / out
    comps = [get_comparison(n) for n in names]
    if skip_missing:
        for c in list(comps):
            miss = missing_configs([c], arms)
            if miss:
                print(f"[runner] SKIPPING comparison {c.name}: missing config file(s) {', '.join(miss)}", flush=True)
                comps.remove(c)
    missing = missing_configs(comps, arms)
    if missing:
        raise MissingConfigs("missing config file(s) (relative to the repository root " f"{ROOT}):\n  "
                             + "\n  ".join(missing) + "\nnothing was run.")
    jobs = max(1, int(jobs))
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    plans = {c.name: plan(c, seeds, out, budget=budget, overrides=overrides, device=device, workers=workers,
                          arms=arms) for c in comps}
    all_stages: Dict[str, StageTask] = {}
    for p in plans.values():
        all_stages.update(p["stages"])
    # which arms are finished, which stages they still need
    pending_arms, records = [], {c.name: [] for c in comps}
    needed: Dict[str, StageTask] = {}
    for comp in comps:
        for arm, seed, keys, by_name in plans[comp.name]["arms"]:
            sig = _hash(sorted(keys))
            path = arm_result_path(out, comp, arm.name, seed)
            if path.is_file():
                rec = json.loads(path.read_text())
                if rec.get("signature", sig) == sig:
                    print(f"[runner] {comp.name} / {arm.name} / seed {seed}: finished earlier ({_rel(path)})",
                          flush=True)
                    records[comp.name].append(rec)
                    continue
                print(f"[runner] WARNING {_rel(path)} came from other runs (a config file, the overrides or the "
                      f"budget changed since): running this arm again and replacing it", flush=True)
            pending_arms.append((comp, arm, seed, keys, by_name, sig, path))
            stack = list(keys)
            while stack:
                k = stack.pop()
                if k not in needed:
                    needed[k] = all_stages[k]
                    stack.extend(all_stages[k].deps)
    todo = {k: t for k, t in needed.items() if not t.done()}
    order = sorted(todo, key=lambda k: (todo[k].seed - todo[k].stage.seed_offset, list(all_stages).index(k)))
    if dry_run:
        for k in order:
            t = todo[k]
            print(f"[dry-run] {t.stage.name} seed {t.seed}{' (after ' + ', '.join(all_stages[d].stage.name for d in t.deps) + ')' if t.deps else ''}:\n  {t.command}"
                  + "".join(f"\n  + measure {m}" for m in t.stage.measure), flush=True)
        print(f"[dry-run] {len(order)} run(s) to do, {len(needed) - len(todo)} finished, "
              f"{sum(len(r) for r in records.values())} arm result(s) finished", flush=True)
        return {"records": records, "failed": {}, "timed_out": False, "todo": [todo[k] for k in order]}
    if todo and prepare and executor is None:
        prepare_datasets([todo[k] for k in order], gen_workers or max(1, os.cpu_count() or 1))

    results: Dict[str, Dict] = {k: json.loads(t.result_file.read_text()) for k, t in needed.items() if t.done()}
    failed: Dict[str, str] = {}
    stop = threading.Event()
    run = executor or (lambda t: execute_stage(t, threads=threads, resume=resume, stop=stop))
    running = {}
    timed_out = False
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        queue = list(order)
        while queue or running:
            if time_limit and time.time() - t_start > time_limit and not timed_out:
                timed_out = True
                print(f"[runner] time limit of {time_limit:.0f} s reached: stopping {len(running)} run(s), "
                      f"{len(queue)} not started", flush=True)
                stop.set()
                queue = []
            for k in list(queue):
                if len(running) >= jobs:
                    break
                t = todo[k]
                if any(d in failed for d in t.deps):
                    failed[k] = "an earlier stage failed"
                    queue.remove(k)
                    continue
                if all(d in results for d in t.deps):
                    queue.remove(k)
                    print(f"[runner] start {t.stage.name} seed {t.seed}: {_rel(t.out_dir)}", flush=True)
                    running[pool.submit(run, t)] = k
            if not running:
                if queue:  # nothing can start: dependencies failed
                    for k in queue:
                        failed[k] = "an earlier stage failed"
                    queue = []
                continue
            done, _ = wait(list(running), timeout=2.0, return_when=FIRST_COMPLETED)
            for fut in done:
                k = running.pop(fut)
                t = todo[k]
                try:
                    results[k] = fut.result()
                    if executor is not None:
                        _write_json(t.result_file, results[k])
                    print(f"[runner] done {t.stage.name} seed {t.seed} ({results[k].get('seconds', 0):.0f} s)",
                          flush=True)
                except Exception as e:  # noqa: BLE001  (a failed run is reported, the others go on)
                    failed[k] = str(e)
                    print(f"[runner] FAILED {t.stage.name} seed {t.seed}: {e}", flush=True)
    for comp, arm, seed, keys, by_name, sig, path in pending_arms:
        if all(k in results for k in keys):
            rec = _arm_record(comp, arm, seed, by_name, results, sig)
            _write_json(path, rec)
            records[comp.name].append(rec)
    failures = {all_stages[k].command: why for k, why in failed.items()}
    if report:
        from .report import write_report

        for comp in comps:
            write_report(comp, records[comp.name], out / comp.name, command=command, seeds=seeds,
                         failures={c: w for c, w in failures.items() if any(
                             c == all_stages[k].command for k in plans[comp.name]["stages"])},
                         incomplete=timed_out)
    if failed:
        print(f"[runner] {len(failed)} run(s) failed or skipped:", flush=True)
        for c, why in failures.items():
            print(f"  {c}\n    {why.splitlines()[0] if why else ''}", flush=True)
    return {"records": records, "failed": failures, "timed_out": timed_out}
