"""Every registered meta-architecture for a few iterations, in one process or in each of FastReID's ``launch``
processes (gloo): module-level so that spawned processes can import it (tests/test_reliability.py)."""
import hashlib
import json
import math
import os

COMMON = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
          "INPUT.PADDING.SIZE", "2", "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16",
          "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "4", "SOLVER.WARMUP_ITERS", "1",
          "TEST.IMS_PER_BATCH", "64", "SOLVER.LOG_PERIOD", "1", "TEST.EVAL_INIT", "False", "SOLVER.MAX_EPOCH", "1",
          "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "1",
          "SOLVER.STEPS", "[1]", "SEED", "0"]
R18 = ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM",
       "512", "MODEL.BACKBONE.PRETRAIN", "False"]
GAN = ["MODEL.POSE_TRANSFER.GAN.EP.NGF", "8", "MODEL.POSE_TRANSFER.GAN.G.NGF", "8",
       "MODEL.POSE_TRANSFER.GAN.DP.NDF", "8", "MODEL.POSE_TRANSFER.GAN.POSE.SIGMA", "1.5", "TRANSFER.SOURCE_WEIGHTS",
       "", "MODEL.HEADS.NUM_CLASSES", "0", "MODEL.POSE_TRANSFER.GAN.G_PERIOD", "2",
       "MODEL.POSE_TRANSFER.GAN.LOSS.VERIF", "1.0"]


def specs(mmt_weights):
    """``[(name, config file, options)]``: one per registered meta-architecture of ours (the angular heads are
    Baseline with ``AngularEmbeddingHead``); ``mmt_weights``: two source checkpoints for MMT."""
    return [
        ("Baseline", "configs/SynthPed/bagtricks_R18.yml", []),
        ("Angular", "projects/ConditionAnalysis/configs/SynthPed/arcface_mnv2.yml", R18),
        ("HPLF", "projects/HPLF/configs/SynthPed/hplf_R18.yml", []),
        ("RBNet", "projects/RBNet/configs/SynthPed/rbnet_R18.yml", ["MODEL.RBNET.HEATMAP.SIGMA", "1.0"]),
        ("JointIBN", "projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml", []),
        ("MMT", "projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18.yml",
         ["MODEL.MMT.WEIGHTS_1", mmt_weights[0], "MODEL.MMT.WEIGHTS_2", mmt_weights[1], "UDA.OUTLIERS", "keep",
          "UDA.K1", "20", "UDA.EPS", "0.3"]),
        ("PoseTransfer", "projects/PoseTransfer/configs/SynthPedA-SynthPedB/source_mobilenetv2.yml",
         R18 + ["MODEL.POSE_TRANSFER.EA.WIDTH", "32", "MODEL.HEADS.NUM_CLASSES", "8"]),
        ("PoseGAN", "projects/PoseTransfer/configs/SynthPed-GAN/stage3_joint.yml",
         R18 + GAN + ["SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2"]),
        ("MoCoV2", "projects/ConditionAnalysis/configs/SynthPed/moco_R18.yml",
         ["MODEL.MOCO.QUEUE_SIZE", "48", "MODEL.MOCO.MOMENTUM", "0.99", "SOLVER.MAX_EPOCH", "2",
          "TEST.EVAL_PERIOD", "2"]),  # cosine annealing needs an epoch after the warm-up one
    ]


# Options under which a 2-process run (2 x IMS_PER_BATCH/2) computes what the 1-process run (1 x IMS_PER_BATCH) with the
# same seed computes, up to the order of floating-point sums (tests/test_reliability.py compares the two). Under the
# regular configs the runs legitimately differ: BatchNorm normalises each process's half batch with its own
# statistics (and MoCo's shuffling BN uses sub-batches of that half); the identity samplers draw
# IMS_PER_BATCH / world / NUM_INSTANCE identities at a time, so another global batch than one process draws (the
# TrainingSampler hands out one permutation, every process its share: the same global batch); the triplet loss mines
# within each process's half batch; random augmentations draw from each process's own generator (SEED + rank).
# Each option below removes one of these: GroupNorm (per image) for BatchNorm, the TrainingSampler, the
# cross-entropy loss alone, no random augmentation (MoCo's two views are then the same full image, CROP_RATIO 100 is
# a ratio no full-area crop has, so the crop falls back to the whole image).
EXACT = {
    "Baseline": ["MODEL.BACKBONE.NORM", "GN", "MODEL.HEADS.NORM", "GN", "DATALOADER.SAMPLER_TRAIN", "TrainingSampler",
                 "MODEL.LOSSES.NAME", '("CrossEntropyLoss",)', "INPUT.FLIP.ENABLED", "False",
                 "INPUT.PADDING.ENABLED", "False", "INPUT.REA.ENABLED", "False"],
    "MoCoV2": ["MODEL.BACKBONE.NORM", "GN", "MODEL.MOCO.AUG.CROP_SCALE", "[1.0, 1.0]", "MODEL.MOCO.AUG.CROP_RATIO",
               "[100.0, 100.0]", "MODEL.MOCO.AUG.CJ_PROB", "0.0", "MODEL.MOCO.AUG.GRAY_PROB", "0.0",
               "MODEL.MOCO.AUG.BLUR_PROB", "0.0", "MODEL.MOCO.AUG.FLIP_PROB", "0.0"],
}


