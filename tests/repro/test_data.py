"""CIFAR-10 loading through the ImageFolder path on a tiny dataset the test writes; errors name the fix."""
import tarfile

import pytest
import torch

from conftest import CLASSES, write_tree
from repro.data import load_cifar10, to_model_input


def test_folder_tree_loads_and_is_cached(tmp_path):
    pixels = write_tree(tmp_path / "cifar")
    data = load_cifar10(tmp_path / "cifar")
    assert data["classes"] == CLASSES
    assert data["train_x"].shape == (12, 3, 32, 32) and data["train_x"].dtype == torch.uint8
    assert data["test_x"].shape == (6, 3, 32, 32)
    assert data["train_y"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(data["train_x"][5], pixels[("train", "bird", 1)].permute(2, 0, 1))
    assert len(list((tmp_path / "cifar" / ".cache").glob("cifar10-folder-*.pt"))) == 1
    import repro.data as D  # the second load of an unchanged tree reads the cache only

    def no_decoding(*args):
        raise AssertionError("decoded again")

    original, D._folder_split = D._folder_split, no_decoding
    try:
        again = load_cifar10(tmp_path / "cifar")
    finally:
        D._folder_split = original
    assert torch.equal(again["train_x"], data["train_x"])
    x = to_model_input(data["test_x"])
    assert x.dtype == torch.float32 and x.min() >= -0.5 and x.max() <= 0.5


def test_archive_is_extracted_once(tmp_path):
    write_tree(tmp_path / "src" / "cifar10-jpeg", per_class=(2, 1))
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar10-jpeg", arcname="cifar10-jpeg")
    data = load_cifar10(archive, extract_to=tmp_path / "work")
    assert data["train_x"].shape == (6, 3, 32, 32)
    assert (tmp_path / "work" / "cifar10-jpeg-extracted").is_dir()
    assert torch.equal(load_cifar10(archive, extract_to=tmp_path / "work")["test_y"], data["test_y"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10-jpeg.tar.gz", "src", "work"]  # nothing beside it


def test_archive_extracted_meanwhile_by_another_process_is_used(tmp_path, monkeypatch):
    """Two parallel jobs extract one archive: the one that finishes second finds the tree there (its rename onto a
    non-empty folder fails), uses it and leaves no partial extraction behind."""
    write_tree(tmp_path / "src" / "cifar10-jpeg", per_class=(2, 1))
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar10-jpeg", arcname="cifar10-jpeg")
    import shutil

    import repro.data as D

    extractall = tarfile.TarFile.extractall

    def the_other_job_first(self, path, *args, **kwargs):  # the other job's tree lands while this one extracts
        extractall(self, path, *args, **kwargs)
        shutil.copytree(path, tmp_path / "work" / "cifar10-jpeg-extracted")

    monkeypatch.setattr(tarfile.TarFile, "extractall", the_other_job_first)
    root = D.extract_archive(archive, tmp_path / "work")
    assert root == tmp_path / "work" / "cifar10-jpeg-extracted" / "cifar10-jpeg"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["cifar10-jpeg-extracted"]


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"looked for an ImageFolder tree .*train/<class>.*cifar-10-batches-py"):
        load_cifar10(tmp_path / "empty")
    with pytest.raises(ValueError, match="source='hub'.*auto, folder, torchvision"):
        load_cifar10(tmp_path / "empty", source="hub")


def test_experiment_splits_are_disjoint_and_seeded(tmp_path):
    from repro.cifar import experiment_splits

    write_tree(tmp_path / "cifar", per_class=(10, 8))
    data = load_cifar10(tmp_path / "cifar")
    s = experiment_splits(data, n_eval=10, n_fit=12)
    assert len(s["x_train"]) == 24 and len(s["x_eval"]) == 10 and len(s["x_fit"]) == 12
    assert s["x_eval"].min() >= -0.5 and s["x_eval"].max() <= 0.5
    # evaluation and fitting images are different test images
    eval_rows = {tuple(x.flatten()[:20].tolist()) for x in s["x_eval"]}
    assert not eval_rows & {tuple(x.flatten()[:20].tolist()) for x in s["x_fit"]}
    assert torch.equal(experiment_splits(data, 10, 12)["x_fit"], s["x_fit"])
    with pytest.raises(ValueError, match="exceeds the 24 test images"):
        experiment_splits(data, n_eval=20, n_fit=12)


def test_an_archive_put_where_the_error_says_is_found(tmp_path):
    """Issue 24 case 15: the message says 'put one of them in ROOT'; an archive put there is then loaded."""
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(FileNotFoundError, match=rf"put one of them in {root}") as told:
        load_cifar10(root, download=False)
    assert ".tar.gz" in str(told.value)
    write_tree(tmp_path / "src" / "cifar10-jpeg", per_class=(2, 1))
    with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar10-jpeg", arcname="cifar10-jpeg")
    data = load_cifar10(root, download=False)
    assert data["train_x"].shape == (6, 3, 32, 32) and data["classes"] == CLASSES


def test_a_symlink_loop_is_named(tmp_path):
    """Issue 24 case 11: a --data that is a cycle of links gets one error naming it, not a RuntimeError."""
    from repro.data import DataError

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(DataError, match="cycle of symbolic links"):
        load_cifar10(tmp_path / "a", download=False)
