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
    assert len(list((tmp_path / "work").glob("cifar10-jpeg-*-extracted"))) == 1
    assert torch.equal(load_cifar10(archive, extract_to=tmp_path / "work")["test_y"], data["test_y"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10-jpeg.tar.gz", "src", "work"]  # nothing beside it


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


# ---------------------------------------------------------------- data keyed by content, refused by name
def _archive(src, path, mode="w:gz"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        tar.add(src, arcname="cifar10")
    return path


def test_two_archives_of_one_name_are_two_extractions(tmp_path):
    """a/cifar10.tar.gz and b/cifar10.tar.gz: b's images (before: a's extraction was reused by name)."""
    write_tree(tmp_path / "src-a", per_class=(1, 1))
    write_tree(tmp_path / "src-b", per_class=(3, 1), seed=1)
    a = load_cifar10(_archive(tmp_path / "src-a", tmp_path / "a" / "cifar10.tar.gz"), extract_to=tmp_path / "work")
    b = load_cifar10(_archive(tmp_path / "src-b", tmp_path / "b" / "cifar10.tar.gz"), extract_to=tmp_path / "work")
    assert len(a["train_y"]) == 3 and len(b["train_y"]) == 9 and a["sha256"] != b["sha256"]
    assert b["sha256"] == load_cifar10(tmp_path / "src-b")["sha256"]  # the content's hash, whatever its form


def test_the_content_hash_follows_the_images_not_the_path(tmp_path):
    import shutil

    write_tree(tmp_path / "cifar", per_class=(1, 1))
    small = load_cifar10(tmp_path / "cifar")
    shutil.rmtree(tmp_path / "cifar")
    write_tree(tmp_path / "cifar", per_class=(2, 1))
    assert load_cifar10(tmp_path / "cifar")["sha256"] != small["sha256"]
    assert load_cifar10(tmp_path / "cifar", cache=False)["sha256"] == load_cifar10(tmp_path / "cifar")["sha256"]


def test_a_plain_tar_named_tar_gz_or_a_cut_one_is_refused_by_name(tmp_path):
    from repro.data import DataError

    write_tree(tmp_path / "src", per_class=(4, 2))
    plain = _archive(tmp_path / "src", tmp_path / "plain" / "cifar10.tar.gz", mode="w")  # not compressed
    with pytest.raises(DataError, match=r"cifar10\.tar\.gz is named \.tar\.gz but is not gzip-compressed"):
        load_cifar10(plain, extract_to=tmp_path / "work")
    # a tar cut at a member's end, then compressed: every member whole, the end-of-archive blocks missing
    import gzip

    data = (tmp_path / "plain" / "cifar10.tar.gz").read_bytes()
    with tarfile.open(plain) as tar:
        members = tar.getmembers()
    cut = members[len(members) // 2].offset  # the header of a member in the middle: the members before it whole
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cifar10.tar.gz").write_bytes(gzip.compress(data[:cut]))
    with pytest.raises(DataError, match=r"cifar10\.tar\.gz is cut short"):
        load_cifar10(tmp_path / "cut" / "cifar10.tar.gz", extract_to=tmp_path / "work")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []  # no partial extraction left


def _extract_at_once(archive, work, barrier, queue):
    import symmetry.data as D

    barrier.wait()
    try:
        queue.put(len(D.load_cifar10(archive, extract_to=work, cache=False)["train_y"]))
    except Exception as error:  # noqa: BLE001 (reported to the test)
        queue.put(f"{type(error).__name__}: {error}")


def test_two_processes_extract_the_same_archive_at_once(tmp_path):
    """First use of one archive from two processes: both load it (before: OSError [Errno 39] Directory not empty
    in one, and orphan extraction folders left)."""
    import multiprocessing

    write_tree(tmp_path / "src", per_class=(40, 2))
    archive = _archive(tmp_path / "src", tmp_path / "cifar10.tar.gz")
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_extract_at_once, args=(archive, tmp_path / "work", barrier, queue))
               for _ in range(2)]
    for w in workers:
        w.start()
    told = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(60)
    assert told == [120, 120]
    assert [p.name for p in (tmp_path / "work").iterdir()] == [next((tmp_path / "work").glob("cifar10-*-extracted")).name]


def test_a_class_without_training_images_is_refused_with_its_name(tmp_path):
    from repro.data import DataError

    write_tree(tmp_path / "cifar", per_class=(2, 1))
    for image in (tmp_path / "cifar" / "train" / "bird").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"train: class folder\(s\) bird hold no training images"):
        load_cifar10(tmp_path / "cifar")


def test_a_corrupt_torchvision_folder_names_its_files(tmp_path):
    """A cifar-10-batches-py folder with a file missing and one changed: one line naming both (before:
    torchvision's "Dataset not found or corrupted. You can use download=True" traceback)."""
    from repro.data import DataError

    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "test_batch", "batches.meta"):
        (folder / name).write_bytes(b"not the published file")
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "cifar")
    message = str(error.value)
    assert "missing data_batch_5" in message and "corrupt (MD5 differs) data_batch_1" in message
    assert "download=True" not in message and "\n" not in message