def exact_specs(spec_list):
    """``<name>-exact``: the specs named in :data:`EXACT` with its options."""
    return [(f"{name}-exact", config, list(opts) + EXACT[name]) for name, config, opts in spec_list if name in EXACT]


def _digest(tensors):
    h = hashlib.sha1()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def probe_images(cfg, n=16):
    """The first ``n`` query images of the first test set with the test transform: a fixed batch, the same in every
    run and process (not through the test loader, whose sampler gives each process its own share)."""
    import torch

    from fastreid_ext.data.build import build_test_loader

    loader, _ = build_test_loader(cfg, cfg.DATASETS.TESTS[0])
    return torch.stack([loader.dataset[i]["images"] for i in range(n)])


def probe_features(model, images):
    """GAP of ``model.backbone`` on ``images`` with BatchNorm in training mode (the statistics of this batch, on a
    copy): a function of the parameters alone, as the processes share their parameters but not their BatchNorm
    running statistics. ``None`` for a model without ``backbone``."""
    import copy

    import torch

    if not hasattr(model, "backbone"):
        return None
    m = copy.deepcopy(model).train()
    with torch.no_grad():
        return m.backbone(m.preprocess_image({"images": images})).mean(dim=(2, 3))


def train_all(out_root, spec_list, only=None, probe=()):
    """Train and evaluate every spec in this process (one of ``launch``'s, or alone); write
    ``out_root/<name>_w<world>/rank<r>.json``: evaluation results, a digest of the parameters and of the buffers that
    are not BatchNorm statistics (each process keeps its own BatchNorm statistics: FastReID's DDP does not broadcast
    buffers), MMT's pseudo labels, MoCo's queue pointer, whether this process writes checkpoints, and the finite
    losses; for the names in ``probe``, rank 0 also writes ``probe.pt``: :func:`probe_features` of the model before
    and after training and the logged losses."""
    import torch
    from fastreid.utils import comm

    import fastreid_ext
    from fastreid_ext.engine import build_trainer

    torch.set_num_threads(1)
    rank, world = comm.get_rank(), comm.get_world_size()
    for name, config, opts in spec_list:
        if only and name not in only:
            continue
        out = os.path.join(out_root, f"{name}_w{world}")
        os.makedirs(out, exist_ok=True)
        cfg = fastreid_ext.get_cfg()
        cfg.merge_from_file(config)
        cfg.merge_from_list(COMMON + list(opts) + ["OUTPUT_DIR", out])
        trainer = build_trainer(cfg)
        trainer.resume_or_load(resume=False)
        model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        if name in probe:
            images = probe_images(cfg)
            feats0 = probe_features(model, images)
        results = trainer.train()
        model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        params = dict(model.named_parameters())
        buffers = {k: v for k, v in model.named_buffers()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
        uda = getattr(trainer, "uda", None)
        labels = getattr(uda, "labels", None) if uda is not None else None
        rec = {"results": {k: float(v) for k, v in (results or {}).items()},
               "params": _digest(params), "buffers": _digest(buffers), "buffer_names": sorted(buffers),
               "labels": None if labels is None else [int(x) for x in labels],
               "saves": bool(trainer.checkpointer.save_to_disk), "world": world,
               "queue_ptr": int(model.queue_ptr) if hasattr(model, "queue_ptr") else None}
        if comm.is_main_process():
            rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
            losses = [v for r in rows for k, v in r.items() if k.startswith("loss") or k == "total_loss"]
            rec["losses"] = len(losses)
            rec["finite"] = bool(losses) and all(math.isfinite(v) for v in losses)
            if name in probe:
                torch.save({"before": feats0, "after": probe_features(model, images),
                            "total_loss": [r["total_loss"] for r in rows if "total_loss" in r]},
                           os.path.join(out, "probe.pt"))
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(rec, f)
        comm.synchronize()
