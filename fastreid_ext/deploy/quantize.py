"""Int8 post-training quantization of an exported re-id embedder with onnxruntime's quantization tool
(``onnxruntime.quantization.quantize_static``,
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html).

Static quantization in the QDQ format: weights 8-bit per output channel (uint8 by default, see :data:`WEIGHT_TYPES`),
activations uint8 with ranges calibrated on
person images (default: the 99.999th percentile of each activation's magnitude, which keeps OSNet x0.25's MOT17
features closer to the float ones than the min / max range: held-out cosine min 0.978 vs 0.969, mean 0.9945 vs 0.9916,
calibrated on the 64 ground-truth crops of the first frames, measured with bench/bench_video.py's crops on 2026-11-30); onnxruntime then runs the convolutions as int8 kernels (VNNI / AMX where the CPU has them).
It is an opt-in speed / accuracy trade: the features are no longer those of the PyTorch model to 0.9999 cosine, so the
result is checked against the float file on held-out images and the figures are stored in the file's metadata
(``fastreid_ext.quantization``) and returned; :func:`quantize_onnx` refuses (``ValueError``) a result under
``min_cosine`` per sample.

Method: Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018 (affine uint8 / int8 quantization, section 2); per-channel weights: Krishnamoorthi,
"Quantizing deep convolutional networks for efficient inference: A whitepaper", arXiv:1806.08342, 2018, section 3.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import numpy as np

__all__ = ["QuantizationReport", "quantize_onnx", "WEIGHT_TYPES"]

#: ``weights`` of :func:`quantize_onnx`: (onnxruntime ``QuantType`` name, ``reduce_range``). The default ``uint8``
#: (onnxruntime's U8U8) because its int8-weight kernels (U8S8) on x86 CPUs with AVX2 / AVX-512 but without VNNI use
#: VPMADDUBSW, whose 16-bit intermediate sums saturate (onnxruntime's quantization guide, "when to use reduce_range";
#: OpenVINO's "saturation issue"); and the file is judged on the machine that quantizes it, not on the ones that will
#: run it. Measured on an AMD EPYC without VNNI, a tiny ResNet-18 at 64 x 32 calibrated on 64 rendered pedestrians,
#: held-out cosine to PyTorch min / mean over 4 sets of 24 and two calibration sets: int8 0.77-0.89 / 0.94-0.96,
#: int8-reduced (7-bit weights) 0.965-0.969 / 0.977-0.979, uint8 0.952-0.984 / 0.987-0.989 (int8 on a VNNI machine the
#: day before: 0.962-0.984 / 0.988-0.990). ``int8`` stays an option for machines known to have VNNI.
WEIGHT_TYPES = {"uint8": ("QUInt8", False), "int8": ("QInt8", False), "int8-reduced": ("QInt8", True)}


@dataclass
class QuantizationReport:
    """The int8 file against the float one on held-out images: per-sample cosine (smallest, mean) and the share of
    held-out images whose nearest other image is the same under both."""

    path: str
    calibration_images: int
    heldout_images: int
    min_cosine: float
    mean_cosine: float
    nearest_neighbour_agreement: float

    def summary(self) -> str:
        return (f"int8 vs float on {self.heldout_images} held-out images: cosine min {self.min_cosine:.4f}, mean "
                f"{self.mean_cosine:.4f}, nearest neighbour the same for {100 * self.nearest_neighbour_agreement:.0f}%")


def _features(session, images: np.ndarray, masks: Optional[np.ndarray], batch: int = 16) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    out = []
    for i in range(0, len(images), batch):
        feeds = {names[0]: images[i:i + batch]}
        if len(names) > 1:
            feeds[names[1]] = masks[i:i + batch] if masks is not None else \
                np.ones((len(images[i:i + batch]), 1) + images.shape[2:], np.float32)
        out.append(session.run(None, feeds)[0])
    f = np.concatenate(out).astype(np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def quantize_onnx(src: str, dst: str, images: np.ndarray, masks: Optional[np.ndarray] = None,
                  heldout: Optional[np.ndarray] = None, heldout_masks: Optional[np.ndarray] = None,
                  min_cosine: float = 0.95, per_channel: bool = True, method: str = "percentile",
                  weights: str = "uint8") -> QuantizationReport:
    """Quantize ``src`` (a float ONNX embedder from :func:`~fastreid_ext.deploy.onnx_export.export_onnx`) to int8
    into ``dst``, calibrated on ``images`` (float32 (N, 3, H, W) RGB 0..255, real person crops preferably; plus
    ``masks`` for a model with a mask input). The result is compared with ``src`` on ``heldout`` (default: the
    calibration images); ``ValueError`` when a held-out feature's cosine to the float one is under ``min_cosine``
    (``dst`` is then not written). ``method``: ``percentile`` | ``minmax`` | ``entropy`` (onnxruntime's
    ``CalibrationMethod``). ``weights``: a key of :data:`WEIGHT_TYPES`. The ``fastreid_ext.*`` metadata of ``src``
    is kept (so the file is still recognised as this model's) and ``fastreid_ext.quantization`` added."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_export import META_PREFIX, make_session

    methods = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    if weights not in WEIGHT_TYPES:
        raise ValueError(f"int8 weight type must be one of {sorted(WEIGHT_TYPES)}, got {weights!r}")
    wtype, reduce_range = WEIGHT_TYPES[weights]
    images = np.ascontiguousarray(images, np.float32)
    float_sess = make_session(src, threads=1)
    names = [i.name for i in float_sess.get_inputs()]

    class _Reader(CalibrationDataReader):
        def __init__(self):
            feeds = []
            for i in range(0, len(images), 8):
                d = {names[0]: images[i:i + 8]}
                if len(names) > 1:
                    d[names[1]] = np.ascontiguousarray(masks[i:i + 8], np.float32) if masks is not None else \
                        np.ones((len(images[i:i + 8]), 1) + images.shape[2:], np.float32)
                feeds.append(d)
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="fastreid_ext_quant_") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        out = os.path.join(tmp, "int8.onnx")
        quant_pre_process(src, pre, skip_symbolic_shape=True)  # shape inference + graph clean-up before quantizing
        quantize_static(pre, out, _Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=getattr(QuantType, wtype), per_channel=per_channel,
                        calibrate_method=methods[method], reduce_range=reduce_range)
        ho = images if heldout is None else np.ascontiguousarray(heldout, np.float32)
        hm = masks if heldout is None else heldout_masks
        a = _features(float_sess, ho, hm)
        b = _features(make_session(out, threads=1), ho, hm)
        cos = (a * b).sum(1)
        sa, sb = a @ a.T, b @ b.T
        np.fill_diagonal(sa, -np.inf)
        np.fill_diagonal(sb, -np.inf)
        agree = float((sa.argmax(1) == sb.argmax(1)).mean()) if len(a) > 1 else 1.0
        report = QuantizationReport(str(dst), len(images), len(ho), float(cos.min()), float(cos.mean()), agree)
        if report.min_cosine < min_cosine:
            raise ValueError(f"int8 quantization of {src} is too lossy: {report.summary()} (min_cosine {min_cosine}); "
                             f"calibrate on more / more typical person crops, or keep the float file")
        proto = onnx.load(out)
        src_meta: Dict[str, str] = {p.key: p.value for p in onnx.load(src, load_external_data=False).metadata_props}
        del proto.metadata_props[:]
        for k, v in src_meta.items():
            proto.metadata_props.add(key=k, value=v)
        info = {k: v for k, v in asdict(report).items() if k != "path"}
        info["scheme"] = (f"static QDQ, {weights} weights {'per channel' if per_channel else 'per tensor'}, uint8 "
                          f"activations, {method} calibration")
        info["weights"] = weights
        proto.metadata_props.add(key=META_PREFIX + "quantization", value=json.dumps(info))
        os.makedirs(os.path.dirname(os.path.abspath(dst)) or ".", exist_ok=True)
        onnx.save(proto, dst)
    return report
