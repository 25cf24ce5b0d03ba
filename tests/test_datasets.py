"""Tests for the dataset registry, CIFAR/IDX loading, downloads, teacher data and batches.

Everything runs on tiny files written here in the real on-disk formats; the
download tests serve them through ``file://`` URLs (and a closed local port
for an unreachable network), never the real servers.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import socket
import tarfile
from pathlib import Path

import pytest
import torch

import alignlab.data as data
from alignlab.data import Dataset, DatasetError, batches, load, names, teacher_weight, write_idx
from alignlab.data.sources import SOURCES, Remote, Source

locate_module = importlib.import_module("alignlab.data.locate")

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IDX_TEST_NAMES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR100_DIR = "cifar-100-binary"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the real cache, $ALIGNLAB_DATA or /usr/share/datasets."""
    monkeypatch.setattr(locate_module, "DEBIAN_ROOT", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ALIGNLAB_DATA", raising=False)
    return tmp_path / "cache" / "alignlab"


# ------------------------------------------------------------ file writers


def write_mnist_like(directory: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> None:
    """Four IDX files; image i of a split has pixel (i, i) = 100 + i, label i % 10."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for (images_name, labels_name), n in ((IDX_NAMES, n_train), (IDX_TEST_NAMES, n_test)):
        images = torch.zeros(n, 28, 28, dtype=torch.uint8)
        for i in range(n):
            images[i, i, i] = 100 + i
        write_idx(directory / (images_name + suffix), images)
        write_idx(directory / (labels_name + suffix), (torch.arange(n) % 10).to(torch.uint8))


def cifar_record(labels: tuple[int, ...], pixels: dict[tuple[int, int, int], int]) -> bytes:
    """One binary CIFAR record, built byte by byte from the documented layout."""
    body = bytearray(3072)
    for (channel, row, col), value in pixels.items():
        body[channel * 1024 + row * 32 + col] = value
    return bytes(labels) + bytes(body)


def write_cifar10(directory: Path, per_batch: int = 2) -> None:
    """Batch k holds labels k, k+1, ...; record j of batch k has R(0, j) = 10k + j,
    G(1, 2) = 7 and B(31, 30) = 250."""
    folder = directory / CIFAR10_DIR
    folder.mkdir(parents=True, exist_ok=True)
    names_ = [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]
    for k, name in enumerate(names_):
        records = [
            cifar_record(
                ((k + j) % 10,),
                {(0, 0, j): 10 * k + j, (1, 1, 2): 7, (2, 31, 30): 250},
            )
            for j in range(per_batch)
        ]
        (folder / name).write_bytes(b"".join(records))


def write_cifar100(directory: Path) -> None:
    """Train: fine labels 57, 99, 0 under coarse labels 19, 3, 12."""
    folder = directory / CIFAR100_DIR
    folder.mkdir(parents=True, exist_ok=True)
    train = [((19, 57), 11), ((3, 99), 22), ((12, 0), 33)]
    blob = b"".join(cifar_record(lab, {(2, 5, 6): v}) for lab, v in train)
    (folder / "train.bin").write_bytes(blob)
    (folder / "test.bin").write_bytes(cifar_record((1, 42), {}))


def make_tar_gz(path: Path, root: Path, arcname: str) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / arcname, arcname=arcname)
    return path.read_bytes()


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


# ------------------------------------------------------------ registry


def test_names() -> None:
    assert names() == ["mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "teacher"]


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        load("svhn")
    message = str(info.value)
    assert "'svhn'" in message
    for name in names():
        assert name in message


def test_options_only_for_teacher(tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "mnist")
    with pytest.raises(ValueError, match=r"'mnist' takes no options, got d_in"):
        load("mnist", data_dir=tmp_path / "mnist", download=False, d_in=3)
    with pytest.raises(ValueError) as info:
        load("teacher", dim=3)
    message = str(info.value)
    assert "dim" in message
    for option in ("d_in", "d_out", "n_train", "n_test", "noise", "task", "seed"):
        assert option in message


# ------------------------------------------------------------ IDX datasets


@pytest.mark.parametrize(
    "name, mean, std",
    [("mnist", 0.1307, 0.3081), ("fashion-mnist", 0.2860, 0.3530), ("kmnist", 0.1918, 0.3483)],
)
def test_mnist_like_datasets(tmp_path: Path, name: str, mean: float, std: float) -> None:
    write_mnist_like(tmp_path / name, gz=name != "kmnist")
    ds = load(name, data_dir=tmp_path / name, download=False)
    assert isinstance(ds, Dataset)
    assert (ds.name, ds.task, ds.num_classes) == (name, "classification", 10)
    assert ds.mean == (mean,) and ds.std == (std,)
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (5, 1, 28, 28) and ds.input_shape == (1, 28, 28)
    assert ds.train_y.dtype == torch.int64 and ds.train_y.tolist() == [i % 10 for i in range(12)]
    assert ds.train_x[7, 0, 7, 7] == 107 and ds.test_x[3, 0, 3, 3] == 103
    assert int(ds.train_x[7].sum()) == 107  # every other pixel is 0


def test_mnist_found_through_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist_like(tmp_path / "env" / "kmnist")
    monkeypatch.setenv("ALIGNLAB_DATA", str(tmp_path / "env"))
    assert load("kmnist", download=False).train_x.shape == (12, 1, 28, 28)


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    write_mnist_like(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-30]))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz.*found \d+"):
        load("mnist", data_dir=tmp_path, download=False)


def test_missing_dataset_without_download(tmp_path: Path, isolated: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load("cifar100", download=False)
    message = str(info.value)
    assert str(isolated / "cifar100") in message and "cifar-100-binary.tar.gz" in message
    assert "\n" not in message
    assert not isolated.exists()  # nothing was downloaded


# ------------------------------------------------------------ CIFAR


def test_cifar10_parsing(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    ds = load("cifar10", data_dir=tmp_path, download=False)
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (2, 3, 32, 32) and ds.input_shape == (3, 32, 32)
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
    # batches 1..5 in order, then labels (k + j) % 10 within batch k (0-based)
    assert ds.train_y.tolist() == [(k + j) % 10 for k in range(5) for j in range(2)]
    assert ds.test_y.tolist() == [5, 6]
    # record j of batch k: red (0, j) = 10k + j, green (1, 2) = 7, blue (31, 30) = 250
    assert ds.train_x[3, 0, 0, 1] == 11  # batch 2 (k=1), record 1
    assert ds.train_x[3, 1, 1, 2] == 7 and ds.train_x[3, 2, 31, 30] == 250
    assert ds.test_x[1, 0, 0, 1] == 51
    assert int(ds.train_x[3].long().sum()) == 11 + 7 + 250


def test_cifar_files_may_be_gzipped(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    plain = load("cifar10", data_dir=tmp_path, download=False)
    path = tmp_path / CIFAR10_DIR / "data_batch_2.bin"
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    packed = load("cifar10", data_dir=tmp_path, download=False)
    assert torch.equal(plain.train_x, packed.train_x) and torch.equal(plain.train_y, packed.train_y)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    ds = load("cifar100", data_dir=tmp_path, download=False)
    assert ds.num_classes == 100
    assert ds.train_y.tolist() == [57, 99, 0] and ds.test_y.tolist() == [42]
    assert ds.train_x[:, 2, 5, 6].tolist() == [11, 22, 33]
    assert ds.mean == (0.5071, 0.4865, 0.4409) and ds.std == (0.2673, 0.2564, 0.2762)


@pytest.mark.parametrize("change", ["extra byte", "missing byte", "empty"])
def test_cifar_partial_record(tmp_path: Path, change: str) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / CIFAR10_DIR / "data_batch_3.bin"
    raw = path.read_bytes()
    path.write_bytes({"extra byte": raw + b"\0", "missing byte": raw[:-1], "empty": b""}[change])
    with pytest.raises(DatasetError) as info:
        load("cifar10", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert "data_batch_3.bin" in message and "3073-byte records" in message
    assert f"found {path.stat().st_size} bytes" in message


def test_cifar100_record_size_is_3074(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    path = tmp_path / CIFAR100_DIR / "test.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DatasetError, match=r"test\.bin.*3074-byte records, found 3073 bytes"):
        load("cifar100", data_dir=tmp_path, download=False)


def test_cifar10_label_out_of_range(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / CIFAR10_DIR / "test_batch.bin").write_bytes(cifar_record((10,), {}))
    with pytest.raises(DatasetError, match=r"test_batch\.bin.*0\.\.9, found 10"):
        load("cifar10", data_dir=tmp_path, download=False)


def test_cifar_missing_batch_is_reported(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / CIFAR10_DIR / "data_batch_4.bin").unlink()
    with pytest.raises(DatasetError, match=r"missing cifar-10-batches-bin/data_batch_4\.bin"):
        load("cifar10", data_dir=tmp_path, download=False)


# ------------------------------------------------------------ downloads


def _serve_idx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """Write IDX .gz files to a 'server' folder and point SOURCES[name] at them."""
    server = tmp_path / "server"
    write_mnist_like(server)
    files = tuple(
        Remote(f"file://{server}/{n}.gz", None, sha256((server / f"{n}.gz").read_bytes()))
        for n in IDX_NAMES + IDX_TEST_NAMES
    )
    monkeypatch.setitem(SOURCES, name, Source(files))
    return server


def _serve_cifar10(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: int = 0, digest: str | None = ""
) -> Path:
    """A cifar-10-binary.tar.gz (optionally cut short) served by file:// URL.

    ``digest`` "" means the hash of the served bytes; None means no known hash.
    """
    write_cifar10(tmp_path / "build")
    server = tmp_path / "server"
    server.mkdir()
    archive = server / "cifar-10-binary.tar.gz"
    blob = make_tar_gz(archive, tmp_path / "build", CIFAR10_DIR)
    if cut:
        archive.write_bytes(blob[:-cut])
    if digest == "":
        digest = sha256(archive.read_bytes())
    remote = Remote(f"file://{archive}", len(blob), digest)
    monkeypatch.setitem(SOURCES, "cifar10", Source((remote,), archives=True))
    return archive


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.startswith("."))


def test_download_idx_into_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    server = _serve_idx(tmp_path, monkeypatch, "kmnist")
    ds = load("kmnist")
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.train_x[5, 0, 5, 5] == 105
    target = isolated / "kmnist"
    for n in IDX_NAMES + IDX_TEST_NAMES:
        assert (target / f"{n}.gz").read_bytes() == (server / f"{n}.gz").read_bytes()
    assert _leftovers(target) == []
    # a second load reads the cache and downloads nothing
    for path in server.iterdir():
        path.unlink()
    assert torch.equal(load("kmnist").train_x, ds.train_x)


def test_download_into_explicit_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    _serve_idx(tmp_path, monkeypatch, "mnist")
    ds = load("mnist", data_dir=tmp_path / "mine")
    assert ds.test_x.shape == (5, 1, 28, 28)
    assert (tmp_path / "mine" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert not isolated.exists()


def test_download_and_unpack_cifar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    _serve_cifar10(tmp_path, monkeypatch)
    ds = load("cifar10")
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.train_x[3, 0, 0, 1] == 11
    target = isolated / "cifar10"
    assert sorted(p.name for p in target.iterdir()) == [CIFAR10_DIR]  # archive removed
    assert len(list((target / CIFAR10_DIR).iterdir())) == 6


def test_archive_placed_by_hand_is_verified_then_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    archive = _serve_cifar10(tmp_path, monkeypatch)
    target = isolated / "cifar10"
    target.mkdir(parents=True)
    placed = target / archive.name
    placed.write_bytes(archive.read_bytes())
    archive.unlink()  # nothing left to download: the placed copy must be used
    assert load("cifar10").train_x.shape == (10, 3, 32, 32)
    assert placed.is_file()  # a file the user put there is not deleted
    placed.write_bytes(placed.read_bytes()[:-1])
    (target / CIFAR10_DIR / "test_batch.bin").unlink()
    with pytest.raises(
        DatasetError, match=r"cifar-10-binary\.tar\.gz: SHA-256 mismatch.*replace it"
    ):
        load("cifar10")


def test_checksum_mismatch_deletes_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    wrong = "0" * 64
    archive = _serve_cifar10(tmp_path, monkeypatch, digest=wrong)
    got = sha256(archive.read_bytes())
    with pytest.raises(DatasetError) as info:
        load("cifar10")
    message = str(info.value)
    assert f"expected {wrong}, got {got}" in message and "\n" not in message
    assert list((isolated / "cifar10").iterdir()) == []  # no temp file, no archive


def test_truncated_download_fails_its_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    full = _serve_cifar10(tmp_path, monkeypatch, cut=0)
    expected = sha256(full.read_bytes())
    full.write_bytes(full.read_bytes()[:-100])  # the server now sends a cut file
    with pytest.raises(DatasetError, match=f"expected {expected}, got [0-9a-f]{{64}}"):
        load("cifar10")
    assert list((isolated / "cifar10").iterdir()) == []


def test_truncated_archive_with_matching_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    _serve_cifar10(tmp_path, monkeypatch, cut=2000)
    with pytest.raises(DatasetError) as info:
        load("cifar10")
    message = str(info.value)
    assert "cifar-10-binary.tar.gz" in message and "could not unpack" in message
    assert list((isolated / "cifar10").iterdir()) == []  # bad archive and staging removed


def _evil_archive(path: Path, member: tarfile.TarInfo, payload: bytes = b"x") -> None:
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(payload) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../escaped.bin"),
        tarfile.TarInfo("cifar-10-batches-bin/../../escaped.bin"),
        tarfile.TarInfo("/tmp/alignlab-absolute-escape.bin"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute"],
)
def test_unsafe_archive_members_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path, member: tarfile.TarInfo
) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    _evil_archive(archive, member)
    remote = Remote(f"file://{archive}", None, sha256(archive.read_bytes()))
    monkeypatch.setitem(SOURCES, "cifar10", Source((remote,), archives=True))
    with pytest.raises(DatasetError, match="refusing to unpack member"):
        load("cifar10")
    assert (
        not (isolated / "escaped.bin").exists() and not (isolated.parent / "escaped.bin").exists()
    )
    assert not Path("/tmp/alignlab-absolute-escape.bin").exists()


def test_links_in_archives_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    link = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _evil_archive(archive, link)
    remote = Remote(f"file://{archive}", None, sha256(archive.read_bytes()))
    monkeypatch.setitem(SOURCES, "cifar10", Source((remote,), archives=True))
    with pytest.raises(DatasetError, match="only plain files and folders"):
        load("cifar10")
    assert not (isolated / "cifar10" / CIFAR10_DIR).exists()


def test_unknown_hash_refuses_to_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    _serve_cifar10(tmp_path, monkeypatch, digest=None)
    with pytest.raises(DatasetError, match="no published SHA-256 is known"):
        load("cifar10")
    assert list((isolated / "cifar10").iterdir()) == []


def test_unreachable_network_says_how_to_install_by_hand(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    with socket.socket() as sock:  # a local port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    files = tuple(
        Remote(f"http://127.0.0.1:{port}/{r.filename}", r.size, r.sha256)
        for r in SOURCES["mnist"].files
    )
    monkeypatch.setitem(SOURCES, "mnist", Source(files))
    with pytest.raises(DatasetError) as info:
        load("mnist")
    message = str(info.value)
    assert "\n" not in message
    assert "is the network reachable" in message
    assert str(isolated / "mnist") in message
    for remote in files:
        assert remote.filename in message
    assert _leftovers(isolated / "mnist") == []


def test_real_sources_table() -> None:
    """Every canonical file has a URL, a size and a well-formed SHA-256."""
    assert set(SOURCES) == set(names()) - {"teacher"}
    for name, source in SOURCES.items():
        for remote in source.files:
            assert remote.sha256 is not None and len(remote.sha256) == 64, name
            int(remote.sha256, 16)
            assert remote.size and remote.size > 1000
    assert SOURCES["cifar10"].files[0].url.endswith("/cifar-10-binary.tar.gz")
    assert (
        SOURCES["mnist"].files[0].url.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
    )


# ------------------------------------------------------------ teacher


def test_teacher_shapes_and_determinism() -> None:
    ds = load("teacher", d_in=7, d_out=3, n_train=50, n_test=20, seed=4)
    assert (ds.name, ds.task, ds.num_classes, ds.mean, ds.std) == (
        "teacher",
        "regression",
        3,
        (),
        (),
    )
    assert ds.train_x.shape == (50, 7) and ds.train_y.shape == (50, 3) and ds.input_shape == (7,)
    assert ds.test_x.shape == (20, 7) and ds.test_y.shape == (20, 3)
    assert ds.train_x.dtype == ds.train_y.dtype == torch.float32
    again = load("teacher", d_in=7, d_out=3, n_train=50, n_test=20, seed=4)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(ds, field), getattr(again, field))
    other = load("teacher", d_in=7, d_out=3, n_train=50, n_test=20, seed=5)
    assert not torch.allclose(ds.train_x, other.train_x)
    assert not torch.allclose(teacher_weight(7, 3, 4), teacher_weight(7, 3, 5))
    # the test set and the teacher do not depend on the training set's size
    bigger = load("teacher", d_in=7, d_out=3, n_train=80, n_test=20, seed=4)
    assert torch.equal(ds.test_x, bigger.test_x) and torch.equal(ds.test_y, bigger.test_y)


def test_teacher_regression_is_exactly_linear() -> None:
    ds = load("teacher", d_in=20, d_out=4, n_train=200, n_test=10, seed=1)
    solution = torch.linalg.lstsq(ds.train_x.double(), ds.train_y.double()).solution
    residual = ds.train_x.double() @ solution - ds.train_y.double()
    assert residual.abs().max() < 1e-5
    assert torch.allclose(solution.float(), teacher_weight(20, 4, 1), atol=1e-5)
    assert torch.allclose(ds.test_x @ teacher_weight(20, 4, 1), ds.test_y, atol=1e-6)


def test_teacher_noise_and_weight_scale() -> None:
    ds = load("teacher", d_in=50, d_out=5, n_train=4000, noise=0.5, seed=2)
    solution = torch.linalg.lstsq(ds.train_x.double(), ds.train_y.double()).solution
    residual = ds.train_x.double() @ solution - ds.train_y.double()
    assert abs(residual.std().item() - 0.5) < 0.03
    weight = teacher_weight(400, 50, 0)
    assert abs(weight.var().item() * 400 - 1) < 0.05  # entries N(0, 1/d_in)


def test_teacher_classification() -> None:
    ds = load("teacher", d_in=10, d_out=4, n_train=300, n_test=30, task="classification", seed=3)
    assert ds.task == "classification" and ds.num_classes == 4
    assert ds.train_y.dtype == torch.int64 and ds.train_y.shape == (300,)
    expected = (ds.train_x @ teacher_weight(10, 4, 3)).argmax(dim=1)
    assert torch.equal(ds.train_y, expected)
    assert ds.train_y.bincount(minlength=4).min() > 30  # every class occurs


@pytest.mark.parametrize(
    "options",
    [{"d_in": 0}, {"n_train": 2.5}, {"noise": -1.0}, {"task": "ranking"}, {"seed": "a"}],
)
def test_teacher_rejects_bad_values(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        load("teacher", **options)


# ------------------------------------------------------------ batches


def _ids(**kwargs: object) -> list[torch.Tensor]:
    ids = torch.arange(103)
    return [x for x, _ in batches(ids.float()[:, None], ids, batch_size=16, **kwargs)]


def test_batches_cover_every_sample_once() -> None:
    ids = torch.arange(103)
    out = list(batches(ids.float()[:, None], ids * 10, batch_size=16, shuffle=True, seed=1))
    assert [len(y) for _, y in out] == [16] * 6 + [7]
    for x, y in out:
        assert torch.equal(y, x[:, 0].long() * 10)  # inputs and targets stay aligned
    assert torch.equal(torch.cat([y for _, y in out]).sort().values, ids * 10)
    dropped = list(batches(ids.float()[:, None], ids, batch_size=16, shuffle=True, drop_last=True))
    assert [len(y) for _, y in dropped] == [16] * 6
    assert len(torch.cat([y for _, y in dropped]).unique()) == 96


def test_batches_unshuffled_keep_order() -> None:
    assert torch.equal(torch.cat(_ids()), torch.arange(103).float()[:, None])


def test_batches_reproducible_from_seed_and_epoch() -> None:
    first = torch.cat(_ids(shuffle=True, seed=7, epoch=3))
    # an uninterrupted run: epochs 0..2, global RNG used in between, then epoch 3
    for epoch in range(3):
        torch.manual_seed(epoch)
        torch.rand(10)
        _ids(shuffle=True, seed=7, epoch=epoch)
    resumed = torch.cat(_ids(shuffle=True, seed=7, epoch=3))
    assert torch.equal(first, resumed)
    assert not torch.equal(first, torch.cat(_ids(shuffle=True, seed=7, epoch=4)))
    assert not torch.equal(first, torch.cat(_ids(shuffle=True, seed=8, epoch=3)))
    assert not torch.equal(first, torch.arange(103).float()[:, None])


def test_synthetic_inputs_pass_through_unchanged() -> None:
    ds = load("teacher", d_in=5, d_out=2, n_train=40, n_test=4)
    x, y = next(batches(ds.train_x, ds.train_y, batch_size=40, mean=ds.mean, std=ds.std))
    assert torch.equal(x, ds.train_x) and torch.equal(y, ds.train_y)


def test_normalisation_per_channel() -> None:
    images = torch.randint(
        0, 256, (6, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    x, _ = next(batches(images, torch.zeros(6), batch_size=6, mean=mean, std=std))
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    assert x.dtype == torch.float32 and torch.allclose(x, expected, atol=1e-5)
    plain, _ = next(batches(images, torch.zeros(6), batch_size=6))
    assert torch.allclose(plain, images.float() / 255)


def test_batches_argument_errors_are_immediate() -> None:
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="samples"):
        batches(x, torch.zeros(5), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        batches(x, torch.zeros(4), batch_size=0)
    with pytest.raises(ValueError, match="3 channels"):
        batches(x, torch.zeros(4), batch_size=2, mean=(0.1, 0.2), std=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"augment=True needs images"):
        batches(torch.zeros(4, 10), torch.zeros(4), batch_size=2, augment=True)


def _augmented(images: torch.Tensor, **kwargs: object) -> torch.Tensor:
    out = batches(images, torch.arange(len(images)), batch_size=len(images), augment=True, **kwargs)
    return next(out)[0]


def test_augment_moves_a_bright_pixel_by_at_most_4() -> None:
    n, row, col = 400, 9, 6
    images = torch.zeros(n, 1, 20, 24, dtype=torch.uint8)
    images[:, 0, row, col] = 255
    out = _augmented(images, seed=3)
    assert out.shape == (n, 1, 20, 24) and out.dtype == torch.float32
    flat = out.view(n, -1)
    assert torch.equal(flat.max(dim=1).values, torch.ones(n))  # the pixel is never cropped away
    assert torch.equal((flat > 0).sum(dim=1), torch.ones(n, dtype=torch.long))
    where = flat.argmax(dim=1)
    rows, cols = where // 24, where % 24
    assert (rows - row).abs().max() <= 4
    unflipped = (cols - col).abs() <= 4
    flipped = (23 - cols - col).abs() <= 4
    assert bool((unflipped | flipped).all())
    assert set(rows.tolist()) == set(range(row - 4, row + 5))  # every vertical offset occurs
    assert 0.4 < flipped.float().mean().item() < 0.6


def test_augment_is_a_crop_then_flip_of_the_padded_image() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 2, 10, 12), dtype=torch.uint8, generator=gen)
    out = (_augmented(images, seed=5, epoch=2) * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    seen_flip = set()
    for i in range(64):
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.equal(
                out[i],
                padded[i, :, dy : dy + 10, dx : dx + 12].flip(-1)
                if flip
                else padded[i, :, dy : dy + 10, dx : dx + 12],
            )
        ]
        assert len(matches) == 1, (i, matches)
        seen_flip.add(matches[0][2])
    assert seen_flip == {False, True}
    assert torch.equal(out, (_augmented(images, seed=5, epoch=2) * 255).round().to(torch.uint8))
    assert not torch.equal(out, (_augmented(images, seed=5, epoch=3) * 255).round().to(torch.uint8))


def test_augment_pads_raw_zeros_before_normalising() -> None:
    images = torch.full((200, 3, 8, 8), 255, dtype=torch.uint8)
    mean, std = (0.5, 0.25, 0.75), (0.5, 0.25, 0.25)
    x, _ = next(batches(images, torch.zeros(200), batch_size=200, augment=True, mean=mean, std=std))
    for c in range(3):
        values = torch.unique(x[:, c])  # sorted: the padding, then the image
        expected = torch.tensor([-mean[c] / std[c], (1 - mean[c]) / std[c]])
        assert values.shape == (2,) and torch.allclose(values, expected)


# ------------------------------------------------------------ real data


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason=f"{REAL_FASHION} absent")
def test_real_fashion_mnist_normalises_to_unit_scale() -> None:
    ds = load("fashion-mnist", data_dir=REAL_FASHION, download=False)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    x, _ = next(batches(ds.train_x, ds.train_y, batch_size=60000, mean=ds.mean, std=ds.std))
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    assert data.load_fashion_mnist(REAL_FASHION)[0].shape == (60000, 28, 28)
