"""``capstore eval``: BLEU, METEOR, ROUGE-L, CIDEr, SPICE, CLIPScore and RefCLIPScore of a run."""

from __future__ import annotations

import click

from capstore.cli.options import db_option


@click.command("eval")
@click.argument("run_id", type=int)
@click.option("--candidates", is_flag=True, help="Also BLEU-4 and CIDEr-D of every candidate of the run.")
@click.option("--clip-scorer", default="preset", show_default=True, metavar="SPEC",
              help="CLIPScore scorer: 'preset' (open_clip:ViT-B-32@openai), a preset name or a spec.")
@click.option("--no-clipscore", is_flag=True, help="Skip CLIPScore and RefCLIPScore.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda (CLIPScore).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--analysis", metavar="PATH|off", envvar="CAPSTORE_ANALYSIS",
              help="The analysis mirror that keeps the PTB tokens of texts (default: the store's); "
                   "'off' tokenizes without keeping them [env CAPSTORE_ANALYSIS].")
@db_option
def eval_(run_id: int, candidates: bool, clip_scorer: str, no_clipscore: bool, device: str, quiet: bool,
          analysis: str | None, db: str | None) -> None:
    """Evaluate a run's captions against its split's references; values are stored and reused.

    Example: capstore eval 3 --candidates --clip-scorer open_clip:/models/clip
    """
    from capstore.metrics import evaluate_run
    from capstore.store import open_store

    result = evaluate_run(open_store(db, create=False), run_id, candidates=candidates,
                          clip_scorer=None if no_clipscore else clip_scorer, device=device, progress=not quiet,
                          analysis=analysis)
    click.echo(result.describe())
