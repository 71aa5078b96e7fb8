"""``capstore dataset``: import, draw, list and show datasets."""

from __future__ import annotations

from pathlib import Path

import click

from capstore.cli.options import db_option


@click.group()
def dataset() -> None:
    """Import datasets (COCO captions, image folders, the demo) and inspect them."""


@dataset.command("add")
@click.argument("name")
@click.option("--coco-captions", type=click.Path(path_type=Path), help="COCO captions annotation JSON.")
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path), help="Folder of the image files.")
@click.option("--split", default=None, help="Split name (default: test for COCO files, all for folders).")
@click.option("--allow-missing-images", is_flag=True, help="Store items whose image file is absent, without image.")
@db_option
def add(name: str, coco_captions: Path | None, images_dir: Path, split: str | None,
        allow_missing_images: bool, db: str | None) -> None:
    """Import a COCO captions file with its images, or a folder of images without references.

    Example: capstore dataset add coco-karpathy --coco-captions captions_karpathy_test.json --images images/
    """
    from capstore.datasets import add_coco, add_images
    from capstore.store import open_store

    store = open_store(db)
    if coco_captions is not None:
        summary = add_coco(store, name, coco_captions, images_dir, split or "test", allow_missing_images)
    else:
        summary = add_images(store, name, images_dir, split or "all")
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

    rows = list_datasets(open_store(db))
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

    splits, samples = show_dataset(open_store(db), name)
    for sp in splits:
        click.echo(f"split {sp.name}: {sp.items} items, {sp.references} references, {sp.images} images ({sp.source})")
    for ext, refs in samples:
        click.echo(f"  item {ext}:")
        for ref in refs:
            click.echo(f"    - {ref}")
