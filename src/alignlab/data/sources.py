"""Where each downloadable dataset comes from, with the SHA-256 of every file.

Provenance of the digests (each checked against a second source where one
exists; a file is never used unverified, see :mod:`alignlab.data.download`):

* MNIST: the sizes and SHA-256 sums in TensorFlow Datasets'
  ``tensorflow_datasets/url_checksums/mnist.txt`` (github.com/tensorflow/datasets),
  listed there for the copies at storage.googleapis.com/cvdf-datasets/mnist/.
  The same four digests are pinned for the PyTorch mirror used here
  (ossci-datasets.s3.amazonaws.com/mnist/) by ankane/torchvision-ruby
  (``lib/torchvision/datasets/mnist.rb``), and the sizes equal the original
  yann.lecun.com files, whose MD5s torchvision checks on that mirror.
* Fashion-MNIST: TensorFlow Datasets' ``url_checksums/fashion_mnist.txt``, for
  exactly these URLs.  Verified here as well: the files of the Debian package
  ``dataset-fashion-mnist`` are these files with the gzip header rewritten
  (original file name dropped, time stamp changed), and putting the original
  header back (name flag, mtime 1504176606 for the train files, 1504176627 for
  the test files) reproduces all four digests.  The Debian files' own digests
  therefore differ from the ones below; a located Debian copy is never hashed.
* KMNIST: TensorFlow Datasets' ``url_checksums/kmnist.txt``, for exactly these
  URLs; the same digests are pinned by ankane/torchvision-ruby and by the
  Hugging Face ``kmnist`` loading script.
* CIFAR-10 / CIFAR-100 binary archives: TensorFlow Datasets'
  ``url_checksums/cifar10.txt`` and ``url_checksums/cifar100.txt``, which list
  ``cifar-10-binary.tar.gz`` and ``cifar-100-binary.tar.gz`` (the binary
  versions, not the Python pickles) at these URLs; the same digests are pinned
  by ankane/torchvision-ruby and Julia's MLDatasets for the same URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Remote:
    """One file to download: its URL, published size and SHA-256 (None if unknown)."""

    url: str
    size: int | None
    sha256: str | None

    @property
    def filename(self) -> str:
        """The last component of the URL's path."""
        return urlsplit(self.url).path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """A dataset's files; ``archives`` says they are .tar.gz files to unpack."""

    files: tuple[Remote, ...]
    archives: bool = False


def _idx_files(base: str, table: dict[str, tuple[int, str]]) -> tuple[Remote, ...]:
    return tuple(Remote(base + name, size, digest) for name, (size, digest) in table.items())


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
KMNIST_URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"

SOURCES: dict[str, Source] = {
    "mnist": Source(
        _idx_files(
            MNIST_URL,
            {
                "train-images-idx3-ubyte.gz": (
                    9912422,
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                ),
                "train-labels-idx1-ubyte.gz": (
                    28881,
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                ),
                "t10k-images-idx3-ubyte.gz": (
                    1648877,
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    4542,
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ),
            },
        )
    ),
    "fashion-mnist": Source(
        _idx_files(
            FASHION_MNIST_URL,
            {
                "train-images-idx3-ubyte.gz": (
                    26421880,
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                ),
                "train-labels-idx1-ubyte.gz": (
                    29515,
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                ),
                "t10k-images-idx3-ubyte.gz": (
                    4422102,
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    5148,
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
            },
        )
    ),
    "kmnist": Source(
        _idx_files(
            KMNIST_URL,
            {
                "train-images-idx3-ubyte.gz": (
                    18165135,
                    "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                ),
                "train-labels-idx1-ubyte.gz": (
                    29497,
                    "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                ),
                "t10k-images-idx3-ubyte.gz": (
                    3041136,
                    "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    5120,
                    "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                ),
            },
        )
    ),
    "cifar10": Source(
        (
            Remote(
                CIFAR_URL + "cifar-10-binary.tar.gz",
                170052171,
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            ),
        ),
        archives=True,
    ),
    "cifar100": Source(
        (
            Remote(
                CIFAR_URL + "cifar-100-binary.tar.gz",
                168513733,
                "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
            ),
        ),
        archives=True,
    ),
}
