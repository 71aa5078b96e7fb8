"""Datasets: importing annotation files of many formats and image folders, the drawn demo dataset, lookups."""

from capstore.datasets.coco import add_coco
from capstore.datasets.demo import make_demo
from capstore.datasets.folder import add_images
from capstore.datasets.formats import FORMATS, add_dataset
from capstore.datasets.importer import ImportSummary
from capstore.datasets.lookup import find_split

__all__ = ["FORMATS", "ImportSummary", "add_coco", "add_dataset", "add_images", "find_split", "make_demo"]
