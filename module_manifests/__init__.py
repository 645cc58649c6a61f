"""Data, not code: the manifest JSON Schema (``schema/``) and the example modules, installed
with the host as the package ``host.module_manifests`` (see setup.py) and read through
``importlib.resources``."""
