"""Command line of ``tools/export_onnx.py``: export any registered re-id model to ONNX, check it, and evaluate the
exported file with FastReID's evaluator next to the PyTorch model.

    # a fastreid_ext / FastReID config and its weights (KEY VALUE overrides at the end)
    python tools/export_onnx.py --config-file projects/HPLF/configs/SynthPed/hplf_R18.yml \\
        --weights logs/synthped/hplf_R18/model_final.pth --output hplf_R18.onnx
    # torchreid OSNet (model zoo weights) through the backbone bridge
    python tools/export_onnx.py --torchreid-weights ../shared/realdata/weights/osnet_x0_25_market1501.pth \\
        --output osnet_x0_25.onnx
    # export, then evaluate both on the config's DATASETS.TESTS with FastReID's evaluator (the method's own, e.g.
    # HPLF's global+local or MMT's mean nets) and print the numbers side by side
    python tools/export_onnx.py --config-file CFG --weights W --output m.onnx --evaluate
    # evaluate an existing ONNX file against the PyTorch model (no export)
    python tools/export_onnx.py --config-file CFG --weights W --onnx m.onnx --evaluate
    # also an int8 copy (faster on CPUs with int8 dot products, features within --int8-min-cosine of the float file;
    # with --evaluate it is evaluated too, a third column)
    python tools/export_onnx.py --config-file CFG --weights W --output m.onnx --int8 m_int8.onnx \\
        --calibration-images crops/

The export (fastreid_ext.deploy.onnx_export) is declared a success only after onnx.checker, onnxruntime loading, and
onnxruntime-vs-PyTorch parity at batch 1 and 4 (cosine >= --min-cosine per sample, identical ranking) on rendered
pedestrians, or on --check-images. Use the file in tools/reid_video.py --onnx FILE, or in Python with
fastreid_ext.deploy.ort_embedder (OrtEmbedder, OnnxEvalModel; config key MODEL.DEPLOY.ONNX).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

from .quantize import WEIGHT_TYPES

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    head, tail = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(prog="export_onnx.py", description=head, epilog=tail,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--config-file", default=None, help="a FastReID / fastreid_ext config")
    m.add_argument("--weights", default=None, help="MODEL.WEIGHTS (a FastReID checkpoint)")
    m.add_argument("--torchreid-weights", default=None, help="a torchreid OSNet checkpoint (uses the bridge)")
    m.add_argument("--torchreid-arch", default="osnet_x0_25")
    e = p.add_argument_group("export")
    e.add_argument("--output", default="model.onnx", help="the ONNX file to write (default: model.onnx)")
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (default: fastreid_ext.deploy.onnx_export."
                   "DEFAULT_OPSET)")
    e.add_argument("--check-images", action="append", default=None, metavar="PATH",
                   help="an image file / folder for the parity check, repeatable (default: 8 rendered pedestrians)")
    e.add_argument("--min-cosine", type=float, default=0.9999, help="parity threshold per sample")
    e.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"],
                   help="auto: PyTorch's torch.export-based exporter, its TorchScript-based one for a model "
                   "torch.export cannot trace")
    q = p.add_argument_group("int8 (optional, a speed / accuracy trade: fastreid_ext.deploy.quantize)")
    q.add_argument("--int8", default=None, metavar="FILE",
                   help="also write an int8-quantized copy (onnxruntime static QDQ) of the exported / --onnx file")
    q.add_argument("--calibration-images", action="append", default=None, metavar="PATH",
                   help="person crops (a file / folder, repeatable) to calibrate the int8 ranges on, a quarter held "
                   "out for the check (default: 64 rendered pedestrians + 16 held out)")
    q.add_argument("--int8-min-cosine", type=float, default=None,
                   help="refuse the int8 file when a held-out feature's cosine to the float one is under this "
                   "(default: 0.95)")
    q.add_argument("--int8-weights", default="uint8", choices=sorted(WEIGHT_TYPES),
                   help="weight type (fastreid_ext.deploy.quantize.WEIGHT_TYPES): uint8 (default) runs without "
                   "saturation on every x86 CPU; int8 is saturation-prone on AVX2 / AVX-512 CPUs without VNNI")
    v = p.add_argument_group("evaluation")
    v.add_argument("--evaluate", action="store_true",
                   help="evaluate PyTorch and onnxruntime on the config's DATASETS.TESTS with FastReID's evaluator")
    v.add_argument("--onnx", default=None, help="evaluate this existing ONNX file (skips the export)")
    v.add_argument("--threads", type=int, default=0, help="torch / onnxruntime threads (0: their defaults)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def _flat(results: dict) -> dict:
    """``{dataset: {metric: v}}`` (FastReID's ``Trainer.test`` with several test sets) -> ``{dataset/metric: v}``."""
    if results and all(isinstance(v, dict) for v in results.values()):
        return {f"{ds}/{k}": v for ds, r in results.items() for k, v in r.items()}
    return dict(results or {})


def _metrics_table(torch_res: dict, onnx_res: dict, int8_res: Optional[dict] = None) -> str:
    a, b, c = _flat(torch_res), _flat(onnx_res), _flat(int8_res) if int8_res is not None else None
    num = (int, float)
    if c is None:
        rows = ["| metric | PyTorch | onnxruntime | difference |", "| --- | --- | --- | --- |"]
    else:
        rows = ["| metric | PyTorch | onnxruntime | difference | int8 | int8 difference |",
                "| --- | --- | --- | --- | --- | --- |"]
    for k in a:
        if k in b and isinstance(a[k], num) and isinstance(b[k], num):
            row = f"| {k} | {a[k]:.2f} | {b[k]:.2f} | {b[k] - a[k]:+.2f} |"
            if c is not None:
                row += f" {c[k]:.2f} | {c[k] - a[k]:+.2f} |" if isinstance(c.get(k), num) else " | |"
            rows.append(row)
    return "\n".join(rows)


def evaluate(cfg, torch_model, onnx_path: str, threads: int = 0, int8_path: Optional[str] = None):
    """The method's evaluation (``trainer_class(cfg).test``: the test sets, evaluator and flip test of ``cfg``, e.g.
    MMT's mean nets or PoseTransfer's C_v re-ranking) of the PyTorch model and of ``onnx_path`` (and ``int8_path``)
    through onnxruntime; returns ``(torch results, onnx results, markdown table, int8 results or None)``."""
    from ..engine.trainer import trainer_class
    from .ort_embedder import OnnxEvalModel

    def onnx_model(path):
        m = OnnxEvalModel(path, threads=threads).eval()
        m.net.check_matches(cfg, torch_model)  # the same weights: torch_model may serve the method's evaluation
        return m.set_torch_reference(torch_model)

    models = [onnx_model(onnx_path)] + ([onnx_model(int8_path)] if int8_path else [])
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    test = trainer_class(cfg).test
    res_t = test(cfg, torch_model.eval())
    res_o = test(cfg, models[0])
    res_q = test(cfg, models[1]) if int8_path else None
    return res_t, res_o, _metrics_table(res_t, res_o, res_q), res_q


def _quantize(args, cfg, model, onnx_path: str) -> dict:
    from .onnx_export import load_images, model_input_names, synthetic_person_inputs
    from .quantize import quantize_onnx

    size = (int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1]))
    masks = held_masks = None
    if args.calibration_images:
        if "masks" in model_input_names(model):
            raise SystemExit("error: --calibration-images cannot give the person masks this model takes; leave it out")
        imgs = load_images(args.calibration_images, size).numpy()
        n_held = max(1, len(imgs) // 4) if len(imgs) > 1 else 0
        calib, held = (imgs[n_held:], imgs[:n_held]) if n_held else (imgs, imgs)
    else:
        im, ms, _ = synthetic_person_inputs(80, size, seed=7)
        calib, held, masks, held_masks = im[16:].numpy(), im[:16].numpy(), ms[16:].numpy(), ms[:16].numpy()
    try:
        rep = quantize_onnx(onnx_path, args.int8, calib, masks, held, held_masks,
                            min_cosine=0.95 if args.int8_min_cosine is None else args.int8_min_cosine,
                            weights=args.int8_weights)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    print(f"int8 file {rep.path}: {rep.summary()}")
    return vars(rep)


def _check_int8_args(args) -> None:
    """Refuse int8 options that would be ignored or would overwrite the float file (before any export)."""
    if args.int8:
        src = args.onnx or args.output
        if os.path.abspath(args.int8) == os.path.abspath(src):
            which = "--onnx" if args.onnx else "--output"
            raise SystemExit(f"error: --int8 {args.int8} is the float file itself ({which}); the int8 copy needs "
                             f"another path")
        return
    given = [o for o, v in (("--calibration-images", args.calibration_images),
                            ("--int8-min-cosine", args.int8_min_cosine)) if v is not None]
    if given:
        raise SystemExit(f"error: {' and '.join(given)} only apply with --int8 FILE (the int8 copy to write)")


def main(argv: Optional[Sequence[str]] = None):
    """Export (unless ``--onnx``) and optionally evaluate; returns a dict with ``export`` and ``evaluation``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ..video.embed import build_embedder
    from .onnx_export import DEFAULT_OPSET, OnnxExportError, export_onnx, load_images, model_input_names

    if not args.config_file and not args.torchreid_weights:
        raise SystemExit("error: give --config-file CFG (+ --weights / MODEL.WEIGHTS) or --torchreid-weights PATH")
    _check_int8_args(args)
    try:
        emb = build_embedder(args.config_file, args.opts, args.weights, args.torchreid_weights, args.torchreid_arch)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise SystemExit(f"error: {e}")
    cfg, model = emb.cfg, emb.model.eval()
    out = {"export": None, "evaluation": None, "int8": None}
    if not args.onnx:
        size = (int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1]))
        check = None
        names = model_input_names(model)
        if args.check_images:
            if "masks" in names:
                raise SystemExit("error: --check-images cannot give the person masks this model takes; leave it out "
                                 "(rendered pedestrians come with masks)")
            check = [load_images(args.check_images, size)]
        try:
            res = export_onnx(model, args.output, size, input_names=names, opset=args.opset or DEFAULT_OPSET,
                              check_inputs=check, meta_architecture=cfg.MODEL.META_ARCHITECTURE,
                              min_cosine=args.min_cosine, exporter=args.exporter)
        except OnnxExportError as e:
            raise SystemExit(f"error: {e}")
        print(f"exported {cfg.MODEL.META_ARCHITECTURE} to {res.path}: inputs {', '.join(res.input_names)} "
              f"(N, ., {size[0]}, {size[1]}), features (N, {res.feature_dim}), opset {res.opset}, dynamic batch, "
              f"{res.metadata['exporter']} exporter")
        print(f"checks passed: onnx.checker, onnxruntime, parity ({res.parity.summary()})")
        out["export"] = res.as_dict()
    onnx_path = args.onnx or args.output
    if args.int8:
        out["int8"] = _quantize(args, cfg, model, onnx_path)
    if args.evaluate:
        try:
            res_t, res_o, table, res_q = evaluate(cfg, model, onnx_path, args.threads, int8_path=args.int8)
        except (FileNotFoundError, ValueError, KeyError) as e:  # ValueError: also the methods' ConfigError
            raise SystemExit(f"error: {e}")
        print(table)
        out["evaluation"] = {"pytorch": json.loads(json.dumps(res_t, default=float)),
                             "onnxruntime": json.loads(json.dumps(res_o, default=float))}
        if res_q is not None:
            out["evaluation"]["int8"] = json.loads(json.dumps(res_q, default=float))
    sys.stdout.flush()
    return out


if __name__ == "__main__":
    main()
