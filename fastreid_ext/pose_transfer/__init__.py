"""Pose-invariant feature transfer: an Additional Encoder E_A and a verification classifier C_v trained on a fraction
of the target data, on top of a frozen source-trained image encoder E_I (pose-transfer paper, "Person
re-identification based on transfer learning of pose-invariant domain-dependent features"; FD-GAN: Ge et al.,
NeurIPS 2018).

``config`` (``add_pose_transfer_config``), ``meta_arch`` (the registered ``PoseTransfer``), ``encoder`` (E_I split at
its last block, any backbone), ``additional_encoder`` (E_A), ``verifier`` (C_v), ``norm`` (small-batch-safe BN),
``pairs`` (verification pairs and BCE), ``fraction`` (seeded target-data fraction), ``rerank`` (verification
re-ranking), ``checkpoint`` (source weights into E_I), ``evaluator`` (re-ranking evaluator), ``trainer`` (trainer and
frozen-E_I check). The generator stage (part 2, FD-GAN): ``gan_modules`` (E_P, G, D_i, D_p), ``gan_sampling``
(target poses, same-pose pairs, pose maps), ``meta_arch.PoseGAN`` (registered), ``gan_trainer`` (alternating G / D
updates, two optimizers, resume in step), ``generate`` (pose grids, reconstruction errors;
``tools/generate_poses.py``); its losses are in ``fastreid_ext.functional.pose_gan``. The plain torch / numpy modules
(``pairs``, ``fraction``, ``rerank``, ``norm``, ``verifier``, ``additional_encoder``, ``encoder``, ``checkpoint``,
``gan_modules``, ``gan_sampling``) import without FastReID; the registering modules are imported once FastReID is
(``fastreid_ext``'s registration step, or at once when FastReID is already imported).
"""
import sys

_REGISTERING = ("config", "meta_arch", "evaluator", "trainer", "gan_trainer")


def _register() -> None:
    import importlib

    for name in _REGISTERING:
        importlib.import_module(f"{__name__}.{name}")


if "fastreid" in sys.modules:
    _register()
else:  # a pure module (e.g. .pairs) imported first: register when FastReID comes
    from .. import compat as _compat

    _compat.apply(on_fastreid=_register)


def __getattr__(name):
    if name == "PoseTransfer":
        from .meta_arch import PoseTransfer

        return PoseTransfer
    if name == "add_pose_transfer_config":
        from .config import add_pose_transfer_config

        return add_pose_transfer_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
