import copy
from itertools import pairwise

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from labkit import measure
from labkit.grading import checks
from labkit.pruning import schedule
from labkit.pruning.masking import Pruner
from labkit.pruning.schedule import Recipe
from labkit.training import FINETUNE_LR, finetune
from tests.support.finetuning import tiny_model


@pytest.fixture(scope="module")
def loaders(digits):
    return digits.loaders(128)


def zeros_of(model):
    return {name: layer.weight == 0 for name, layer in measure.prunable_layers(model).items()}


def same_state(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))


# The masks survive finetuning.

def test_sgd_momentum_and_weight_decay_revive_pruned_weights_without_the_pruner(loaders):
    train_loader, val_loader, _ = loaders
    model = tiny_model()
    pruner = Pruner.from_sparsity(model, 0.7)
    pruner.apply()
    finetune(model, train_loader, epochs=1, progress=False)
    assert measure.model_sparsity(model) < 0.1


def test_masks_survive_finetuning_with_momentum_and_weight_decay(loaders):
    train_loader, val_loader, _ = loaders
    model = tiny_model()
    step = schedule.prune_and_finetune(model, 0.7, Recipe(train_loader, val_loader), epochs=3)
    pruner = Pruner.from_sparsity(tiny_model(), 0.7)
    for name, parameter in model.named_parameters():
        if name in pruner.masks:
            assert torch.all(parameter[~pruner.masks[name]] == 0), name
            assert parameter[pruner.masks[name]].count_nonzero() > 0, name
    assert measure.model_sparsity(model) == pytest.approx(0.7, abs=1e-3)
    assert step.sparsity == 0.7
    assert 0 <= step.pruned_val_accuracy <= 100 and 0 <= step.val_accuracy <= 100


def test_finetuning_uses_a_tenth_of_the_training_rate_by_default(loaders, monkeypatch):
    seen = []
    monkeypatch.setattr(schedule, "finetune",
                        lambda *args, **kwargs: seen.append(kwargs["lr"]))
    train_loader, val_loader, _ = loaders
    schedule.prune_and_finetune(tiny_model(), 0.5, Recipe(train_loader, val_loader),
                                epochs=1)
    assert seen == [FINETUNE_LR]


# One-shot and iterative pruning.

def test_one_shot_returns_a_new_pruned_model_and_leaves_the_input_alone(loaders):
    train_loader, val_loader, test_loader = loaders
    model = tiny_model()
    untouched = copy.deepcopy(model)
    result = schedule.one_shot(model, 0.6, Recipe(train_loader, val_loader), finetune_epochs=0)
    assert same_state(model, untouched)
    assert result.model is not model
    assert measure.model_sparsity(result.model) == pytest.approx(0.6, abs=1e-3)
    assert result.steps[0].pruned_val_accuracy == result.val_accuracy
    assert result.test_accuracy is None
    with_test = schedule.one_shot(model, 0.6, Recipe(train_loader, val_loader, test_loader))
    assert 0 <= with_test.test_accuracy <= 100


def test_iterative_records_every_step_and_its_masks_nest(loaders):
    train_loader, val_loader, test_loader = loaders
    model = tiny_model()
    untouched = copy.deepcopy(model)
    result = schedule.iterative(model, [0.3, 0.6, 0.8],
                                Recipe(train_loader, val_loader, test_loader, progress=False),
                                finetune_epochs_per_step=1)
    assert same_state(model, untouched)
    assert [step.sparsity for step in result.steps] == [0.3, 0.6, 0.8]
    assert measure.model_sparsity(result.model) == pytest.approx(0.8, abs=1e-3)
    assert result.test_accuracy is not None

    nested = copy.deepcopy(model)
    schedule.prune_and_finetune(nested, 0.4, Recipe(train_loader, val_loader), epochs=1)
    earlier = zeros_of(nested)
    schedule.prune_and_finetune(nested, 0.7, Recipe(train_loader, val_loader), epochs=1)
    for name, zeros in zeros_of(nested).items():
        assert torch.all(zeros[earlier[name]]), name


def test_dense_layers_stay_dense_and_the_model_reaches_the_overall_sparsity(loaders):
    train_loader, val_loader, _ = loaders
    result = schedule.one_shot(tiny_model(), 0.8,
                               Recipe(train_loader, val_loader, dense_layers=["backbone.conv0"]))
    assert result.model.backbone.conv0.weight.count_nonzero() == 72
    assert measure.model_sparsity(result.model) == pytest.approx(0.8, abs=1e-3)


