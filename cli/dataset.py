"""``capstore dataset``: import, draw, list and show datasets."""

from __future__ import annotations

from pathlib import Path

import click

from capstore.cli.options import db_option


@click.group()
def dataset() -> None:
    """Import datasets (COCO, Karpathy, nocaps, VizWiz, TextCaps, CC3M, datasets, MSR-VTT, Clotho, image folders, the demo) and inspect them."""


@dataset.command("add")
@click.argument("name")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--format", "fmt", default=None,
              help="Format of FILE: coco, karpathy, nocaps, vizwiz, textcaps, cc3m, hf, msrvtt, clotho.")
@click.option("--coco-captions", type=click.Path(path_type=Path), help="COCO captions annotation JSON (= --format coco FILE).")
@click.option("--media", "--images", "media_dir", default=None, type=click.Path(path_type=Path),
              help="Folder of the media files (images, videos, audio clips); alone: import a folder of images.")
@click.option("--split", default=None,
              help="Split to import (files with several) or its name (default: from the file, test for COCO, all for folders).")
@click.option("--allow-missing-images", is_flag=True, help="Store items whose media file is absent, without it.")
@click.option("--image-column", default=None, help="--format hf: the image column (default image).")
@click.option("--caption-column", default=None, help="--format hf: the caption column, a string or a list (default caption).")
@db_option
def add(name: str, file: Path | None, fmt: str | None, coco_captions: Path | None, media_dir: Path | None,
        split: str | None, allow_missing_images: bool, image_column: str | None, caption_column: str | None,
        db: str | None) -> None:
    """Import a dataset: FILE of a --format with its --media folder, or a folder of images without references.

    Examples: capstore dataset add msrvtt --format msrvtt test_videodatainfo.json --media TestVideo/ ;
    capstore dataset add coco-karpathy --coco-captions captions_karpathy_test.json --images images/
    """
    from capstore.datasets.add import MissingInput, plan_import, run_import
    from capstore.store import open_store

    try:
        plan = plan_import(file, fmt, coco_captions, media_dir)
    except MissingInput as exc:
        raise click.UsageError(str(exc)) from None
    summaries = run_import(open_store(db), name, plan, split=split, allow_missing=allow_missing_images,
                           image_column=image_column, caption_column=caption_column)
    for summary in summaries:
        click.echo(summary.describe())


@dataset.command("demo")
@click.option("--name", default="demo", show_default=True, help="Dataset name.")
@db_option
def demo(name: str, db: str | None) -> None:
    """Draw the small built-in demo dataset (24 images, 5 references each) into the store."""
    from capstore.datasets import make_demo
    from capstore.store import open_store

    click.echo(make_demo(open_store(db), name).describe())


@dataset.command("list")
@db_option
def list_(db: str | None) -> None:
    """List datasets with their splits, items, references and images."""
    from capstore.datasets.queries import list_datasets
    from capstore.store import open_store

    rows = list_datasets(open_store(db, create=False))
    if not rows:
        click.echo("no datasets (try `capstore dataset demo`)")
    for name, splits in rows:
        for sp in splits:
            click.echo(f"{name}\t{sp.name}\t{sp.items} items\t{sp.references} references\t{sp.images} images")


@dataset.command("show")
@click.argument("name")
@db_option
def show(name: str, db: str | None) -> None:
    """Show a dataset's splits and a few items with their references."""
    from capstore.datasets.queries import show_dataset
    from capstore.store import open_store

    splits, samples = show_dataset(open_store(db, create=False), name)
    for sp in splits:
        click.echo(f"split {sp.name}: {sp.items} items, {sp.references} references, {sp.images} images ({sp.source})")
    for ext, refs in samples:
        click.echo(f"  item {ext}:")
        for ref in refs:
            click.echo(f"    - {ref}")
