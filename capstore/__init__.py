"""capstore: what a captioning method costs and what it gives, in one cached, resumable SQL store."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("capstore")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
