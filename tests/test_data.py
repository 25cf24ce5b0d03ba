"""Tests for alignlab.data: IDX files, locating datasets, loading, batching."""

from __future__ import annotations

import gzip
import importlib
import struct
from pathlib import Path

import pytest
import torch

from alignlab.data import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    DatasetError,
    TensorLoader,
    load_fashion_mnist,
    locate,
    normalize,
    read_idx,
    write_idx,
)
from alignlab.data.mnist_like import MNIST_FILES

# The package exports the function locate(), which hides the submodule of the same name.
locate_module = importlib.import_module("alignlab.data.locate")

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")
NAME = "fashion-mnist"


# ---------------------------------------------------------------- IDX format


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64]
)
def test_idx_round_trip(tmp_path: Path, suffix: str, dtype: torch.dtype) -> None:
    values = (torch.arange(2 * 3 * 5) * 7 - 40).reshape(2, 3, 5)
    if dtype == torch.uint8:
        values = values.abs()
    tensor = values.to(dtype)
    path = tmp_path / f"data-idx3{suffix}"
    write_idx(path, tensor)
    back = read_idx(path)
    assert back.dtype == dtype
    assert back.shape == (2, 3, 5)
    assert torch.equal(back, tensor)


def test_written_file_is_real_idx_layout(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, torch.tensor([3, 1, 4], dtype=torch.uint8))
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw) == b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes([3, 1, 4])


def test_plain_file_is_not_gzipped(tmp_path: Path) -> None:
    path = tmp_path / "images-idx3-ubyte"
    write_idx(path, torch.zeros(1, 2, 2, dtype=torch.uint8))
    assert path.read_bytes() == b"\x00\x00\x08\x03" + struct.pack(">3I", 1, 2, 2) + bytes(4)


def test_multibyte_values_are_big_endian(tmp_path: Path) -> None:
    path = tmp_path / "handmade-idx1"
    path.write_bytes(b"\x00\x00\x0b\x01" + struct.pack(">I", 2) + struct.pack(">hh", 258, -2))
    assert read_idx(path).tolist() == [258, -2]


def test_compression_is_detected_from_content(tmp_path: Path) -> None:
    path = tmp_path / "plain-but-named.gz"
    path.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 2) + bytes([9, 8]))
    assert read_idx(path).tolist() == [9, 8]


def test_empty_array(tmp_path: Path) -> None:
    path = tmp_path / "empty-idx2.gz"
    write_idx(path, torch.zeros(0, 4, dtype=torch.int32))
    back = read_idx(path)
    assert back.shape == (0, 4) and back.dtype == torch.int32


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bool"):
        write_idx(tmp_path / "x", torch.zeros(2, dtype=torch.bool))


def _valid_idx(path: Path) -> bytes:
    write_idx(path, torch.arange(12, dtype=torch.uint8).reshape(3, 4))
    return path.read_bytes()


def _assert_dataset_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DatasetError) as info:
        read_idx(path)
    message = str(info.value)
    assert path.name in message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    _assert_dataset_error(tmp_path / "nope-idx3-ubyte.gz", "no such file")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "a-directory"
    folder.mkdir()
    _assert_dataset_error(folder, "expected a readable IDX file")


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut-idx2.gz"
    raw = _valid_idx(path)
    path.write_bytes(raw[: len(raw) // 2])
    _assert_dataset_error(path, "truncated")


def test_corrupted_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx2.gz"
    raw = bytearray(_valid_idx(path))
    raw[-8:-4] = bytes(b ^ 0xFF for b in raw[-8:-4])  # break the CRC-32 in the trailer
    path.write_bytes(bytes(raw))
    _assert_dataset_error(path, "gzip", "corrupt")


def test_gzip_of_garbage_deflate_stream(tmp_path: Path) -> None:
    path = tmp_path / "garbage-idx2.gz"
    raw = bytearray(_valid_idx(path))
    raw[10:14] = b"\xff\xff\xff\xff"  # the first bytes of the deflate data
    path.write_bytes(bytes(raw))
    _assert_dataset_error(path, "gzip")


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "magic-idx2"
    raw = _valid_idx(path)
    path.write_bytes(b"\x12\x34" + raw[2:])
    _assert_dataset_error(path, "magic", "0x12340802")


def test_unknown_type_code(tmp_path: Path) -> None:
    path = tmp_path / "type-idx2"
    raw = _valid_idx(path)
    path.write_bytes(b"\x00\x00\x07" + raw[3:])
    _assert_dataset_error(path, "type code", "found 0x07")


def test_header_shorter_than_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "header-idx3"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 5))
    _assert_dataset_error(path, "16-byte header", "found 8 bytes")


