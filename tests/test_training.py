import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from labkit import training
from tests.support.finetuning import finetune_digest, finetuned_state, tiny_model
from tests.support.paths import ROOT


def test_torch_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    with training.torch_threads(None):
        assert torch.get_num_threads() == before
    with training.torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with training.torch_threads(0):
            pass


def test_training_learns_and_keeps_best_validation_epoch(digits):
    train_loader, val_loader, test_loader = digits.loaders(64)
    model = tiny_model()
    before = training.evaluate(model, val_loader)
    history = training.train(model, train_loader, val_loader, epochs=4, progress=False)
    assert len(history.val_accuracy) == 4
    assert history.best_val_accuracy == max(history.val_accuracy)
    assert training.evaluate(model, val_loader) == pytest.approx(history.best_val_accuracy)
    assert history.best_val_accuracy > before + 30
    assert training.evaluate(model, test_loader) > 60
    assert not model.training


def test_training_is_deterministic_with_a_seed(digits):
    train_loader, val_loader, _ = digits.loaders(64, seed=1)
    a, b = tiny_model(), tiny_model()
    training.train(a, train_loader, val_loader, epochs=1, seed=5, progress=False)
    train_loader, val_loader, _ = digits.loaders(64, seed=1)
    training.train(b, train_loader, val_loader, epochs=1, seed=5, progress=False)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_after_step_runs_once_per_batch(digits):
    train_loader, _, _ = digits.loaders(256)
    calls = []
    training.train(tiny_model(), train_loader, epochs=2, after_step=[lambda: calls.append(1)],
                   progress=False)
    assert len(calls) == 2 * len(train_loader)


def test_learning_rate_is_stepped_per_epoch(digits, monkeypatch):
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    train_loader, _, _ = digits.loaders(512)
    training.train(tiny_model(), train_loader, epochs=2, lr=0.1, progress=False)
    batches = len(train_loader)
    assert seen[:batches] == [0.1] * batches
    assert seen[batches:] == [pytest.approx(0.05)] * batches


def test_finetune_uses_a_tenth_of_the_training_rate():
    assert training.FINETUNE_LR == pytest.approx(training.TRAIN_LR / 10)


def test_extra_loss_is_added(digits):
    plain, penalised = tiny_model(), tiny_model()
    h1 = training.train(plain, digits.loaders(512)[0], epochs=1, progress=False)
    h2 = training.train(penalised, digits.loaders(512)[0], epochs=1, progress=False,
                        extra_loss=lambda m: torch.tensor(10.0))
    assert h2.train_loss[0] == pytest.approx(h1.train_loss[0] + 10.0, rel=1e-4)


@pytest.mark.parametrize("kwargs, match", [({"epochs": 0}, "epochs"), ({"lr": 0}, "lr")])
def test_bad_arguments(digits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        training.train(tiny_model(), digits.loaders()[0], **kwargs)


def test_training_is_the_same_under_any_outer_thread_count(digits):
    previous = torch.get_num_threads()
    states = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = tiny_model()
            train_loader, val_loader, _ = digits.loaders(64)
            training.train(model, train_loader, val_loader, epochs=1, progress=False)
            assert torch.get_num_threads() == threads
            states.append(model.state_dict())
    finally:
        torch.set_num_threads(previous)
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_training_threads_setting_is_used_and_restored(digits, monkeypatch):
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    before = torch.get_num_threads()
    train_loader, _, _ = digits.loaders(512)
    training.train(tiny_model(), train_loader, epochs=1, threads=2, progress=False)
    assert set(seen) == {2} and torch.get_num_threads() == before
    seen.clear()
    training.finetune(tiny_model(), train_loader, epochs=1, progress=False)
    assert set(seen) == {training.TRAIN_THREADS}


def test_the_same_call_on_one_loader_repeats_exactly(digits):
    """Four identical calls on one loader, interleaved with other random draws (global
    torch, NumPy, Python and the loader's own generator), give the same weights: the
    loader's shuffle is drawn from the call's seed, not from where its generator was."""
    train_loader, val_loader, _ = digits.loaders(64)
    states = []
    for _ in range(4):
        states.append(finetuned_state(train_loader, val_loader))
        torch.rand(7), np.random.rand(3), random.random()
        next(iter(train_loader))
    for state in states[1:]:
        for key in states[0]:
            assert torch.equal(states[0][key], state[key]), key


def test_the_shuffle_follows_the_seed_and_leaves_the_loader_alone(digits):
    used, val_loader, _ = digits.loaders(64, seed=3)
    untouched, _, _ = digits.loaders(64, seed=3)
    first = finetuned_state(used, val_loader, seed=0)
    assert [y.tolist() for _, y in used] == [y.tolist() for _, y in untouched]
    other_loader, _, _ = digits.loaders(64, seed=7)
    same = finetuned_state(other_loader, val_loader, seed=0)
    assert all(torch.equal(first[key], same[key]) for key in first)
    other_seed = finetuned_state(used, val_loader, seed=1)
    assert any(not torch.equal(first[key], other_seed[key]) for key in first)


FINETUNE_DIGEST = """
from labkit import data
from tests.support.finetuning import finetune_digest
print(finetune_digest(data.load("digits")))
"""


def test_the_same_call_gives_the_same_weights_in_another_process(digits):
    """Another process, another OMP_NUM_THREADS and another global RNG state: the same
    weights, bit for bit."""
    environment = {**os.environ, "OMP_NUM_THREADS": "2"}
    other = subprocess.run([sys.executable, "-c", FINETUNE_DIGEST], capture_output=True,
                           text=True, cwd=ROOT, env=environment, check=True,
                           timeout=300).stdout.split()[-1]
    torch.rand(5)
    assert finetune_digest(digits) == other
