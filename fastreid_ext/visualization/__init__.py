"""Seeing what re-id models look at (a core package: no method imports; the numeric modules import no FastReID).

* :mod:`.actmap` - torchreid's activation-map recipe and strips (pure); :mod:`.actmap_cli` -
  ``tools/visualize_actmap.py``: any registered model, any layer, several models side by side;
* :mod:`.ranked` - ranked lists with the Market-1501 protocol, AP bookkeeping per query chunk, distance
  distributions and ROC (pure); :mod:`.ranked_cli` - ``tools/visualize_ranked.py``;
* :mod:`.similarity` - the exact per-location decomposition of a pair's cosine similarity (Stylianou et al.,
  "Visualizing deep similarity networks", WACV 2019) for GAP / max / GeM pooling followed by affine layers (pure);
  :mod:`.similarity_cli` - ``tools/visualize_similarity.py``;
* :mod:`.models`, :mod:`.inputs` - models from a config through the multi-branch interface, streamed images.
"""
