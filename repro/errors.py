"""The machinery's expected failures, in a leaf module that ``data``, ``jobs`` and ``experiment`` all import
(``experiment.explain`` turns each into one line and an exit status), so none of them imports another for them."""
from __future__ import annotations

__all__ = ["DataError", "DatasetUnavailable", "SchedulerError"]


class DataError(ValueError):
    """The data is there but cannot be used: a broken archive, an unreadable or mis-sized image."""


class DatasetUnavailable(RuntimeError):
    """The requested data set could not be loaded and no fallback was allowed."""


class SchedulerError(ConnectionError):
    """``--scheduler ADDRESS``: no Dask scheduler answers there, or it has no workers."""
