"""Captioning methods run by the engine: MILS (iterative, on images, videos and audio) and single-pass baselines.

The registry is ``capstore.methods.registry``; ``METHODS`` and ``BASELINES`` are its names.
"""

from capstore.methods.registry import METHOD_SPECS

METHODS = tuple(METHOD_SPECS)
BASELINES = tuple(name for name, spec in METHOD_SPECS.items() if not spec.iterative)  # "fake": the test captioner
