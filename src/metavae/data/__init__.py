"""Data: the :class:`Task` protocol and its implementations, context sampling, real MNIST, smallNORB,
and the image families (transformations, smallNORB factors)."""

from metavae.data.context import Context, as_context, sample_without_replacement, subset_index
from metavae.data.dataset_family import DatasetFamily
from metavae.data.families import (
    DATASET_FAMILIES,
    FAMILIES,
    GRIDS,
    IDENTITY,
    NORB_FAMILIES,
    SPLITS,
    FactorSelectedImages,
    FactorSplit,
    ImageFamily,
    TransformedImages,
    canonical_split,
    split_values,
)
from metavae.data.image_task import ImageFamilyTask, load_images
from metavae.data.mnist import ImageSplit, default_data_root, ensure_mnist, fetch_mnist, load_mnist, load_split
from metavae.data.norb import import_smallnorb, load_smallnorb
from metavae.data.physics import TEST_PLANES, TRAIN_PLANES, InclinedPlane, PlaneSimulation
from metavae.data.physics_task import PhysicsTask
from metavae.data.task import HELD_OUT, Batch, Part, Task, sample_batch
from metavae.data.transforms import inverse_matrices, transform_images

__all__ = [
    "FAMILIES", "GRIDS", "HELD_OUT", "InclinedPlane", "PhysicsTask", "PlaneSimulation", "TEST_PLANES", "TRAIN_PLANES", "IDENTITY", "SPLITS", "Batch", "Context", "DatasetFamily", "ImageFamilyTask", "ImageSplit",
    "Part", "Task", "TransformedImages", "as_context", "canonical_split", "default_data_root", "ensure_mnist", "fetch_mnist",
    "inverse_matrices", "load_images", "load_mnist", "load_split", "sample_batch", "sample_without_replacement",
    "split_values", "subset_index", "transform_images",
    "DATASET_FAMILIES", "NORB_FAMILIES", "FactorSelectedImages", "FactorSplit", "ImageFamily", "import_smallnorb", "load_smallnorb",
]
