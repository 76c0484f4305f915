"""Geo engine: coordinate systems, the place hierarchy with its geometry, and point location.

Submodules are imported on demand (``from zhizhi.geo.locator import Locator``) so that importing
the package builds nothing and pulls in no heavy module at import time.
"""
