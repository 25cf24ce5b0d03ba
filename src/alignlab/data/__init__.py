"""Datasets for alignlab: IDX reading, locating data on disk, batching."""

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

__all__ = [
    "DatasetError",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "TensorLoader",
    "cache_dir",
    "candidate_dirs",
    "load_fashion_mnist",
    "locate",
    "normalize",
    "read_idx",
    "write_idx",
]
