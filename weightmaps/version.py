"""The package version, in one place (read by the package and by the store it writes)."""

__version__ = "0.1.0"
