"""Datasets for alignlab: a registry of image and synthetic datasets, IDX and
CIFAR readers, locating and downloading data, reproducible batching.

>>> ds = load("fashion-mnist")                      # doctest: +SKIP
>>> for x, y in batches(ds.train_x, ds.train_y, batch_size=128, mean=ds.mean,
...                     std=ds.std, shuffle=True, seed=0, epoch=3):  # doctest: +SKIP
...     ...
"""

from .batches import batches, normalize_batch, random_crop_flip
from .dataset import Dataset
from .errors import DatasetError
from .idx import read_idx, write_idx
from .loader import TensorLoader
from .locate import cache_dir, candidate_dirs, locate
from .mnist_like import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    load_fashion_mnist,
    normalize,
)
from .registry import load, names
from .teacher import teacher_weight

__all__ = [
    "Dataset",
    "DatasetError",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "TensorLoader",
    "batches",
    "cache_dir",
    "candidate_dirs",
    "load",
    "load_fashion_mnist",
    "locate",
    "names",
    "normalize",
    "normalize_batch",
    "random_crop_flip",
    "read_idx",
    "teacher_weight",
    "write_idx",
]
