from setuptools import find_packages, setup

setup(
    name="sauronnet",
    version="0.1.0",
    description="Self-configuring 3D segmentation (nnU-Net style) whose trainer prunes filters while it trains (Sauron).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sauronnet*", "planners*", "trainers*"]),
    install_requires=[
        # 2.13.0 is the pinned CPU build the Makefile installs first; the range only must admit it.
        "torch>=2.3,<3",
        "numpy>=1.24",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25,<0.26",
        "scikit-image>=0.21",
        # KFold with nnU-Net's exact shuffling (splits_final.json); batchgenerators pulls it in anyway.
        "scikit-learn>=1.2",
        "scipy>=1.10",
        # progress bars for every long stage
        "tqdm>=4.60",
        # progress.png (training curves)
        "matplotlib>=3.6",
    ],
    extras_require={"test": ["pytest>=7"]},
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
        ]
    },
)
