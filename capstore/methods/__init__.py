"""Captioning methods run by the engine: MILS (iterative) and single-pass baselines."""

METHODS = ("mils", "blip2", "llava", "openai", "fake")
BASELINES = ("blip2", "llava", "openai", "fake")  # "fake": the scripted test captioner
