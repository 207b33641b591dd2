import pytest
import torch

from labkit import cli, training, zoo


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


def test_corrupt_cache_is_replaced_with_a_warning():
    path = zoo.cache_path("mlp-digits")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="corrupt or stale"):
        model = zoo.pretrained("mlp-digits", progress=False)
    assert isinstance(model, torch.nn.Module)
    assert torch.load(path, weights_only=True)["digest"] == zoo.RECIPES["mlp-digits"].digest()


def test_every_recipe_ships_its_weights_and_they_are_loaded_without_training(tmp_path,
                                                                             monkeypatch):
    assert sorted(path.name for path in zoo.SHIPPED.glob("*.pt")) == sorted(
        zoo.shipped_path(name).name for name in zoo.RECIPES), "run `labkit cache ship`"
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))

    def no_training(*args, **kwargs):
        raise AssertionError("a shipped model must not be trained")

    monkeypatch.setattr(zoo, "_train", no_training)
    for name in zoo.RECIPES:
        model = zoo.pretrained(name, progress=False)
        shipped = torch.load(zoo.shipped_path(name), weights_only=True)
        assert shipped["digest"] == zoo.RECIPES[name].digest()
        for key, value in model.state_dict().items():
            assert torch.equal(value, shipped["state_dict"][key]), (name, key)
        assert zoo.cache_path(name).read_bytes() == zoo.shipped_path(name).read_bytes()


TINY = zoo.Recipe("vgg", epochs=1, options={"widths": [4, "M"]})


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """Only the recipe ``tiny``, an empty shipped folder and an empty cache, all in tmp_path."""
    monkeypatch.setattr(zoo, "RECIPES", {"tiny": TINY})
    monkeypatch.setattr(zoo, "SHIPPED", tmp_path / "weights")
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    zoo.SHIPPED.mkdir()


def test_a_broken_shipped_file_is_skipped_and_the_model_trained(tiny_zoo):
    zoo.shipped_path("tiny").write_bytes(b"a truncated download")
    with pytest.warns(UserWarning, match=r"shipped file .* is corrupt or stale"):
        zoo.pretrained("tiny", progress=False)
    assert torch.load(zoo.cache_path("tiny"), weights_only=True)["digest"] == \
        zoo.RECIPES["tiny"].digest()


def test_ship_copies_this_machines_model_and_drops_stale_versions(tiny_zoo):
    stale = zoo.SHIPPED / f"tiny-{'0' * 16}.pt"
    stale.write_bytes(b"an earlier recipe")
    other = zoo.SHIPPED / f"tiny-digits-{'0' * 16}.pt"
    other.write_bytes(b"another recipe whose name starts alike")
    target = zoo.ship("tiny", progress=False)
    assert target == zoo.shipped_path("tiny")
    assert target.read_bytes() == zoo.cache_path("tiny").read_bytes()
    assert not stale.exists() and other.exists()


def test_stale_cache_is_replaced_with_a_warning(monkeypatch):
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


def test_clear_cache_deletes_only_what_labkit_wrote(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    ours = [zoo.cache_path("vgg-digits"), tmp_path / f"latency-{'0' * 16}.json",
            tmp_path / f"mlp-digits-{'a' * 16}.ptab_cd123.tmp"]
    users = [tmp_path / name for name in ("x.pt", "latency-1.json", "notes.txt",
                                          "my-model.pt", f"vgg-digits-{'a' * 16}.pt.bak")]
    for path in ours + users:
        path.write_bytes(b"")
    (tmp_path / "results.json").mkdir()
    assert zoo.clear_cache() == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in users] + ["results.json"])


def test_clear_cache_of_a_missing_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "missing"))
    assert zoo.clear_cache() == []


def test_cli_cache_clear_keeps_the_users_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    ours = zoo.cache_path("mlp-digits")
    ours.write_bytes(b"")
    (tmp_path / "weights.pt").write_bytes(b"mine")
    assert cli.main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed {ours}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]


def test_pretrained_is_the_same_whatever_the_thread_count(tmp_path, monkeypatch):
    monkeypatch.setitem(zoo.RECIPES, "tiny", zoo.Recipe("vgg", epochs=2,
                                                       options={"widths": [8, "M", 16]}))
    previous = torch.get_num_threads()
    states = {}
    try:
        for threads in (1, 2):
            monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / str(threads)))
            torch.set_num_threads(threads)
            states[threads] = zoo.pretrained("tiny", progress=False).state_dict()
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(previous)
    assert states[1].keys() == states[2].keys()
    for key in states[1]:
        assert torch.equal(states[1][key], states[2][key]), key
    assert not torch.are_deterministic_algorithms_enabled()


def test_recipe_digest_records_threads_and_determinism():
    recipe = zoo.Recipe("vgg")
    assert (recipe.threads, recipe.deterministic) == (training.TRAIN_THREADS, True)
    assert recipe.digest() != zoo.Recipe("vgg", threads=2).digest()
    assert recipe.digest() != zoo.Recipe("vgg", deterministic=False).digest()


def test_cache_file_names_and_digests():
    assert zoo.cache_file("latency", "0123456789abcdef", ".json").name == \
        "latency-0123456789abcdef.json"
    with pytest.raises(ValueError, match="digest must be 16 hex digits"):
        zoo.cache_file("latency", "xyz", ".json")


def test_cli_cache_ship_ships_every_recipe(tiny_zoo, capsys):
    assert cli.main(["cache", "ship"]) == 0
    assert capsys.readouterr().out.endswith(f"tiny: shipped {zoo.shipped_path('tiny')}\n")
    assert zoo.shipped_path("tiny").exists()
