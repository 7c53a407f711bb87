"""The Ray tooling, the only package that imports ray: the engine (``engine``) and the modes that schedule cells on it: ``compare``, ``tune``, ``studies``, ``challenge``."""
