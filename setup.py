"""emc, the Embedded Model Converter: trained Keras / TensorLayer networks -> K210 kmodel or MCU C code."""
from setuptools import find_packages, setup

setup(
    name="emc",
    version="0.1.0",
    description="Embedded Model Converter: Keras/TensorLayer networks to K210 kmodel v3/v4 and int8 C for MCUs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["emc", "emc.*"]),
    package_data={"emc.platforms.c": ["runtime/*.c", "runtime/*.h"],
                  "emc.platforms.stm32": ["runtime/*", "templates/*"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "tensorflow>=2.21,<2.22",
        "tensorlayer==2.2.5",
        "opencv-python-headless",
        "matplotlib",
        "h5py>=3",
        "dissect.cstruct>=4,<5",
        "Pillow",
        "tqdm",
    ],
    extras_require={"test": ["pytest", "hypothesis", "scikit-learn"]},
    entry_points={"console_scripts": ["emc=emc.cli:main"]},
)
