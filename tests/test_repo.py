"""Repository hygiene that CI relies on."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_test_command():
    text = open(os.path.join(ROOT, "README.md")).read()
    m = re.search(r"Run the test suite.*?```bash\n(.+?)\n```", text, re.S)
    assert m, "README.md must show the test command in a bash block after 'Run the test suite'"
    return m.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    ci = open(os.path.join(ROOT, ".ci", "run")).read().splitlines()
    assert _readme_test_command() in [line.strip() for line in ci]


def test_no_research_data_or_big_files_tracked():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:  # not a git checkout (e.g. an sdist): nothing to check
        return
    for f in files:
        p = os.path.join(ROOT, f)
        assert not f.endswith((".pth", ".pt", ".pkl")), f"weights must not be committed: {f}"
        if os.path.isfile(p):
            assert os.path.getsize(p) < 2 * 1024 * 1024, f"file over 2 MB tracked: {f}"
