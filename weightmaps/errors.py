"""The one exception type the library raises for bad input or an impossible request."""

from __future__ import annotations

__all__ = ["WeightmapsError"]


class WeightmapsError(ValueError):
    """Bad input, bad parameters, or a request this machine cannot serve.

    Subclasses ``ValueError`` so that callers who already catch ``ValueError`` keep working.
    Messages name the offending file, sample, label or parameter.
    """