def test_layer_sparsities_spread_the_target_over_the_pruned_layers():
    model = tiny_model()
    sizes = {name: layer.weight.numel() for name, layer in measure.prunable_layers(model).items()}
    per_layer = schedule.layer_sparsities(model, 0.5, ["classifier"])
    assert set(per_layer) == {"backbone.conv0", "backbone.conv1"}
    zeros = sum(per_layer[name] * sizes[name] for name in per_layer)
    assert zeros / sum(sizes.values()) == pytest.approx(0.5)
    assert schedule.layer_sparsities(model, 0.5) == dict.fromkeys(sizes, 0.5)


@pytest.mark.parametrize("sparsities", [[0.5, 0.3], [0.2, 0.2], [0.2, 1.0], [0.5, 1.2], [-0.1],
                                        []])
def test_iterative_rejects_a_list_that_is_not_strictly_increasing_in_0_1(sparsities, loaders):
    train_loader, val_loader, _ = loaders
    with pytest.raises(ValueError, match="sparsities"):
        schedule.iterative(tiny_model(), sparsities, Recipe(train_loader, val_loader))


@pytest.mark.parametrize("sparsity", [1.0, 1.5, -0.2])
def test_one_shot_rejects_a_sparsity_outside_0_1(sparsity, loaders):
    train_loader, val_loader, _ = loaders
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        schedule.one_shot(tiny_model(), sparsity, Recipe(train_loader, val_loader))


def test_bad_arguments_name_themselves(loaders):
    train_loader, val_loader, _ = loaders
    with pytest.raises(ValueError, match="finetune_epochs_per_step"):
        schedule.iterative(tiny_model(), [0.5], Recipe(train_loader, val_loader),
                           finetune_epochs_per_step=0)
    with pytest.raises(ValueError, match="finetune_epochs must be an int >= 0, got -1"):
        schedule.one_shot(tiny_model(), 0.5, Recipe(train_loader, val_loader),
                          finetune_epochs=-1)
    with pytest.raises(ValueError, match="step_every must be an int >= 1"):
        schedule.agp(tiny_model(), 0.5, Recipe(train_loader, val_loader), step_every=0)
    with pytest.raises(TypeError, match="sparsity must be a real number"):
        schedule.one_shot(tiny_model(), "0.5", Recipe(train_loader, val_loader))
    with pytest.raises(ValueError, match="dense_layers"):
        schedule.layer_sparsities(tiny_model(), 0.5, ["backbone.conv9"])
    with pytest.raises(ValueError, match="out of reach"):
        schedule.layer_sparsities(tiny_model(), 0.9, ["backbone.conv1"])


# The AGP schedule.

fractions = st.floats(0.0, 0.99)


@given(n=st.integers(1, 1000), s_i=fractions, s_f=fractions)
def test_agp_starts_at_s_initial_and_ends_at_s_final(n, s_i, s_f):
    s_i, s_f = min(s_i, s_f), max(s_i, s_f)
    assert schedule.agp_sparsity(0, n, s_i, s_f) == pytest.approx(s_i, abs=1e-12)
    assert schedule.agp_sparsity(n, n, s_i, s_f) == pytest.approx(s_f, abs=1e-12)


@given(n=st.integers(1, 200), s_i=fractions, s_f=fractions)
def test_agp_is_monotone_and_stays_between_its_ends(n, s_i, s_f):
    s_i, s_f = min(s_i, s_f), max(s_i, s_f)
    values = [schedule.agp_sparsity(t, n, s_i, s_f) for t in range(n + 1)]
    assert all(a <= b for a, b in pairwise(values))
    assert all(s_i - 1e-12 <= v <= s_f + 1e-12 for v in values)


def test_agp_follows_the_cubic_formula():
    assert schedule.agp_sparsity(5, 10, 0.0, 0.9) == pytest.approx(0.9 - 0.9 * 0.5**3)
    assert schedule.agp_sparsity(1, 4, 0.2, 0.8) == pytest.approx(0.8 - 0.6 * 0.75**3)


