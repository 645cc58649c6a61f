"""Only what pyproject.toml cannot say: besides the code packages, the top-level
``module_manifests/`` folder (the manifest JSON Schema and the example modules) ships inside the
wheel as the data package ``host.module_manifests`` (mapped in pyproject's ``package-dir``), so
an installed host validates manifests and runs the demo without the source tree."""

from setuptools import find_packages, setup

CODE = ["host*", "plugins*", "sandbox*", "crm_module_sdk*", "emulators*"]

setup(packages=[*find_packages(include=CODE), "host.module_manifests"])
