"""emc, the Embedded Model Converter: trained Keras / TensorLayer networks -> K210 kmodel or MCU C code.

The core installs no framework: it reads .h5 / .keras files itself and runs kmodels and C artefacts.
Extras add what live framework objects, plots and the tests need (README, "Install").
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    """The one version string, emc.__version__, read without importing emc (its dependencies may be absent)."""
    with open(os.path.join(HERE, "emc", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def package_data():
    """Every non-Python file inside the emc packages (C runtime, headers, templates, linker scripts ...), so the
    wheel carries whatever the platforms add without this list being edited."""
    data = {}
    for folder, dirs, files in os.walk(os.path.join(HERE, "emc")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if "__init__.py" not in files:
            continue
        package = os.path.relpath(folder, HERE).replace(os.sep, ".")
        found = []
        for sub, subdirs, subfiles in os.walk(folder):
            subdirs[:] = [d for d in subdirs if d != "__pycache__" and
                          not os.path.exists(os.path.join(sub, d, "__init__.py"))]
            found += [os.path.relpath(os.path.join(sub, name), folder).replace(os.sep, "/") for name in subfiles
                      if not name.endswith((".py", ".pyc"))]
        if found:
            data[package] = sorted(found)
    return data


KERAS = ["tensorflow>=2.16,<3", "keras>=3.3,<4"]
TENSORLAYER = ["tensorlayer>=2.2.5,<2.3", "tensorflow>=2.16,<3", "opencv-python-headless>=4.5", "matplotlib>=3.5"]
PLOT = ["matplotlib>=3.5"]
TEST = ["pytest>=7", "hypothesis>=6", "scikit-learn>=1.2",
        "tflite-micro; platform_system == \"Linux\" and platform_machine == \"x86_64\""]   # TF Lite Micro conformance

setup(
    name="emc",
    version=version(),
    description="Embedded Model Converter: Keras/TensorLayer networks to K210 kmodel v3/v4 and int8 C for MCUs",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["emc", "emc.*"]),
    package_data=package_data(),
    include_package_data=False,
    python_requires=">=3.10,<3.13",
    install_requires=[
        "numpy>=1.26,<3",
        "h5py>=3.10,<4",
        "dissect.cstruct>=4.4,<5",
        "Pillow>=9.5",
        "tqdm>=4.60",
    ],
    extras_require={
        "keras": KERAS,
        "tensorlayer": TENSORLAYER,
        "plot": PLOT,
        "test": TEST,
        "all": sorted(set(KERAS + TENSORLAYER + PLOT)),
    },
    entry_points={"console_scripts": ["emc=emc.cli:main"]},
)