@pytest.mark.parametrize(("t", "n", "s_i", "s_f", "error", "message"), [
    (0, 0, 0.0, 0.9, ValueError, r"n must be an int >= 1, got 0"),
    (0, -3, 0.0, 0.9, ValueError, "n must be"),
    (0, 2.0, 0.0, 0.9, TypeError, "n must be an int"),
    (-1, 10, 0.0, 0.9, ValueError, r"t must be in \[0, n\] = \[0, 10\], got -1"),
    (11, 10, 0.0, 0.9, ValueError, "t must be in"),
    (0, 10, 0.0, 1.0, ValueError, r"s_final must be in \[0, 1\)"),
    (0, 10, -0.1, 0.9, ValueError, "s_initial must be in"),
    (0, 10, 0.8, 0.5, ValueError, "s_initial must not exceed s_final"),
])
def test_agp_rejects_bad_input(t, n, s_i, s_f, error, message):
    with pytest.raises(error, match=message):
        schedule.agp_sparsity(t, n, s_i, s_f)


def test_agp_pruner_raises_the_sparsity_every_k_steps():
    model = tiny_model()
    pruner = schedule.AGPPruner(model, 0.8, n=4, step_every=3, s_initial=0.2)
    seen = [measure.model_sparsity(model)]
    for _ in range(15):
        pruner()
        seen.append(measure.model_sparsity(model))
    expected = [schedule.agp_sparsity(min(i // 3, 4), 4, 0.2, 0.8) for i in range(16)]
    assert seen == pytest.approx(expected, abs=2e-3)
    assert [step.sparsity for step in pruner.steps()] == pytest.approx(
        [schedule.agp_sparsity(t, 4, 0.2, 0.8) for t in range(5)])


def test_agp_reaches_s_final_and_keeps_its_masks(loaders):
    train_loader, val_loader, test_loader = loaders
    model = tiny_model()
    result = schedule.agp(model, 0.75,
                          Recipe(train_loader, val_loader, test_loader, progress=False),
                          n=3, epochs=4)
    assert measure.model_sparsity(result.model) == pytest.approx(0.75, abs=1e-3)
    assert measure.model_sparsity(model) == 0.0
    assert len(result.steps) == 4
    assert result.sparsity == pytest.approx(0.75)
    assert result.test_accuracy is not None


def test_agp_rejects_a_schedule_longer_than_the_run(loaders):
    train_loader, val_loader, _ = loaders
    with pytest.raises(ValueError, match="n \\* step_every"):
        schedule.agp(tiny_model(), 0.9, Recipe(train_loader, val_loader), n=10, epochs=2)


# Lottery tickets.

def test_rewinding_restores_exactly_the_initial_values_of_surviving_weights():
    initial = tiny_model()
    trained = tiny_model(seed=1)
    masks = Pruner.from_sparsity(trained, 0.8).masks
    saved = copy.deepcopy(initial)
    ticket = schedule.rewind(initial, masks)
    assert same_state(initial, saved)
    parameters = dict(ticket.named_parameters())
    for name, value in initial.named_parameters():
        if name in masks:
            assert torch.equal(parameters[name][masks[name]], value[masks[name]])
            assert torch.all(parameters[name][~masks[name]] == 0)
        else:
            assert torch.equal(parameters[name], value)


def test_random_reinit_keeps_the_mask_and_draws_new_seeded_weights():
    initial = tiny_model()
    masks = Pruner.from_sparsity(tiny_model(seed=1), 0.8).masks
    state = torch.get_rng_state()
    first = schedule.random_reinit(initial, masks, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert same_state(first, schedule.random_reinit(initial, masks, seed=3))
    assert not same_state(first, schedule.random_reinit(initial, masks, seed=4))
    weight = first.backbone.conv1.weight
    keep = masks["backbone.conv1.weight"]
    assert torch.all(weight[~keep] == 0)
    assert not torch.equal(weight[keep], initial.backbone.conv1.weight[keep])


def test_lottery_ticket_retrains_both_networks_with_the_mask(loaders):
    train_loader, val_loader, test_loader = loaders
    initial = tiny_model()
    trained = copy.deepcopy(initial)
    finetune(trained, train_loader, epochs=1, progress=False)
    result = schedule.lottery_ticket(
        initial, trained, 0.8, Recipe(train_loader, val_loader, test_loader, progress=False),
        epochs=2)
    assert len(result.ticket_history) == len(result.reinit_history) == 2
    assert result.ticket_val_accuracy == max(result.ticket_history)
    masks = Pruner.from_sparsity(trained, 0.8).masks
    for network in (result.ticket, result.reinit):
        assert measure.model_sparsity(network) == pytest.approx(0.8, abs=1e-3)
        for name, parameter in network.named_parameters():
            if name in masks:
                assert torch.all(parameter[~masks[name]] == 0)
    assert result.ticket_test_accuracy is not None and result.reinit_test_accuracy is not None


# The lab's checks accept labkit's own functions and reject wrong ones.

def test_check_agp_sparsity_accepts_the_schedule_and_rejects_a_quadratic(capsys):
    checks.check_agp_sparsity(schedule.agp_sparsity)
    assert capsys.readouterr().out == "agp_sparsity: 8/8 cases passed\n"
    with pytest.raises(checks.CheckFailed, match="half way"):
        checks.check_agp_sparsity(lambda t, n, s_i, s_f: s_f + (s_i - s_f) * (1 - t / n) ** 2)


def labkit_iterative_prune(model, sparsities, train_loader, val_loader, epochs_per_step=1):
    result = schedule.iterative(model, sparsities,
                                Recipe(train_loader, val_loader, progress=False),
                                finetune_epochs_per_step=epochs_per_step)
    return result.model, [step.val_accuracy for step in result.steps]


def forgets_the_pruner(model, sparsities, train_loader, val_loader, epochs_per_step=1):
    model = copy.deepcopy(model)
    for sparsity in sparsities:
        Pruner.from_sparsity(model, sparsity).apply()
        finetune(model, train_loader, epochs=epochs_per_step, progress=False)
    return model, [0.0] * len(sparsities)


def test_check_iterative_prune_accepts_labkit_and_catches_a_lost_mask(capsys):
    checks.check_iterative_prune(labkit_iterative_prune)
    assert capsys.readouterr().out == "iterative_prune: 2/2 cases passed\n"
    with pytest.raises(checks.CheckFailed, match="layer sparsities: item 0: expected 0.5, got 0.0"):
        checks.check_iterative_prune(forgets_the_pruner)


def test_a_recipe_is_checked_once_and_required(loaders):
    train_loader, val_loader, _ = loaders
    recipe = Recipe(train_loader, val_loader)
    assert recipe.learning_rate(FINETUNE_LR) == FINETUNE_LR
    assert Recipe(train_loader, val_loader, lr=0.01).learning_rate(FINETUNE_LR) == 0.01
    with pytest.raises(TypeError, match="recipe must be a schedule.Recipe"):
        schedule.one_shot(tiny_model(), 0.5, train_loader)
    with pytest.raises(ValueError, match="lr must be"):
        Recipe(train_loader, val_loader, lr=0.0)
    with pytest.raises(TypeError, match="val_loader must be a DataLoader"):
        Recipe(train_loader, 3)
    with pytest.raises(ValueError, match="test_loader is empty"):
        Recipe(train_loader, val_loader, test_loader=[])


def test_layer_sparsity_table_shows_each_layers_share_and_sparsity():
    model = tiny_model()
    table = schedule.layer_sparsity_table(model, 0.8, ["backbone.conv0"])
    per_layer = schedule.layer_sparsities(model, 0.8, ["backbone.conv0"])
    assert table.index.name == "layer" and list(table.index) == list(
        measure.prunable_layers(model))
    assert table["share"].sum() == pytest.approx(1.0)
    assert table.loc["backbone.conv0", "sparsity for 80% overall"] == 0.0
    for name, sparsity in per_layer.items():
        assert table.loc[name, "sparsity for 80% overall"] == sparsity
    overall = (table["share"] * table["sparsity for 80% overall"]).sum()
    assert overall == pytest.approx(0.8)


@given(st.lists(st.floats(0.01, 0.99), min_size=1, max_size=6, unique=True))
def test_steps_frame_gives_the_share_of_the_survivors_each_step_removes(sparsities):
    sparsities = sorted(sparsities)
    steps = [schedule.Step(s, 50.0 + k, 90.0 + k) for k, s in enumerate(sparsities)]
    frame = schedule.steps_frame(steps)
    assert frame.index.name == "sparsity" and list(frame.index) == sparsities
    survivors = 1.0
    for step, share in zip(steps, frame["removes of the survivors"], strict=True):
        assert survivors * (1 - share) == pytest.approx(1 - step.sparsity)
        survivors = 1 - step.sparsity
    assert frame["after pruning (%)"].tolist() == [step.pruned_val_accuracy for step in steps]
    assert frame["after finetuning (%)"].tolist() == [step.val_accuracy for step in steps]


def test_steps_frame_bad_input():
    with pytest.raises(ValueError, match="steps must be a non-empty list of schedule.Step"):
        schedule.steps_frame([])
    with pytest.raises(ValueError, match="sparsities must be strictly increasing"):
        schedule.steps_frame([schedule.Step(0.5, 1.0, 2.0), schedule.Step(0.4, 1.0, 2.0)])
