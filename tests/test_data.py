import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from labkit import data


def test_digits_splits_are_disjoint_stratified_and_normalised(digits):
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == 1797
    assert sizes == [1167, 270, 360]
    assert digits.image_shape == (1, 8, 8)
    assert digits.num_classes == 10
    x_train = digits.train.tensors[0]
    assert abs(x_train.mean().item()) < 1e-5
    assert abs(x_train.std().item() - 1) < 1e-2
    for split in (digits.train, digits.val, digits.test):
        counts = torch.bincount(split.tensors[1], minlength=10)
        assert counts.min() > 0.8 * counts.float().mean()
    rows = {tuple(x.flatten().tolist()) for x in digits.test.tensors[0]}
    assert not rows & {tuple(x.flatten().tolist()) for x in digits.val.tensors[0][:50]}


def test_digits_split_depends_on_seed_only():
    a, b, c = data.load("digits", seed=0), data.load("digits", seed=0), data.load("digits", seed=1)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])


def test_loaders_shuffle_with_seed(digits):
    first = next(iter(digits.loaders(32, seed=3)[0]))[1]
    again = next(iter(digits.loaders(32, seed=3)[0]))[1]
    other = next(iter(digits.loaders(32, seed=4)[0]))[1]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "mnist"}, "name must be one of"),
    ({"name": "digits", "val_fraction": 1.5}, "val_fraction"),
    ({"name": "digits", "test_fraction": 0}, "test_fraction"),
    ({"name": "digits", "val_fraction": 0.5, "test_fraction": 0.5}, "below 1"),
    ({"name": "cifar10"}, "root is required"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load(**kwargs)


def test_bad_batch_size(digits):
    with pytest.raises(ValueError, match="batch_size"):
        digits.loaders(0)


def write_tiny_cifar(folder, images_per_batch=20):
    """Write CIFAR-10-format python batches with a known pattern."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_TEST_BATCH):
        batch = {
            b"data": rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(images_per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_reads_local_batches(tmp_path):
    write_tiny_cifar(tmp_path / data.CIFAR10_FOLDER)
    splits = data.load("cifar10", root=tmp_path, val_fraction=0.2)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (80, 20, 20)
    assert splits.image_shape == (3, 32, 32)
    assert splits.classes[0] == "airplane"
    assert splits.test.tensors[1].tolist() == [i % 10 for i in range(20)]


def test_cifar10_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load("cifar10", root=tmp_path / "nowhere")


def test_cifar10_missing_batch_is_named(tmp_path):
    write_tiny_cifar(tmp_path / data.CIFAR10_FOLDER)
    (tmp_path / data.CIFAR10_FOLDER / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing data_batch_3"):
        data.load("cifar10", root=tmp_path)


def _tiny_archive(tmp_path):
    source = tmp_path / "source"
    write_tiny_cifar(source / data.CIFAR10_FOLDER)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / data.CIFAR10_FOLDER, arcname=data.CIFAR10_FOLDER)
    archive = tmp_path / "cifar.tar.gz"
    archive.write_bytes(buffer.getvalue())
    return archive


def test_download_checks_md5_and_unpacks(tmp_path):
    archive = _tiny_archive(tmp_path)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    folder = data.download_cifar10(tmp_path / "root", url=archive.as_uri(), md5=md5)
    assert folder == tmp_path / "root" / data.CIFAR10_FOLDER
    assert len(data.load("cifar10", root=tmp_path / "root").test) == 20


def test_download_rejects_wrong_checksum_and_leaves_nothing(tmp_path):
    archive = _tiny_archive(tmp_path)
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.download_cifar10(tmp_path / "root", url=archive.as_uri(), md5="0" * 32)
    assert list((tmp_path / "root").iterdir()) == []


def test_subset_loader_takes_the_first_or_a_seeded_random_draw(digits):
    first = data.subset_loader(digits.val, 10, batch_size=4)
    assert [len(labels) for _, labels in first] == [4, 4, 2]
    assert torch.equal(torch.cat([images for images, _ in first]),
                       digits.val.tensors[0][:10])
    drawn = data.subset_loader(digits.val, 150, batch_size=512, seed=0).dataset.indices
    expected = torch.randperm(len(digits.val), generator=torch.Generator().manual_seed(0))
    assert drawn == expected[:150].tolist()
    assert drawn != data.subset_loader(digits.val, 150, batch_size=512, seed=1).dataset.indices


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"size": 0}, r"size must be an int in \[1, 20\], got 0"),
    ({"size": 21}, r"size must be an int in \[1, 20\], got 21"),
    ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
    ({"seed": -1}, "seed"),
])
def test_subset_loader_rejects_bad_arguments(kwargs, match):
    dataset = torch.utils.data.TensorDataset(torch.zeros(20, 1))
    with pytest.raises(ValueError, match=match):
        data.subset_loader(dataset, **{"size": 5, "batch_size": 4, **kwargs})
