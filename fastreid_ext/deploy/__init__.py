"""Deployment: ONNX export of any registered re-id model (:mod:`.onnx_export`), an onnxruntime embedder for the video
tool and FastReID's evaluator (:mod:`.ort_embedder`; the config key ``MODEL.DEPLOY.ONNX`` of :mod:`.config`, used by
``tools/train_net.py --eval-only``), optional int8 quantization (:mod:`.quantize`), and the command line of
``tools/export_onnx.py`` (:mod:`.cli`). Importing this package imports neither onnx nor onnxruntime."""
