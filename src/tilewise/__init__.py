"""tilewise: parallel, tiled geospatial raster processing.

The public API (``tilewise.ndvi``, ``tilewise.calc``, ...) is loaded lazily so
``import tilewise`` stays cheap in worker processes.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("ndvi", "normdiff", "calc", "focal", "run", "load_job_file")


def __getattr__(name: str) -> Any:
    if name in _API:
        from tilewise import api

        return getattr(api, name)
    if name in ("TilewiseError",):
        from tilewise import errors

        return getattr(errors, name)
    if name == "quicklook":
        from tilewise.quicklook import quicklook

        return quicklook
    if name in ("info", "describe"):
        from tilewise.info import describe

        return describe
    if name in ("split", "merge"):
        from tilewise import sheets

        return getattr(sheets, name)
    if name == "rasterize":
        from tilewise.polygons import rasterize

        return rasterize
    if name in ("reduce", "stats"):
        from tilewise import timeseries

        return getattr(timeseries, name)
    if name == "status":
        from tilewise.status import job_status

        return job_status
    raise AttributeError(f"module 'tilewise' has no attribute {name!r}")


__all__ = ["__version__", *_API, "TilewiseError", "quicklook", "describe", "status", "split", "merge", "reduce", "stats"]
