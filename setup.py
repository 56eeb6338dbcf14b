from setuptools import find_packages, setup

# planning, training, the torch predictor and sauron_export
TRAIN = [
    # 2.13.0 is the pinned CPU build the Makefile installs first; the range only must admit it.
    "torch>=2.3,<3",
    "batchgenerators>=0.25,<0.26",
    # batchgenerators' augmentations need it; nothing on the prediction path does (kept out of the deploy install)
    "scikit-image>=0.21",
    # KFold with nnU-Net's exact shuffling (splits_final.json); batchgenerators pulls it in anyway.
    "scikit-learn>=1.2",
    # progress.png (training curves)
    "matplotlib>=3.6",
    # sauron_inspect's channel montages (one image, not one plot per channel); matplotlib needs it anyway
    "pillow>=9",
    # sauron_export --onnx: torch's dynamo exporter needs onnxscript; the export is checked in onnxruntime
    "onnx>=1.16",
    "onnxscript>=0.1",
    "onnxruntime>=1.17",
]

setup(
    name="sauronnet",
    version="0.1.0",
    description="Self-configuring 3D segmentation (nnU-Net style) whose trainer prunes filters while it trains (Sauron).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sauronnet*", "planners*", "trainers*"]),
    # The base install predicts with onnxruntime from an exported bundle and never needs torch (sauronnet[deploy]);
    # planning, training, export and the torch predictor need sauronnet[train].
    install_requires=[
        "numpy>=1.24",
        "SimpleITK>=2.2",
        "scipy>=1.10",
        # progress bars for every long stage
        "tqdm>=4.60",
        # .sauron bundles hold their weights as safetensors: read with numpy, nothing unpickled
        "safetensors>=0.4",
    ],
    extras_require={
        "deploy": ["onnxruntime>=1.17"],
        "train": TRAIN,
        "test": ["pytest>=7", *TRAIN],
    },
    entry_points={
        "console_scripts": [
            "sauron_plan_and_preprocess=sauronnet.cli:plan_and_preprocess_main",
            "sauron_demo_data=sauronnet.cli:demo_data_main",
            "sauron_train=sauronnet.cli:train_main",
            "sauron_predict=sauronnet.cli:predict_main",
            "sauron_evaluate=sauronnet.cli:evaluate_main",
            "sauron_info=sauronnet.cli:info_main",
            "sauron_import_nnunet=sauronnet.cli:import_nnunet_main",
            "sauron_demo=sauronnet.cli:demo_main",
            "sauron_export=sauronnet.cli:export_main",
            "sauron_inspect=sauronnet.cli:inspect_main",
        ]
    },
)
