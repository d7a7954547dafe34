"""Shared by the benchmarks: print a markdown report and write it under bench/results/."""
import os


def write_report(text: str, out: str, shown: str = None) -> None:
    """Print ``shown`` (default: the whole ``text``) and write ``text`` to ``out`` (folders created)."""
    print(text if shown is None else shown)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text + "\n")
