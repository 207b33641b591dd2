import pytest
import torch

from labkit import training, zoo


def test_pretrained_digits_vgg_reaches_97_percent_and_is_cached(digits):
    model = zoo.pretrained("vgg-digits", progress=False)
    _, _, test_loader = digits.loaders()
    assert training.evaluate(model, test_loader) >= 97.0
    path = zoo.cache_path("vgg-digits")
    assert path.exists()
    again = zoo.pretrained("vgg-digits")
    for p, q in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert not list(path.parent.glob("*.tmp"))


def test_corrupt_cache_is_retrained_with_a_warning():
    path = zoo.cache_path("mlp-digits")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="corrupt or stale"):
        model = zoo.pretrained("mlp-digits", progress=False)
    assert isinstance(model, torch.nn.Module)
    assert torch.load(path, weights_only=True)["digest"] == zoo.RECIPES["mlp-digits"].digest()


def test_stale_cache_is_retrained(monkeypatch):
    zoo.pretrained("mlp-digits", progress=False)
    path = zoo.cache_path("mlp-digits")
    payload = torch.load(path, weights_only=True)
    payload["digest"] = "stale"
    torch.save(payload, path)
    with pytest.warns(UserWarning, match="digest differs"):
        zoo.pretrained("mlp-digits", progress=False)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    assert zoo.cache_dir() == tmp_path
    assert zoo.cache_path("vgg-digits").parent == tmp_path


def test_recipe_digest_changes_with_the_recipe():
    a = zoo.Recipe("vgg", epochs=3)
    assert a.digest() == zoo.Recipe("vgg", epochs=3).digest()
    assert a.digest() != zoo.Recipe("vgg", epochs=4).digest()


def test_unknown_model_name():
    with pytest.raises(ValueError, match="name must be one of"):
        zoo.pretrained("resnet")


def test_clear_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    (tmp_path / "x.pt").write_bytes(b"")
    (tmp_path / "latency-1.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    assert zoo.clear_cache() == [tmp_path / "latency-1.json", tmp_path / "x.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_write_atomically_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        zoo.write_atomically(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
