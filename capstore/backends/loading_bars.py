"""Silencing the model-loading progress bars of transformers and the hub (for ``--quiet``)."""

from __future__ import annotations

import sys


def silence_loading_bars() -> None:
    """No "Loading weights" / download bars from here on, whether transformers is imported yet or not."""
    import huggingface_hub.utils

    # transformers reads the hub's setting when it is first imported; once imported, it has its own switch.
    huggingface_hub.utils.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
