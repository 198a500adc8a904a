"""Doctest collection of the package: skip the optional-extra modules whose extra is missing."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("torch") else ["weightmaps/torch"]
