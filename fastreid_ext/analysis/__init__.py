"""Analysis tools of the shared core: similarity matrices of re-id models under controlled conditions.

After Yoshida, Okubo, Fujii and Takamori, "Evaluation of metric learning model for Person Re-identification" (in
Japanese): the same person under conditions that differ in one factor, every image embedded, and the mean cosine
similarity within and between conditions shown as heat-mapped matrices.

* :mod:`.layout` - the ``<factor>/<condition>/<id>_<shot>.png`` folder layout and its checks (pure);
* :mod:`.stats` - per-person matrices, the mean / spread over persons, different-person reference (pure numpy);
* :mod:`.embed` - model variants: FastReID config + weights or torchreid through the bridge, letterbox /
  masking / flip canonicalisation, the model's test feature or its global-average-pooled map;
* :mod:`.matrices` - streaming computation and CSV / JSON output; :mod:`.plot` - annotated heat maps;
* :mod:`.cli` - ``tools/similarity_matrix.py``.
"""
from .layout import LayoutError, scan_image_set  # noqa: F401
from .stats import ImpostorAccumulator, MatrixAccumulator, person_matrix  # noqa: F401
