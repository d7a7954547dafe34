"""Named comparisons of :mod:`fastreid_ext.experiments.runner` (``tools/run_experiment.py NAME``).

A :class:`Comparison` is a list of :class:`Arm` s; an arm is a chain of :class:`Stage` s, each one FastReID run of
``tools/train_net.py`` (a training, or ``--eval-only``) with a config file and ``KEY VALUE`` overrides, optionally
fed the ``model_final.pth`` of earlier stages (``weights``: config key -> stage) and followed by measurements
(``measure``: names of :data:`fastreid_ext.experiments.measure.MEASUREMENTS`). Stages are shared: two arms (or two
comparisons) naming a stage with the same config, overrides, seed offset and inputs run it once per seed.

Every arm of a comparison gets the same budget: the budget keys are in the stages' overrides (identical across the
arms of a comparison) or in the configs, which are written with equal budgets (projects/*/configs/SynthPed/*_mnv2.yml).
``--budget smoke`` (:data:`SMOKE_OPTS`) replaces them by 2 iterations on tiny SynthPed at 64 x 32 (plumbing only).

Register another comparison with :func:`register_comparison`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["Stage", "Arm", "Comparison", "COMPARISONS", "register_comparison", "get_comparison", "SMOKE_OPTS"]


@dataclass(frozen=True)
class Stage:
    """One FastReID run. ``name``: unique within its comparison. ``seed_offset``: the run's ``SEED`` is the
    experiment seed plus this (MMT's second source model). ``weights``: ``(config key, stage name)`` pairs whose
    ``model_final.pth`` goes into that key (e.g. ``MODEL.MMT.WEIGHTS_1``). ``eval_only``: ``--eval-only`` (needs
    ``MODEL.WEIGHTS`` among ``weights``). ``measure``: measurements after the run. ``seed_keys``: extra config
    keys set to the run's seed (e.g. ``TRANSFER.FRACTION_SEED``). ``masks``: person masks from this segmentation
    backend (:data:`fastreid_ext.segmentation.BACKENDS`, e.g. ``"mediapipe"``) instead of the datasets' own: the
    runner extracts them for the run's SynthPed datasets once (``<datasets' parent>/masks_<backend>/``) and passes
    ``DATASETS.ANNOTATIONS.MASK_ROOTS`` with ``ON_MISSING empty`` (:func:`fastreid_ext.experiments.runner.
    prepare_segmenter_masks`); ``""``: the datasets' own ``masks/`` (SynthPed's exact masks)."""

    name: str
    config: str
    opts: Tuple[str, ...] = ()
    seed_offset: int = 0
    weights: Tuple[Tuple[str, str], ...] = ()
    eval_only: bool = False
    measure: Tuple[str, ...] = ()
    seed_keys: Tuple[str, ...] = ()
    masks: str = ""


@dataclass(frozen=True)
class Arm:
    """An arm: ``stages`` run in order (by name); its metrics are those of the last stage, plus those of the stages
    in ``include`` under a prefix (``(stage name, prefix)``, e.g. the source model's numbers of an MMT arm)."""

    name: str
    stages: Tuple[str, ...]
    include: Tuple[Tuple[str, str], ...] = ()


@dataclass
class Comparison:
    """A named comparison: ``stages`` (by name), ``arms``, the ``metrics`` to tabulate and plot (keys of the arms'
    results: ``<test set>/<FastReID metric>`` such as ``SynthPedB/mAP``, measurement keys such as ``kpt_err``),
    a ``description`` and ``notes`` (the paper's numbers, caveats) written under the table."""

    name: str
    description: str
    stages: Dict[str, Stage]
    arms: List[Arm]
    metrics: List[str]
    plot_metrics: Optional[List[str]] = None
    notes: List[str] = field(default_factory=list)

    def __post_init__(self):
        for arm in self.arms:
            for s in list(arm.stages) + [s for s, _ in arm.include]:
                if s not in self.stages:
                    raise ValueError(f"comparison {self.name}: arm {arm.name!r} names unknown stage {s!r}")
        for st in self.stages.values():
            for _, dep in st.weights:
                if dep not in self.stages:
                    raise ValueError(f"comparison {self.name}: stage {st.name!r} takes weights of unknown stage "
                                     f"{dep!r}")

    def stage_order(self, arms: Optional[Sequence[str]] = None) -> List[str]:
        """The stages the (given) arms need, each after the stages it takes weights from."""
        wanted = [a for a in self.arms if arms is None or a.name in arms]
        order: List[str] = []

        def visit(name, path=()):
            if name in order:
                return
            if name in path:
                raise ValueError(f"comparison {self.name}: weight cycle through {name}")
            for _, dep in self.stages[name].weights:
                visit(dep, path + (name,))
            order.append(name)

        for arm in wanted:
            for s in list(arm.stages) + [s for s, _ in arm.include]:
                visit(s)
        return order


COMPARISONS: Dict[str, Comparison] = {}


def register_comparison(comp: Comparison) -> Comparison:
    COMPARISONS[comp.name] = comp
    return comp


def get_comparison(name: str) -> Comparison:
    if name not in COMPARISONS:
        raise KeyError(f"unknown comparison {name!r}; known: {', '.join(sorted(COMPARISONS))}")
    return COMPARISONS[name]


#: ``--budget smoke``: 2 iterations on tiny SynthPed at 64 x 32, evaluation at the end (plumbing, not numbers); MMT
#: clusters with k-means (8 clusters): DBSCAN finds no usable clusters in features of 2-iteration source models
SMOKE_OPTS = ("SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "[5]",
              "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "1", "TEST.EVAL_INIT", "False",
              "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]", "INPUT.PADDING.SIZE", "3",
              "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_INSTANCE", "4",
              "TEST.IMS_PER_BATCH", "64", "UDA.CLUSTERING", "kmeans", "UDA.NUM_CLUSTERS", "8")


def _t(*xs) -> Tuple[str, ...]:
    return tuple(str(x) for x in xs)


# ---------------------------------------------------------------------------------------------------- rbnet
_RB = "projects/RBNet/configs/SynthPed"
_AB = _t("DATASETS.TESTS", '("SynthPedA","SynthPedB")')  # supervised A + direct cross-domain B, one run
register_comparison(Comparison(
    name="rbnet",
    description="RBNet vs FastReID's Baseline on SynthPedA from the ImageNet MobileNetV2 (same recipe and budget: "
                "the two configs differ only in the meta-architecture); tested on SynthPedA (supervised) and on "
                "SynthPedB without any adaptation (direct cross-domain). RBNet's maps are measured against "
                "SynthPed's exact keypoints and person masks on SynthPedA's test images, at initialisation (same "
                "seed, untrained reverse path) and after training.",
    stages={"baseline": Stage("baseline", f"{_RB}/baseline_mnv2.yml", _AB),
            "rbnet": Stage("rbnet", f"{_RB}/rbnet_mnv2.yml", _AB, measure=("rbnet_maps",))},
    arms=[Arm("Baseline", ("baseline",)), Arm("RBNet", ("rbnet",))],
    metrics=["SynthPedA/Rank-1", "SynthPedA/mAP", "SynthPedB/Rank-1", "SynthPedB/mAP", "init/kpt_err", "kpt_err",
             "init/mask_person", "init/mask_bg", "mask_person", "mask_bg"],
    plot_metrics=["SynthPedA/Rank-1", "SynthPedA/mAP", "SynthPedB/Rank-1", "SynthPedB/mAP", "kpt_err",
                  "mask_person", "mask_bg"],
    notes=["Paper (Yu & Piao, Reverse backbone net, 2024): Table 2 (supervised) and Table 4 (direct transfer "
           "Market-1501 -> DukeMTMC without adaptation, 17.3 -> 27.4 mAP Baseline -> RBNet).",
           "kpt_err: mean distance (input pixels) between the argmax of RBNet's 17 heatmaps and SynthPed's exact "
           "visible keypoints; mask_person / mask_bg: mean of RBNet's mask M(x) over person / background pixels "
           "(fastreid_ext/rbnet/evaluation.py map_quality); init/: the same seed's model before training."],
))

# ---------------------------------------------------------------------------------------------------- hplf
_HP = "projects/HPLF/configs/SynthPed"
_MIS = _t("DATASETS.SYNTHPED.VERTICAL_MISALIGN", "0.25")
register_comparison(Comparison(
    name="hplf",
    description="HPLF vs Baseline (same recipe without the local branch) on SynthPedA with vertical misalignment "
                "(DATASETS.SYNTHPED.VERTICAL_MISALIGN 0.25: crops shifted vertically by up to a quarter of the "
                "height, train and test), from the ImageNet MobileNetV2. HPLF is reported with the global "
                "feature alone, global + local (GL/) and local alone (L/).",
    stages={"baseline": Stage("baseline", f"{_HP}/baseline_mnv2.yml", _MIS),
            "hplf": Stage("hplf", f"{_HP}/hplf_mnv2.yml", _MIS)},
    arms=[Arm("Baseline", ("baseline",)), Arm("HPLF", ("hplf",))],
    metrics=["SynthPedA/Rank-1", "SynthPedA/mAP", "SynthPedA/GL/Rank-1", "SynthPedA/GL/mAP", "SynthPedA/L/Rank-1",
             "SynthPedA/L/mAP"],
    notes=["Paper (HPLF, Table 4): the local branch helps most under misalignment; here the same budget for both."],
))

# ---------------------------------------------------------------------------------------------------- mmt
_MM = "projects/MMT/configs/SynthPedA-SynthPedB"
_JI_MMT_SRC = "projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml"


def _mmt_stages(tag: str, src_cfg: str, mmt_cfg: str, src_opts: Tuple[str, ...] = _AB) -> Dict[str, Stage]:
    return {
        f"src_{tag}": Stage(f"src_{tag}", src_cfg, src_opts),
        f"src2_{tag}": Stage(f"src2_{tag}", src_cfg, src_opts, seed_offset=1000),
        f"mmt_{tag}": Stage(f"mmt_{tag}", mmt_cfg, (),
                            weights=(("MODEL.MMT.WEIGHTS_1", f"src_{tag}"), ("MODEL.MMT.WEIGHTS_2", f"src2_{tag}")),
                            measure=("mmt_pseudo_labels",)),
    }


register_comparison(Comparison(
    name="mmt",
    description="SynthPedA (labelled source) -> SynthPedB (unlabelled target), ImageNet MobileNetV2: source-only "
                "models (Baseline and RBNet, the configs of the rbnet comparison) evaluated on SynthPedB, then MMT "
                "from two source models of each kind (seeds s and s + 1000); the MobileNetV2 MMT configs cluster with "
                "k-means (100 clusters, MMT-500 scaled to SynthPedB's 150 ids: DBSCAN at MMT's eps rule could not "
                "start from these sources), the JointIBN arm with DBSCAN. Pseudo-label quality of the "
                "clustering of SynthPedB's train images: at the first clustering (the source models' mean nets) "
                "and with the final mean nets (pl_init/, pl_final/: clusters, outliers, ARI against the true ids, "
                "outliers counted as singletons).",
    stages={**_mmt_stages("base", f"{_RB}/baseline_mnv2.yml", f"{_MM}/mmt_mnv2.yml"),
            **_mmt_stages("rbnet", f"{_RB}/rbnet_mnv2.yml", f"{_MM}/mmt_rbnet_mnv2.yml"),
            **_mmt_stages("ibnbg", _JI_MMT_SRC, f"{_MM}/mmt_R18-ibn_bg.yml",
                          _t("DATASETS.NAMES", '("SynthPedA",)', "DATASETS.TESTS", '("SynthPedB",)')),
            "adabn_base": Stage("adabn_base", f"{_RB}/baseline_mnv2.yml", _AB,
                                weights=(("MODEL.WEIGHTS", "src_base"),), eval_only=True, measure=("adabn",)),
            "oracle": Stage("oracle", f"{_RB}/baseline_mnv2.yml",
                            _t("DATASETS.NAMES", '("SynthPedB",)', "DATASETS.TESTS", '("SynthPedB",)'))},
    arms=[Arm("source-only Baseline", ("src_base",)), Arm("source-only RBNet", ("src_rbnet",)),
          Arm("source-only Baseline + AdaBN", ("src_base", "adabn_base")),
          Arm("MMT", ("src_base", "src2_base", "mmt_base"), include=(("src_base", "source/"),)),
          Arm("MMT + RBNet", ("src_rbnet", "src2_rbnet", "mmt_rbnet"), include=(("src_rbnet", "source/"),)),
          Arm("MMT + JointIBN (R18-IBN, bg removal)", ("src_ibnbg", "src2_ibnbg", "mmt_ibnbg"),
              include=(("src_ibnbg", "source/"),)),
          Arm("oracle: Baseline trained on SynthPedB labels", ("oracle",))],
    metrics=["SynthPedB/Rank-1", "SynthPedB/mAP", "SynthPedB/mean1/mAP", "source/SynthPedB/mAP",
             "adabn/SynthPedB/Rank-1", "adabn/SynthPedB/mAP", "pl_init/clusters",
             "pl_init/outliers", "pl_init/ARI", "pl_final/clusters", "pl_final/outliers", "pl_final/ARI"],
    plot_metrics=["SynthPedB/Rank-1", "SynthPedB/mAP", "pl_init/ARI", "pl_final/ARI"],
    notes=["source-only Baseline + AdaBN: the seed's source model with its BatchNorm statistics re-estimated on "
           "SynthPedB's train images (a diagnostic, not MMT; fastreid_ext/mmt/evaluation.py). The oracle is the "
           "Baseline trained with SynthPedB's labels, same budget (a reference). MMT + JointIBN is ResNet-18 IBN-a from "
           "scratch with background removal (the R18 configs), not the MobileNetV2.",
           "MMT's SynthPedB/Rank-1 and mAP are those of the better mean net on the test set (MMT's code keeps the "
           "better one); SynthPedB/mean1/mAP is mean net 1 alone, chosen without looking at the test set.",
           "Paper (Ge, Chen & Li, MMT, ICLR 2020): Market-1501 -> DukeMTMC 65.1 mAP (ResNet-50, MMT-DBSCAN); "
           "SynthPed is not that regime."],
))

# ---------------------------------------------------------------------------------------------------- jointibn
_JI = "projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml"
#: every run the same iterations and LR schedule: fixed 50-iteration epochs (joint has twice the images)
_JI_BUDGET = _t("SOLVER.ITERS_PER_EPOCH", 50, "SOLVER.MAX_EPOCH", 6, "SOLVER.STEPS", "[4,5]", "SOLVER.WARMUP_ITERS", 30,
                "SOLVER.CHECKPOINT_PERIOD", 6, "TEST.EVAL_PERIOD", 6)


def _ji(name, domains, bg, ibn=True) -> Stage:
    return Stage(name, _JI, _JI_BUDGET + _t("DATASETS.NAMES", "(" + ",".join(f'"{d}"' for d in domains) + ",)",
                                            "MODEL.JOINT_IBN.ENABLED", bg, "DATASETS.ANNOTATIONS.LOAD_MASKS", bg,
                                            "MODEL.BACKBONE.WITH_IBN", ibn))


_JM = "projects/JointIBN/configs/SynthPed"
register_comparison(Comparison(
    name="jointibn",
    description="JointIBN on SynthPed, tested on the unseen SynthPedB. From the ImageNet MobileNetV2 (128 x 64, the "
                "configs' 150 iterations for every run): joint (SynthPedA + SynthPedC) vs single-domain (SynthPedA) "
                "training, with vs without background removal (SynthPed's exact person masks, train and test; and "
                "the same joint / single bg-removal configs with the masks of a real segmenter, mediapipe 0.10.14, "
                "extracted once for the splits the runs read). IBN-a vs none on ResNet-18 from scratch only (FastReID's IBN-a exists for ResNets alone; no ImageNet "
                "weights for it here): joint_R18-ibn.yml at 64 x 32, 300 iterations (6 epochs of 50) for every run.",
    stages={"joint_bg": Stage("joint_bg", f"{_JM}/joint_mnv2.yml"),
            "joint": Stage("joint", f"{_JM}/joint_mnv2_nobg.yml"),
            "single_bg": Stage("single_bg", f"{_JM}/single_mnv2.yml"),
            "single": Stage("single", f"{_JM}/single_mnv2_nobg.yml"),
            "joint_bg_mp": Stage("joint_bg_mp", f"{_JM}/joint_mnv2.yml", masks="mediapipe",
                                 measure=("segmenter_masks",)),
            "single_bg_mp": Stage("single_bg_mp", f"{_JM}/single_mnv2.yml", masks="mediapipe",
                                  measure=("segmenter_masks",)),
            "r18_joint_bg_ibn": _ji("r18_joint_bg_ibn", ("SynthPedA", "SynthPedC"), True),
            "r18_joint_bg": _ji("r18_joint_bg", ("SynthPedA", "SynthPedC"), True, ibn=False),
            "r18_joint_ibn": _ji("r18_joint_ibn", ("SynthPedA", "SynthPedC"), False),
            "r18_joint": _ji("r18_joint", ("SynthPedA", "SynthPedC"), False, ibn=False)},
    arms=[Arm("MNv2 joint + bg removal", ("joint_bg",)), Arm("MNv2 joint", ("joint",)),
          Arm("MNv2 single + bg removal", ("single_bg",)), Arm("MNv2 single", ("single",)),
          Arm("MNv2 joint + bg removal (mediapipe masks)", ("joint_bg_mp",)),
          Arm("MNv2 single + bg removal (mediapipe masks)", ("single_bg_mp",)),
          Arm("R18 joint + bg removal, IBN-a", ("r18_joint_bg_ibn",)), Arm("R18 joint + bg removal", ("r18_joint_bg",)),
          Arm("R18 joint, IBN-a", ("r18_joint_ibn",)), Arm("R18 joint", ("r18_joint",))],
    metrics=["SynthPedB/Rank-1", "SynthPedB/mAP", "SynthPedB/mINP", "masks/SynthPedB/IoU", "masks/SynthPedB/no_person",
             "masks/train/IoU", "masks/train/no_person"],
    plot_metrics=["SynthPedB/Rank-1", "SynthPedB/mAP", "SynthPedB/mINP"],
    notes=["IBN vs none is on ResNet-18 from scratch only (projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml with "
           "MODEL.BACKBONE.WITH_IBN True / False); the MobileNetV2 arms have no IBN.",
           "Background removal uses SynthPed's exact masks, except in the '(mediapipe masks)' arms: the same configs "
           "(joint_mnv2.yml, single_mnv2.yml) and budget with the masks of mediapipe 0.10.14's person segmentation "
           "(fastreid_ext/segmentation, pose segmentation with selfie fallback), extracted once by the runner into "
           "<datasets' parent>/masks_mediapipe/ for the images a run reads (a training set's train split, a test "
           "set's query + gallery); "
           "images where it finds no person are used unmasked (DATASETS.ANNOTATIONS.ON_MISSING empty, logged). "
           "Extraction runs on the CPU (mediapipe has no GPU path here), before the runs.",
           "masks/...: measurement segmenter_masks of the mediapipe arms (fastreid_ext/joint_ibn/measures.py): IoU is "
           "the mean IoU of the mediapipe masks with SynthPed's exact masks over the images that have one, no_person "
           "the fraction of images without a person found; SynthPedB: its query + gallery images, train: the "
           "training images of the run's train sets."],
))

# ---------------------------------------------------------------------------------------------------- posetransfer
_PT = "projects/PoseTransfer/configs/SynthPedA-SynthPedB"
_NO_SRC = _t("TRANSFER.SOURCE_WEIGHTS", "", "MODEL.BACKBONE.PRETRAIN", "False")


def _pt_arm_stages(tag: str, source: str, transfer_cfg: str) -> Dict[str, Stage]:
    return {
        f"transfer_{tag}": Stage(f"transfer_{tag}", f"{_PT}/{transfer_cfg}", _t("TRANSFER.FRACTION", "1.0"),
                                 weights=(("TRANSFER.SOURCE_WEIGHTS", source),), seed_keys=("TRANSFER.FRACTION_SEED",)),
        f"notarget_{tag}": Stage(f"notarget_{tag}", f"{_PT}/{transfer_cfg}", _NO_SRC,
                                 weights=(("MODEL.WEIGHTS", source),), eval_only=True),
    }


register_comparison(Comparison(
    name="posetransfer",
    description="PoseTransfer, SynthPedA -> SynthPedB, ImageNet MobileNetV2: the fine-tuning baseline, Model A and "
                "Model B (paper's Table 2 columns) with all of SynthPedB's training identities (TRANSFER.FRACTION 1.0); "
                "per seed: E_I + C_v trained on SynthPedA (source_mobilenetv2.yml), E_A of Model A / B on top of it "
                "(source_modelA/B_mobilenetv2.yml), then each arm's transfer config; no_target/: the arm's source "
                "model evaluated on SynthPedB with the transfer config, no target training. RR/: after "
                "verification re-ranking of the top 100.",
    stages={"source": Stage("source", f"{_PT}/source_mobilenetv2.yml"),
            "source_A": Stage("source_A", f"{_PT}/source_modelA_mobilenetv2.yml",
                              weights=(("TRANSFER.SOURCE_WEIGHTS", "source"),)),
            "source_B": Stage("source_B", f"{_PT}/source_modelB_mobilenetv2.yml",
                              weights=(("TRANSFER.SOURCE_WEIGHTS", "source"),)),
            **_pt_arm_stages("baseline", "source", "baseline_mobilenetv2.yml"),
            **_pt_arm_stages("A", "source_A", "modelA_mobilenetv2.yml"),
            **_pt_arm_stages("B", "source_B", "modelB_mobilenetv2.yml")},
    arms=[Arm("Baseline", ("source", "transfer_baseline"), include=(("notarget_baseline", "no_target/"),)),
          Arm("Model A", ("source", "source_A", "transfer_A"), include=(("notarget_A", "no_target/"),)),
          Arm("Model B", ("source", "source_B", "transfer_B"), include=(("notarget_B", "no_target/"),))],
    metrics=["SynthPedB/Rank-1", "SynthPedB/mAP", "SynthPedB/RR/Rank-1", "SynthPedB/RR/mAP",
             "no_target/SynthPedB/Rank-1", "no_target/SynthPedB/mAP"],
    notes=["Paper, Table 2 (Market-1501 -> DukeMTMC-reID, Top-1 / mAP, all target identities): 38.4 / 23.0, "
           "57.6 / 37.5, 60.2 / 40.9 (columns as printed; see projects/PoseTransfer/README.md)."],
))


def _pt_fraction_comparison(fractions=(0.6, 0.2)) -> Comparison:
    base = get_comparison("posetransfer")
    stages = {k: v for k, v in base.stages.items() if k.startswith("source")}
    arms = []
    for f in fractions:
        for tag, src, cfg, label in (("baseline", "source", "baseline_mobilenetv2.yml", "Baseline"),
                                     ("A", "source_A", "modelA_mobilenetv2.yml", "Model A"),
                                     ("B", "source_B", "modelB_mobilenetv2.yml", "Model B")):
            name = f"transfer_{tag}_f{f}"
            stages[name] = Stage(name, f"{_PT}/{cfg}", _t("TRANSFER.FRACTION", f),
                                 weights=(("TRANSFER.SOURCE_WEIGHTS", src),), seed_keys=("TRANSFER.FRACTION_SEED",))
            chain = ("source",) + (() if src == "source" else (src,)) + (name,)
            arms.append(Arm(f"{label}, fraction {f}", chain))
    return Comparison(
        name="posetransfer_fractions",
        description="PoseTransfer with a fraction of SynthPedB's training identities (TRANSFER.FRACTION, drawn with "
                    "the seed): the posetransfer comparison's source stages (shared) and transfer configs.",
        stages=stages, arms=arms, metrics=["SynthPedB/Rank-1", "SynthPedB/mAP", "SynthPedB/RR/Rank-1",
                                           "SynthPedB/RR/mAP"],
        notes=["Paper, Table 2 (Market-1501 -> DukeMTMC-reID, Top-1 / mAP): fraction 0.6: 36.4 / 21.8, 54.7 / 34.6, "
               "57.5 / 38.1; fraction 0.2: 31.7 / 18.7, 42.5 / 25.2, 45.0 / 28.2 (columns as printed)."])


register_comparison(_pt_fraction_comparison())

# ---------------------------------------------------------------------------------------------------- posegan
_PG = "projects/PoseTransfer/configs/SynthPed-GAN"
#: part 1's transfer configs (MobileNetV2) with the pose-GAN's E_I: ResNet-18 from scratch, last stride 1, 512-d
#: (the backbone of stage1_baseline.yml, configs/Base-SynthPed.yml)
_PG_R18 = _t("MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM",
             512, "MODEL.BACKBONE.LAST_STRIDE", 1, "MODEL.BACKBONE.PRETRAIN", False)
#: budgets (iterations = ITERS_PER_EPOCH x MAX_EPOCH; evaluation once, at the end; keep TEST.EVAL_PERIOD = MAX_EPOCH).
#: Stage I: batch 64 (Base-SynthPed); stages II / III: batch 16 = 4 x 4 (Base-gan.yml); a checkpoint every 2 epochs
#: (for --resume; a stage-III checkpoint is ~320 MB with D_i and both optimizers)
_PG_S1_BUDGET = _t("SOLVER.ITERS_PER_EPOCH", 50, "SOLVER.MAX_EPOCH", 4, "SOLVER.STEPS", "[3]",
                   "SOLVER.WARMUP_ITERS", 10, "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 4)  # 200 iterations
_PG_S2_BUDGET = _t("SOLVER.ITERS_PER_EPOCH", 50, "SOLVER.MAX_EPOCH", 6, "SOLVER.STEPS", "[5]",
                   "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 6)                     # 300 iterations
_PG_S3_BUDGET = _t("SOLVER.ITERS_PER_EPOCH", 50, "SOLVER.MAX_EPOCH", 10, "SOLVER.STEPS", "[8]",
                   "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 10)                    # 500 iterations
#: Model B's source stage (E_A on the frozen E_I, SynthPedA, batch 64) and transfer (SynthPedB, batch 64): the configs'
#: own budgets, written out (source_modelB_mobilenetv2.yml: 2 epochs of SynthPedA = 2 x 1,810 // 64; Base-transfer.yml)
_PG_SRCB_BUDGET = _t("SOLVER.ITERS_PER_EPOCH", 28, "SOLVER.MAX_EPOCH", 2, "SOLVER.STEPS", "[3]",
                     "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 2)                   # 56 iterations
_PG_B_BUDGET = _t("SOLVER.ITERS_PER_EPOCH", 16, "SOLVER.MAX_EPOCH", 3, "SOLVER.STEPS", "[2]",
                  "SOLVER.CHECKPOINT_PERIOD", 3, "TEST.EVAL_PERIOD", 3)                      # 48 iterations
#: stage III in both arms: G at 1e-4, E_I at 1e-5 (ENCODER_LR_FACTOR 0.1; FD-GAN's 1e-5 / 1e-6 would hardly move E_I)
_PG_S3 = _t("SOLVER.BASE_LR", "0.0001")
#: D_i left out of stage II (as measured in projects/PoseTransfer/README.md; its ResNet-18 copy is costly: stage III
#: takes 13.2 s per iteration with it, 4.1 without, 128 x 64 on one core)
_PG_S2 = _t("MODEL.POSE_TRANSFER.GAN.LOSS.ADV_ID", "0.0")
#: the supervised arm: stage III with the four GAN terms at 0 (C_v's BCE x 10 alone, same trainer and budget)
_PG_NOGAN = _t(*(x for k in ("ADV_ID", "ADV_POSE", "RECON", "SAME_POSE")
                 for x in (f"MODEL.POSE_TRANSFER.GAN.LOSS.{k}", "0.0")))


def _pg_arm_stages(tag: str, extra: Tuple[str, ...], s3_budget: Tuple[str, ...]) -> Dict[str, Stage]:
    return {
        f"stage3_{tag}": Stage(f"stage3_{tag}", f"{_PG}/stage3_joint.yml", s3_budget + _PG_S3 + extra,
                               weights=(("TRANSFER.SOURCE_WEIGHTS", "stage2"),)),
        f"srcB_{tag}": Stage(f"srcB_{tag}", f"{_PT}/source_modelB_mobilenetv2.yml", _PG_R18 + _PG_SRCB_BUDGET,
                             weights=(("TRANSFER.SOURCE_WEIGHTS", f"stage3_{tag}"),)),
        f"B_{tag}": Stage(f"B_{tag}", f"{_PT}/modelB_mobilenetv2.yml", _PG_R18 + _PG_B_BUDGET,
                          weights=(("TRANSFER.SOURCE_WEIGHTS", f"srcB_{tag}"),), seed_keys=("TRANSFER.FRACTION_SEED",)),
    }


def _pg_iters(budget: Tuple[str, ...]) -> str:
    b = dict(zip(budget[::2], budget[1::2]))
    return f"{int(b['SOLVER.ITERS_PER_EPOCH']) * int(b['SOLVER.MAX_EPOCH'])}"


#: a GAN arm of the posegan comparisons: (stage tag, arm name, stage III overrides, what its stage III runs)
_PG_GAN_DI = ("gan", "Model B, E_I from GAN pre-training", (),
              "keeps stage3_joint.yml's D_i (LOSS.ADV_ID 1): FD-GAN's full loss")
_PG_GAN_NO_DI = ("gan", "Model B, E_I from GAN pre-training (D_i off)", _PG_S2,
                 "runs without D_i (LOSS.ADV_ID 0, as in stage II): FD-GAN's D_p + L1 + same-pose terms")


def _posegan_comparison(name: str, s1_budget: Tuple[str, ...], s2_budget: Tuple[str, ...],
                        s3_budget: Tuple[str, ...], gan_arms: Sequence[Tuple[str, str, Tuple[str, ...], str]],
                        extra_notes: Sequence[str] = ()) -> Comparison:
    """The GAN-vs-supervised E_I comparison with the given stage I / II / III budgets and GAN arms (``_PG_GAN_*``:
    with or without D_i in stage III); the supervised arm is always there."""
    gan_stages: Dict[str, Stage] = {}
    arms = []
    for tag, label, extra, _ in gan_arms:
        gan_stages.update(_pg_arm_stages(tag, extra, s3_budget))
        arms.append(Arm(label, ("stage1", "stage2", f"stage3_{tag}", f"srcB_{tag}", f"B_{tag}"),
                        include=((f"srcB_{tag}", "source/"), (f"stage3_{tag}", "E_I/"))))
    arms.append(Arm("Model B, E_I from supervised training (same budget)",
                    ("stage1", "stage2", "stage3_sup", "srcB_sup", "B_sup"),
                    include=(("srcB_sup", "source/"), ("stage3_sup", "E_I/"))))
    di = "; ".join(f"{label}: stage III {what}" for _, label, _, what in gan_arms)
    return Comparison(
        name=name,
        description="Does FD-GAN's pose-guided generator pre-training (Ge et al., FD-GAN: Pose-guided Feature "
                    "Distilling GAN for Robust Person Re-identification, NeurIPS 2018) give part 1's Model B a better "
                    "E_I than plain supervised training with the same budget? SynthPedA -> SynthPedB, ResNet-18 E_I "
                    "from scratch at 128 x 64. Per seed (pre-training included, so the spread covers it): stage I, "
                    f"E_I + C_v on SynthPedA (stage1_baseline.yml, {_pg_iters(s1_budget)} iterations at batch 64); "
                    f"stage II, E_P + G + D_p with E_I frozen (stage2_gan.yml, D_i left out, {_pg_iters(s2_budget)} "
                    f"iterations at batch 16); stage III (stage3_joint.yml, {_pg_iters(s3_budget)} iterations at "
                    "batch 16, G 1e-4, E_I 1e-5) in arms that share stages I and II and differ only in stage "
                    "III's GAN loss weights: FD-GAN's GAN + L1 + same-pose terms + C_v's BCE x 10, or C_v's BCE x 10 "
                    "alone (the GAN weights at 0: supervised training, same trainer, same iterations). Then, for "
                    "each arm, Model B's E_A on the frozen E_I on SynthPedA (source_modelB_mobilenetv2.yml with the "
                    f"ResNet-18 E_I, {_pg_iters(_PG_SRCB_BUDGET)} iterations) and Model B's transfer to SynthPedB "
                    f"with all its training identities (modelB_mobilenetv2.yml, {_pg_iters(_PG_B_BUDGET)} "
                    "iterations, TRANSFER.FRACTION_SEED = seed). RR/: after verification re-ranking of the top 100; "
                    "source/: the Model B source stage on SynthPedA; E_I/: E_I's own feature on SynthPedA after "
                    f"stage III. {di}.",
        stages={"stage1": Stage("stage1", f"{_PG}/stage1_baseline.yml", s1_budget),
                "stage2": Stage("stage2", f"{_PG}/stage2_gan.yml", s2_budget + _PG_S2,
                                weights=(("TRANSFER.SOURCE_WEIGHTS", "stage1"),)),
                **gan_stages,
                **_pg_arm_stages("sup", _PG_NOGAN, s3_budget)},
        arms=arms,
        metrics=["SynthPedB/Rank-1", "SynthPedB/mAP", "SynthPedB/RR/Rank-1", "SynthPedB/RR/mAP",
                 "source/SynthPedA/Rank-1", "source/SynthPedA/mAP", "E_I/SynthPedA/Rank-1", "E_I/SynthPedA/mAP"],
        plot_metrics=["SynthPedB/Rank-1", "SynthPedB/mAP", "E_I/SynthPedA/mAP"],
        notes=["All arms start stage III from the same stage-II checkpoint (E_I as stage I left it) and run the "
               "same trainer for the same iterations; the supervised arm's generator and D_p still run but get no "
               "loss (weights 0), D_i is not run in it.",
               "Paper (\"Person re-identification based on transfer learning of pose-invariant domain-dependent "
               "features\", Sec. 3-4, Table 2) uses FD-GAN's Market-1501 pre-training; SynthPed at 128 x 64 on CPU "
               "with a few hundred iterations per stage is not that regime (projects/PoseTransfer/README.md).",
               *extra_notes],
    )


register_comparison(_posegan_comparison("posegan", _PG_S1_BUDGET, _PG_S2_BUDGET, _PG_S3_BUDGET, [_PG_GAN_DI]))

#: a CPU budget for the same protocol (2 cores, one afternoon for 3 seeds): stage I 100 iterations, stage II 300 (as
#: the default: G needs them to use the pose), stage III 200; Model B's stages as the default. Two GAN arms: stage III
#: without D_i (as stage II) and with it (FD-GAN's full loss; D_i about triples a stage-III iteration)
_PG_CPU_S1_BUDGET = _t("SOLVER.ITERS_PER_EPOCH", 50, "SOLVER.MAX_EPOCH", 2, "SOLVER.STEPS", "[3]",
                       "SOLVER.WARMUP_ITERS", 10, "SOLVER.CHECKPOINT_PERIOD", 1, "TEST.EVAL_PERIOD", 2)  # 100
_PG_CPU_S3_BUDGET = _t("SOLVER.ITERS_PER_EPOCH", 50, "SOLVER.MAX_EPOCH", 4, "SOLVER.STEPS", "[3]",
                       "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 4)                       # 200
register_comparison(_posegan_comparison(
    "posegan_cpu", _PG_CPU_S1_BUDGET, _PG_S2_BUDGET, _PG_CPU_S3_BUDGET,
    [_PG_GAN_NO_DI, ("ganDi", _PG_GAN_DI[1] + " (with D_i)") + _PG_GAN_DI[2:]],
    extra_notes=["Reduced CPU budget of the posegan comparison (stage I 100, stage III 200 iterations): a smaller "
                 "pre-training than FD-GAN's, the same iterations for every arm."]))
