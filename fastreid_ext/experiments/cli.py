"""Command line of the experiment runner (``tools/run_experiment.py``).

    python tools/run_experiment.py NAME [NAME ...] --seeds 0 1 2 [--out logs/experiments] [--device cpu|cuda]
        [--jobs N] [--threads T] [--workers W] [--budget default|smoke] [--arms ARM ...] [--resume]
        [--time-limit SECONDS] [--skip-missing] [--dry-run] [KEY VALUE ...]

NAME: a comparison of :mod:`fastreid_ext.experiments.comparisons` (``--list`` describes them). ``KEY VALUE``
overrides go to every run of every arm. Finished (arm, seed) results are kept and not redone; an interrupted run
starts again (``--resume``: continues from its last checkpoint). Results: ``<out>/<NAME>/report.md`` (+
``report.png``, ``results.json``).
"""
from __future__ import annotations

import argparse
import shlex
import sys


def main(argv=None, root=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description="Run named comparisons for several seeds",
                                 epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help="comparison(s)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="logs/experiments")
    ap.add_argument("--device", default="cpu", help="MODEL.DEVICE of every run (cpu, cuda)")
    ap.add_argument("--jobs", type=int, default=1, help="runs (child processes) at a time")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads per child (default: CPUs // jobs)")
    ap.add_argument("--workers", type=int, default=None, help="DATALOADER.NUM_WORKERS of every run (default: configs')")
    ap.add_argument("--gen-workers", type=int, default=None, help="processes generating SynthPed (default: CPUs)")
    ap.add_argument("--budget", default="default", choices=["default", "smoke"],
                    help="smoke: 2 iterations on tiny SynthPed at 64x32 (plumbing check, not numbers)")
    ap.add_argument("--arms", nargs="+", default=None, help="only these arms (names as in the table)")
    ap.add_argument("--resume", action="store_true", help="continue interrupted runs from their last checkpoint")
    ap.add_argument("--time-limit", type=float, default=0.0, help="seconds: start nothing after, stop running runs")
    ap.add_argument("--skip-missing", action="store_true",
                    help="leave out a comparison whose config files are missing (default: refuse to start)")
    ap.add_argument("--dry-run", action="store_true", help="print the runs to do, run nothing")
    ap.add_argument("--list", action="store_true", help="describe the comparisons")
    args, opts = ap.parse_known_args(argv)
    unknown = [o for o in opts if o.startswith("--")]
    if unknown:
        ap.error(f"unknown option(s) {unknown}")
    if len(opts) % 2:
        ap.error(f"overrides must be KEY VALUE pairs, got {opts}")
    from fastreid_ext.experiments.comparisons import COMPARISONS

    if args.list or not args.names:
        for c in COMPARISONS.values():
            print(f"{c.name}: {c.description}\n  arms: {', '.join(a.name for a in c.arms)}\n")
        return 0 if args.list else 2
    from fastreid_ext.experiments.runner import MissingConfigs, run_experiments

    command = "python tools/run_experiment.py " + " ".join(shlex.quote(a) for a in argv)
    try:
        res = run_experiments(args.names, args.seeds, args.out, device=args.device, jobs=args.jobs,
                              threads=args.threads, workers=args.workers, budget=args.budget, overrides=opts,
                              arms=args.arms, resume=args.resume, dry_run=args.dry_run, time_limit=args.time_limit,
                              gen_workers=args.gen_workers, command=command, root=root,
                              skip_missing=args.skip_missing)
    except (MissingConfigs, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    return 1 if res["failed"] else 0