def test_file_shorter_than_magic(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00")
    _assert_dataset_error(path, "4-byte IDX magic", "found 2 bytes")


def test_payload_too_short(tmp_path: Path) -> None:
    path = tmp_path / "short-idx2"
    path.write_bytes(_valid_idx(path)[:-1])
    _assert_dataset_error(path, "expected 12 payload bytes", "3x4 uint8", "found 11")


def test_payload_too_long(tmp_path: Path) -> None:
    path = tmp_path / "long-idx2.gz"
    raw = gzip.decompress(_valid_idx(path))
    path.write_bytes(gzip.compress(raw + b"\x00"))
    _assert_dataset_error(path, "expected 12 payload bytes", "found 13")


# ------------------------------------------------------------------ locating


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Isolated stand-ins for every place locate() looks, none holding data yet."""
    debian_root = tmp_path / "debian"
    monkeypatch.setattr(locate_module, "DEBIAN_ROOT", debian_root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ALIGNLAB_DATA", str(tmp_path / "env"))
    return {
        "explicit": tmp_path / "explicit",
        "env": tmp_path / "env" / NAME,
        "env_flat": tmp_path / "env",
        "debian": debian_root / NAME,
        "cache": tmp_path / "cache" / "alignlab" / NAME,
    }


def _fill(directory: Path, gz: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        (directory / (name + (".gz" if gz else ""))).write_bytes(b"")
    return directory


def test_explicit_dir_beats_everything(places: dict[str, Path]) -> None:
    for key in ("explicit", "env", "debian", "cache"):
        _fill(places[key])
    assert locate(NAME, MNIST_FILES, places["explicit"]) == places["explicit"]


def test_env_var_beats_debian_and_cache(places: dict[str, Path]) -> None:
    for key in ("env", "debian", "cache"):
        _fill(places[key])
    assert locate(NAME, MNIST_FILES) == places["env"]


def test_env_var_dir_itself_is_used_when_files_are_directly_in_it(
    places: dict[str, Path],
) -> None:
    for key in ("env_flat", "debian"):
        _fill(places[key])
    assert locate(NAME, MNIST_FILES) == places["env_flat"]


def test_debian_beats_cache(places: dict[str, Path]) -> None:
    for key in ("debian", "cache"):
        _fill(places[key])
    assert locate(NAME, MNIST_FILES) == places["debian"]


def test_cache_is_last_resort(places: dict[str, Path]) -> None:
    _fill(places["cache"], gz=False)  # uncompressed files count too
    assert locate(NAME, MNIST_FILES) == places["cache"]


def test_cache_defaults_to_home(
    places: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home_cache = _fill(tmp_path / "home" / ".cache" / "alignlab" / NAME)
    assert locate(NAME, MNIST_FILES) == home_cache


def test_partial_directory_is_skipped(places: dict[str, Path]) -> None:
    _fill(places["env"])
    (places["env"] / (MNIST_FILES[0] + ".gz")).unlink()
    _fill(places["debian"])
    assert locate(NAME, MNIST_FILES) == places["debian"]


def test_explicit_dir_without_files_is_an_error(places: dict[str, Path]) -> None:
    _fill(places["env"])
    with pytest.raises(DatasetError) as info:
        locate(NAME, MNIST_FILES, places["explicit"])
    message = str(info.value)
    assert str(places["explicit"]) in message
    assert str(places["env"]) not in message


def test_not_found_message_lists_every_place_and_how_to_get_it(places: dict[str, Path]) -> None:
    _fill(places["debian"])
    (places["debian"] / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as info:
        locate(NAME, MNIST_FILES)
    message = str(info.value)
    assert "\n" not in message
    for key in ("env", "env_flat", "debian", "cache"):
        assert str(places[key]) in message
    assert "missing t10k-labels-idx1-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message


# ------------------------------------------------------------------- loading


def _write_split(directory: Path, prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)


def _fake_fashion(directory: Path, n_train: int = 20, n_test: int = 10) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        labels = (torch.arange(n) % 10).to(torch.uint8)
        _write_split(directory, prefix, images, labels)


def test_load_fashion_mnist_small(tmp_path: Path) -> None:
    _fake_fashion(tmp_path)
    train_x, train_y, test_x, test_y = load_fashion_mnist(tmp_path)
    assert train_x.shape == (20, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10, 28, 28)
    assert train_y.dtype == torch.int64 and test_y.dtype == torch.int64
    assert train_y.tolist() == [i % 10 for i in range(20)]
    expected = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert torch.equal(train_x, expected)


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    _fake_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", torch.zeros(9, dtype=torch.uint8))
    with pytest.raises(DatasetError) as info:
        load_fashion_mnist(tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "10 images and 9 labels" in message


def test_wrong_image_size(tmp_path: Path) -> None:
    _fake_fashion(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", torch.zeros(20, 32, 32, dtype=torch.uint8))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz.*\(20, 32, 32\)"):
        load_fashion_mnist(tmp_path)


def test_label_out_of_range(tmp_path: Path) -> None:
    _fake_fashion(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", torch.full((20,), 10, dtype=torch.uint8))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz.*0\.\.9, found 10"):
        load_fashion_mnist(tmp_path)


def test_normalize_values() -> None:
    pixels = torch.tensor([0, 255], dtype=torch.uint8)
    out = normalize(pixels)
    assert out.dtype == torch.float32
    expected = torch.tensor([-FASHION_MNIST_MEAN, 1 - FASHION_MNIST_MEAN]) / FASHION_MNIST_STD
    assert torch.allclose(out, expected)
    assert pixels.tolist() == [0, 255]  # input untouched


# ------------------------------------------------------------------ batching


def _epoch_ids(loader: TensorLoader) -> list[torch.Tensor]:
    return [batch[0] for batch in loader]


def test_loader_covers_every_sample_once_per_epoch() -> None:
    ids = torch.arange(103)
    targets = ids * 10
    loader = TensorLoader(ids, targets, batch_size=16, shuffle=True, seed=0)
    assert len(loader) == 7
    for _ in range(3):
        batches = list(loader)
        assert [len(x) for x, _ in batches] == [16] * 6 + [7]
        for x, y in batches:
            assert torch.equal(y, x * 10)  # rows stay aligned across tensors
        seen = torch.cat([x for x, _ in batches])
        assert torch.equal(seen.sort().values, ids)


def test_loader_shuffles_and_is_reproducible_from_seed() -> None:
    ids = torch.arange(200)
    first = TensorLoader(ids, batch_size=50, shuffle=True, seed=123)
    second = TensorLoader(ids, batch_size=50, shuffle=True, seed=123)
    other = TensorLoader(ids, batch_size=50, shuffle=True, seed=124)
    a1, a2 = torch.cat(_epoch_ids(first)), torch.cat(_epoch_ids(first))
    b1, b2 = torch.cat(_epoch_ids(second)), torch.cat(_epoch_ids(second))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, ids)  # actually shuffled
    assert not torch.equal(a1, a2)  # a new order each epoch
    assert not torch.equal(a1, torch.cat(_epoch_ids(other)))


def test_loader_without_shuffle_keeps_order_and_drop_last() -> None:
    ids = torch.arange(10)
    assert torch.equal(torch.cat(_epoch_ids(TensorLoader(ids, batch_size=4))), ids)
    dropping = TensorLoader(ids, batch_size=4, drop_last=True)
    assert len(dropping) == 2
    assert [len(b) for b in _epoch_ids(dropping)] == [4, 4]


def test_loader_rejects_misaligned_tensors() -> None:
    with pytest.raises(ValueError, match="first dimension"):
        TensorLoader(torch.zeros(3), torch.zeros(4), batch_size=2)


# ------------------------------------------------------------------ real data


@pytest.mark.skipif(not REAL_DIR.is_dir(), reason=f"{REAL_DIR} absent (dataset-fashion-mnist)")
def test_real_fashion_mnist() -> None:
    train_x, train_y, test_x, test_y = load_fashion_mnist(REAL_DIR)
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10000, 28, 28) and test_x.dtype == torch.uint8
    assert train_y.shape == (60000,) and test_y.shape == (10000,)
    assert train_y.bincount(minlength=10).tolist() == [6000] * 10
    assert test_y.bincount(minlength=10).tolist() == [1000] * 10
    pixels = normalize(train_x)
    assert abs(pixels.mean().item()) < 1e-3
    assert abs(pixels.std().item() - 1) < 1e-3
