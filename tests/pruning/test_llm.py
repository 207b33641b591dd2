"""Pruning a transformer language model: magnitude, Wanda, SparseGPT (labkit.pruning.llm)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from labkit import training
from labkit.data import load
from labkit.models import GPT
from labkit.pruning import llm


@pytest.fixture(scope="module")
def corpus():
    return load("pydoc")


@pytest.fixture(scope="module")
def model(corpus):
    """A GPT trained for a few steps: enough for activations with structure."""
    torch.manual_seed(0)
    gpt = GPT(corpus.vocab_size, context=16, width=32, depth=2, heads=2)
    training.train_language_model(gpt, corpus, epochs=1, batch_size=256, progress=False)
    return gpt


@pytest.fixture(scope="module")
def calibration(corpus, model):
    return corpus.windows("train", model.context, count=32, seed=1)


def random_problem(rows=12, columns=32, tokens=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=generator)
    scale = torch.rand(columns, generator=generator) * 3
    inputs = torch.randn(tokens, columns, generator=generator) * scale
    return weight, 2 * inputs.T @ inputs / tokens


def test_gpt_shapes_and_tied_head(corpus):
    gpt = GPT(corpus.vocab_size, context=8, width=16, depth=1, heads=2)
    assert gpt(torch.zeros(3, 8, dtype=torch.long)).shape == (3, 8, corpus.vocab_size)
    assert gpt.head.weight is gpt.token.weight
    assert list(llm.linear_layers(gpt)) == ["blocks.0.attn.qkv", "blocks.0.attn.proj",
                                            "blocks.0.mlp.fc", "blocks.0.mlp.proj"]
    with pytest.raises(ValueError, match="context=8"):
        gpt(torch.zeros(1, 9, dtype=torch.long))


def test_gpt_is_causal():
    gpt = GPT(10, context=6, width=8, depth=1, heads=2).eval()
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = tokens.clone()
    changed[0, 4] = 9
    torch.testing.assert_close(gpt(tokens)[0, :4], gpt(changed)[0, :4])


def test_training_beats_the_unigram_baseline(corpus, model):
    counts = torch.bincount(corpus.train, minlength=corpus.vocab_size).double() + 1
    unigram = torch.exp(-(counts / counts.sum()).log()[corpus.val].mean()).item()
    windows = corpus.windows("val", model.context)[:200]
    assert training.perplexity(model, windows) < unigram


def test_wanda_score_and_row_mask():
    weight = torch.tensor([[1.0, -2.0, 3.0, -4.0], [4.0, 3.0, -2.0, 1.0]])
    norms = torch.tensor([4.0, 1.0, 1.0, 0.5])
    scores = llm.wanda_score(weight, norms)
    torch.testing.assert_close(scores, torch.tensor([[4.0, 2, 3, 2], [16, 3, 2, 0.5]]))
    keep = llm.row_mask(scores, 0.5)
    assert keep.tolist() == [[True, False, True, False], [True, True, False, False]]
    assert llm.mask(weight.abs(), sparsity=0.5, group="layer").sum() == 4


def test_masks_hit_their_sparsity_and_pattern():
    scores = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    assert (llm.mask(scores, sparsity=0.25).sum(dim=1) == 12).all()
    keep = llm.mask(scores, nm=(2, 4))
    assert (keep.reshape(8, 4, 4).sum(dim=-1) == 2).all()


@pytest.mark.parametrize("block_size", [4, 16, 128])
@pytest.mark.parametrize("target", [{"sparsity": 0.5}, {"sparsity": 0.7}, {"nm": (2, 4)}])
def test_blocked_sparsegpt_equals_the_column_by_column_reference(block_size, target):
    weight, hessian = random_problem()
    blocked, keep = llm.sparsegpt(weight, hessian, block_size=block_size, **target)
    reference, reference_keep = llm.sparsegpt_reference(weight, hessian,
                                                        mask_block=block_size, **target)
    assert torch.equal(keep, reference_keep)
    torch.testing.assert_close(blocked, reference, atol=1e-5, rtol=0)
    assert torch.equal(blocked == 0, ~keep)


def test_obs_update_zeroes_the_column_and_leaves_earlier_ones():
    weight, hessian = random_problem(rows=3, columns=6)
    factor = llm.inverse_hessian_factor(hessian).float()
    keep = torch.tensor([True, False, False])
    updated = llm.obs_update(weight, factor, 2, keep)
    assert updated[1, 2] == 0 and updated[2, 2] == 0 and updated[0, 2] == weight[0, 2]
    torch.testing.assert_close(updated[:, :2], weight[:, :2])
    assert not torch.equal(updated[1:, 3:], weight[1:, 3:])


def test_sparsegpt_reconstructs_better_than_magnitude_on_random_layers():
    weight, hessian = random_problem(seed=3)
    pruned, _ = llm.sparsegpt(weight, hessian, sparsity=0.5)
    magnitude = weight * llm.mask(weight.abs(), sparsity=0.5)
    assert llm.reconstruction_error(weight, pruned, hessian) < \
        llm.reconstruction_error(weight, magnitude, hessian)


@pytest.mark.parametrize("target", [{"sparsity": 0.5}, {"nm": (2, 4)}])
def test_sparsegpt_beats_magnitude_on_every_layer_of_the_model(model, calibration, target):
    magnitude = llm.prune(model, calibration, "magnitude", **target)
    sparsegpt = llm.prune(model, calibration, "sparsegpt", **target)
    assert magnitude.errors.keys() == sparsegpt.errors.keys() == llm.linear_layers(model).keys()
    for name in magnitude.errors:
        assert sparsegpt.errors[name] < magnitude.errors[name], name


@pytest.mark.parametrize("method", llm.METHODS)
def test_prune_returns_a_pruned_copy(model, calibration, method):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = llm.prune(model, calibration, method, sparsity=0.5)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    pruned_layers = llm.linear_layers(result.model)
    for name, layer in pruned_layers.items():
        assert (layer.weight == 0).float().mean() == pytest.approx(0.5, abs=0.02), name
        assert torch.equal(layer.weight != 0, result.masks[name] & (layer.weight != 0))
    assert torch.equal(result.model.token.weight, model.token.weight)
    assert result.seconds > 0


def test_prune_is_sequential(model, calibration):
    """The second layer's statistics come from the model whose first layer is pruned."""
    result = llm.prune(model, calibration, "wanda", sparsity=0.5)
    second = list(llm.linear_layers(model))[1]
    dense = llm.input_statistics(model, second, calibration)
    partly = llm.prune(model, calibration, "wanda", sparsity=0.5, skip=("head", second))
    sequential = llm.input_statistics(partly.model, second, calibration)
    assert not torch.allclose(dense.gram, sequential.gram)
    expected = llm.wanda_score(model.get_submodule(second).weight, sequential.norms)
    assert torch.equal(result.masks[second], llm.row_mask(expected, 0.5))


def test_wanda_masks_follow_input_norms(model, calibration):
    result = llm.prune(model, calibration, "wanda", sparsity=0.5)
    name = "blocks.0.attn.qkv"
    statistics = llm.input_statistics(model, name, calibration)
    weight = model.get_submodule(name).weight
    assert torch.equal(result.masks[name], llm.row_mask(llm.wanda_score(weight, statistics.norms),
                                                        0.5))


def test_layer_inputs_of_several_layers_equal_one_at_a_time(model, calibration):
    names = list(llm.linear_layers(model))
    together = llm.layer_inputs(model, names, calibration)
    for name in names:
        alone = llm.input_statistics(model, name, calibration)
        torch.testing.assert_close(together[name].gram, alone.gram)
        assert together[name].count == alone.count == calibration[:, :16].numel()


def test_calibration_groups_by_layer_and_by_block():
    names = ["blocks.0.attn.qkv", "blocks.0.mlp.fc", "blocks.1.attn.qkv", "head"]
    assert llm.block_of("blocks.1.mlp.fc") == "blocks.1" and llm.block_of("head") == "head"
    assert llm.calibration_groups(names, "layer") == [[name] for name in names]
    assert llm.calibration_groups(names, "block") == [names[:2], names[2:3], ["head"]]


def test_block_calibration_records_a_dense_block_on_the_pruned_blocks_before(model,
                                                                             calibration):
    """As the papers' code: every layer of block 0 is scored on the dense model's inputs,
    every layer of block 1 on the inputs of the model whose block 0 alone is pruned."""
    result = llm.prune(model, calibration, "wanda", sparsity=0.5, sequential="block")
    block0 = [name for name in llm.linear_layers(model) if name.startswith("blocks.0.")]
    first = llm.prune(model, calibration, "wanda", sparsity=0.5, sequential="block",
                      skip=["head"] + [name for name in llm.linear_layers(model)
                                       if name not in block0])
    for source, names in ((model, block0),
                          (first.model, [n for n in llm.linear_layers(model) if n not in block0])):
        statistics = llm.layer_inputs(source, names, calibration)
        for name in names:
            weight = model.get_submodule(name).weight
            expected = llm.row_mask(llm.wanda_score(weight, statistics[name].norms), 0.5)
            assert torch.equal(result.masks[name], expected), name
    per_layer = llm.prune(model, calibration, "wanda", sparsity=0.5)
    assert not torch.equal(per_layer.masks["blocks.0.mlp.fc"], result.masks["blocks.0.mlp.fc"])


@pytest.fixture(scope="module")
def swept(corpus, model):
    calibrations = {seed: corpus.windows("train", 16, count=8, seed=seed) for seed in (0, 1)}
    evaluation = {"validation": corpus.windows("val", 16)[:16],
                  "test": corpus.windows("test", 16)[:16]}
    return llm.sweep(model, calibrations, evaluation, targets=(0.5, (2, 4)))


def test_sweep_has_a_row_per_criterion_target_and_seed(swept, model):
    assert len(swept) == len(llm.CRITERIA) * 2 * 2
    assert set(swept["target"]) == {"50%", "2:4"} and set(swept["seed"]) == {0, 1}
    assert set(llm.linear_layers(model)) <= set(swept.columns)
    assert {"validation perplexity", "test perplexity", "seconds"} <= set(swept.columns)
    by_criterion = swept.groupby(["criterion", "target"])["validation perplexity"].nunique()
    assert by_criterion["magnitude (layer)", "50%"] == 1
    assert by_criterion["wanda", "50%"] == 2
    layer, row = (swept[(swept.criterion == name) & (swept.target == "50%")]
                  for name in ("magnitude (layer)", "magnitude (row)"))
    assert layer["validation perplexity"].iloc[0] != row["validation perplexity"].iloc[0]
    assert (swept[list(llm.linear_layers(model))].to_numpy() > 0).all()


def test_sweep_matches_prune_and_perplexity(swept, corpus, model):
    calibration = corpus.windows("train", 16, count=8, seed=1)
    pruned = llm.prune(model, calibration, "magnitude", sparsity=0.5, group="layer")
    row = swept[(swept.criterion == "magnitude (layer)") & (swept.target == "50%")
                & (swept.seed == 1)].iloc[0]
    windows = corpus.windows("val", 16)[:16]
    assert row["validation perplexity"] == pytest.approx(training.perplexity(pruned.model,
                                                                             windows))
    assert row["blocks.1.mlp.fc"] == pytest.approx(pruned.errors["blocks.1.mlp.fc"])


def test_layer_errors_are_a_column_per_target_and_criterion(swept, model):
    layers = list(llm.linear_layers(model))
    errors = llm.layer_errors(swept, layers, targets=((2, 4), 0.5), seed=1)
    assert errors.index.name == "layer" and list(errors.index) == layers
    assert list(errors.columns.unique("target")) == ["2:4", "50%"]
    assert list(errors["50%"].columns) == list(llm.CRITERIA)
    row = swept[(swept.criterion == "wanda") & (swept.target == "2:4") & (swept.seed == 1)]
    assert errors[("2:4", "wanda")].tolist() == row[layers].iloc[0].tolist()
    assert llm.layer_errors(swept, layers[:1]).shape == (1, len(llm.CRITERIA) * 2)
    with pytest.raises(ValueError, match=r"layers must name error columns of results, got "
                                         r"\['blocks.0.ln1'\]"):
        llm.layer_errors(swept, ["blocks.0.ln1"])
    with pytest.raises(ValueError, match=r"seed must be one of the sweep's seeds \[0, 1\], "
                                         "got 7"):
        llm.layer_errors(swept, layers, seed=7)
    with pytest.raises(ValueError, match=r"targets must be targets of the sweep .* "
                                         r"got \['30%'\]"):
        llm.layer_errors(swept, layers, targets=(0.3,))


def test_sweep_calibration_sizes_repeats_the_sweep_on_the_first_windows(swept, corpus,
                                                                        model):
    calibrations = {seed: corpus.windows("train", 16, count=8, seed=seed) for seed in (0, 1)}
    evaluation = {"validation": corpus.windows("val", 16)[:16]}
    sizes = llm.sweep_calibration_sizes(model, calibrations, evaluation, (1, 8),
                                        criteria=["wanda"], targets=(0.5,))
    assert sizes["windows"].tolist() == [1, 1, 8, 8] and set(sizes["seed"]) == {0, 1}
    full = swept[(swept.criterion == "wanda") & (swept.target == "50%")]
    assert sizes[sizes.windows == 8]["validation perplexity"].tolist() == pytest.approx(
        full["validation perplexity"].tolist())
    assert (sizes[sizes.windows == 1]["validation perplexity"].to_numpy()
            != full["validation perplexity"].to_numpy()).all()
    for counts, match in (((0,), r"counts must be an int in \[1, 8\], got 0"),
                          ((9,), r"counts must be an int in \[1, 8\], got 9"),
                          ((), "counts must each hold at least one entry")):
        with pytest.raises(ValueError, match=match):
            llm.sweep_calibration_sizes(model, calibrations, evaluation, counts)


def sweep_rows(values: dict[str, list[list[float]]]):
    """A sweep-like table: ``{criterion: [validation values, test values]}`` over seeds."""
    import pandas as pd

    return pd.DataFrame([{"criterion": name, "target": "50%", "seed": seed,
                          "validation perplexity": val, "test perplexity": test}
                         for name, (vals, tests) in values.items()
                         for seed, (val, test) in enumerate(zip(vals, tests, strict=True))])


@given(st.lists(st.floats(1, 10), min_size=3, max_size=3),
       st.lists(st.floats(1, 10), min_size=3, max_size=3),
       st.floats(-12, 12))
def test_compare_names_the_lower_only_beyond_the_seed_spread(a, b, shift):
    moved = [value + shift for value in b]
    first, second = [a, [2 * value for value in a]], [moved, [2 * value for value in moved]]
    verdict = llm.compare(sweep_rows({"x": first, "y": second}), "x", "y")["verdict"].item()
    if max(a) < min(b) + shift:
        assert verdict == "x lower"
    elif max(b) + shift < min(a):
        assert verdict == "y lower"
    else:
        assert verdict == "within the seed spread"


def test_compare_needs_both_splits_to_agree():
    rows = sweep_rows({"x": [[1.0, 1.1, 1.2], [5.0, 5.1, 5.2]],
                       "y": [[2.0, 2.1, 2.2], [4.0, 4.1, 4.2]]})
    table = llm.compare(rows, "x", "y")
    assert table["verdict"].item() == "within the seed spread"
    assert table["validation perplexity gap"].item() == pytest.approx(0.8)
    assert table["test perplexity gap"].item() == pytest.approx(-0.8)
    with pytest.raises(ValueError, match="criterion has no rows of 'z'"):
        llm.compare(rows, "x", "z")


def test_ranges_give_the_lowest_and_highest_over_the_seeds():
    rows = sweep_rows({"x": [[1.0, 3.0, 2.0], [5.0, 4.0, 6.0]], "y": [[2.0, 2.0, 2.0],
                                                                     [1.0, 1.0, 1.0]]})
    table = llm.ranges(rows.assign(seconds=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert list(table.columns) == ["validation min", "validation max", "test min",
                                   "test max", "seconds"]
    assert table.loc[("50%", "x")].tolist() == [1.0, 3.0, 4.0, 6.0, 2.0]
    assert table.loc[("50%", "y")].tolist() == [2.0, 2.0, 1.0, 1.0, 5.0]


def test_outlier_features_keep_the_function_and_wanda_but_not_magnitude(model, calibration):
    scaled = llm.outlier_features(model, count=4, scale=20.0, seed=0)
    tokens = calibration[:4, :16]
    torch.testing.assert_close(scaled(tokens), model(tokens), atol=1e-4, rtol=1e-4)
    name = "blocks.1.mlp.fc"
    ratio = model.get_submodule(name).weight / scaled.get_submodule(name).weight
    features = (ratio[0] - 20).abs() < 1e-3
    assert features.sum() == 4 and torch.allclose(ratio[:, ~features], torch.ones(1))
    before, after = (llm.prune(m, calibration, "wanda", sparsity=0.5) for m in (model, scaled))
    agree = (before.masks[name] == after.masks[name]).float().mean()
    assert agree > 0.99
    magnitude = llm.prune(scaled, calibration, "magnitude", sparsity=0.5).masks[name]
    assert not magnitude[:, features].any()
    assert not torch.equal(scaled.get_submodule(name).weight, model.get_submodule(name).weight)


# --- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_the_range(model, calibration, sparsity):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        llm.prune(model, calibration, "wanda", sparsity=sparsity)
    with pytest.raises(ValueError, match="sparsity"):
        llm.sparsegpt(*random_problem(), sparsity=sparsity)


def test_nm_that_does_not_divide_the_input_size(model, calibration):
    with pytest.raises(ValueError, match="m=3 must divide the input size in_features=32"):
        llm.prune(model, calibration, "sparsegpt", nm=(2, 3))
    with pytest.raises(ValueError, match="m=5 must divide"):
        llm.sparsegpt(*random_problem(columns=32), nm=(2, 5))
    with pytest.raises(ValueError, match="n <= m"):
        llm.mask(torch.rand(2, 4), nm=(5, 4))
    with pytest.raises(ValueError, match="block_size must be a multiple of m=4"):
        llm.sparsegpt(*random_problem(), nm=(2, 4), block_size=6)


def test_exactly_one_target(model, calibration):
    with pytest.raises(ValueError, match="exactly one of sparsity"):
        llm.prune(model, calibration, "wanda")
    with pytest.raises(ValueError, match="exactly one of sparsity"):
        llm.prune(model, calibration, "wanda", sparsity=0.5, nm=(2, 4))


def test_empty_or_short_calibration(model, corpus):
    with pytest.raises(ValueError, match="at least one sample"):
        llm.prune(model, torch.zeros(0, 16, dtype=torch.long), "wanda", sparsity=0.5)
    short = corpus.windows("train", 8, count=4)
    with pytest.raises(ValueError, match="context of 16 tokens, got 9"):
        llm.prune(model, short, "sparsegpt", sparsity=0.5)
    with pytest.raises(TypeError, match="int64"):
        llm.prune(model, torch.zeros(2, 16), "wanda", sparsity=0.5)


def test_model_without_linear_layers(calibration):
    class Embedding(nn.Module):
        context = 16

        def __init__(self):
            super().__init__()
            self.token = nn.Embedding(10, 4)

        def forward(self, tokens):
            return self.token(tokens)

    with pytest.raises(ValueError, match="must have an nn.Linear layer"):
        llm.prune(Embedding(), calibration, "magnitude", sparsity=0.5)


@pytest.mark.parametrize("damping", [0, -0.01])
def test_damping_not_positive(model, calibration, damping):
    with pytest.raises(ValueError, match="damping must be a positive"):
        llm.prune(model, calibration, "sparsegpt", sparsity=0.5, damping=damping)
    with pytest.raises(ValueError, match="damping must be a positive"):
        llm.sparsegpt(*random_problem(), sparsity=0.5, damping=damping)


def test_unknown_method_and_group(model, calibration):
    with pytest.raises(ValueError, match="method must be one of"):
        llm.prune(model, calibration, "random", sparsity=0.5)
    with pytest.raises(ValueError, match="group must be one of"):
        llm.mask(torch.rand(2, 4), sparsity=0.5, group="column")


def test_unknown_sequential_and_criteria(model, calibration, corpus):
    with pytest.raises(ValueError, match=r"sequential must be one of \('layer', 'block'\)"):
        llm.prune(model, calibration, "wanda", sparsity=0.5, sequential="model")
    evaluation = {"validation": corpus.windows("val", 16)[:4]}
    with pytest.raises(ValueError, match="criteria must be names of"):
        llm.sweep(model, {0: calibration}, evaluation, criteria=("magnitude",))
    with pytest.raises(ValueError, match="calibrations and evaluation must each hold"):
        llm.sweep(model, {}, evaluation)
    with pytest.raises(ValueError, match="sparsity must be in"):
        llm.sweep(model, {0: calibration}, evaluation, targets=(1.5,))


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"count": 0}, ValueError, "count must be an int in"),
    ({"count": 33}, ValueError, r"count must be an int in \[1, 32\]"),
    ({"scale": 0.0}, ValueError, "scale"),
    ({"scale": "20"}, TypeError, "scale"),
    ({"seed": None}, TypeError, "seed"),
])
def test_outlier_features_bad_input(model, options, error, match):
    with pytest.raises(error, match=match):
        llm.outlier_features(model, **options)
    with pytest.raises(TypeError, match="model must be a labkit.models.GPT"):
        llm.outlier_features(nn.Linear(4, 4))


def test_sweep_tables_bad_input(model, calibration):
    rows = sweep_rows({"x": [[1.0], [1.0]], "y": [[2.0], [2.0]]})
    with pytest.raises(ValueError, match=r"by and within must name columns of results, got "
                                         r"\['method'\]"):
        llm.compare(rows, "x", "y", by="method")
    with pytest.raises(ValueError, match="must hold a '<split> perplexity' column"):
        llm.ranges(rows.drop(columns=["validation perplexity", "test perplexity"]))
    with pytest.raises(TypeError, match="results must be a DataFrame"):
        llm.ranges([{"validation perplexity": 1.0}])
    with pytest.raises(ValueError, match="layer must name an nn.Linear of the model, got "
                                         "'blocks.0.ln1'"):
        llm.layer_inputs(model, ["blocks.0.attn.qkv", "blocks.0.ln1"], calibration)
    with pytest.raises(ValueError, match="n <= m"):
        llm.target_label((5, 4))


def test_wanda_score_shape_mismatch():
    with pytest.raises(ValueError, match=r"input_norms must have shape \(4,\)"):
        llm.wanda_score(torch.rand(2, 4), torch.rand(3))


def test_perplexity_and_windows_bad_input(corpus, model):
    with pytest.raises(ValueError, match="at least one window"):
        training.perplexity(model, torch.zeros(0, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="split must be one of"):
        corpus.windows("validation", 16)


# --- the corpus and the model ---------------------------------------------------------

def test_pydoc_corpus_is_three_contiguous_blocks(corpus):
    from labkit.data import pydoc_text

    text = pydoc_text()
    assert corpus.decode(torch.cat([corpus.train, corpus.val, corpus.test])) == text
    sizes = [corpus.train.numel(), corpus.val.numel(), corpus.test.numel()]
    assert sizes[0] == round(len(text) * 0.65) and sum(sizes) == len(text)
    assert corpus.vocabulary == "".join(sorted(set(text)))
    assert corpus.decode(corpus.encode("for x in y:")) == "for x in y:"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        corpus.encode("\x00")


def test_windows_are_fixed_length_and_seeded(corpus):
    every = corpus.windows("val", 32)
    assert every.shape == ((corpus.val.numel() - 32 + 31) // 32, 33)
    assert torch.equal(every[1, :32], corpus.val[32:64])
    drawn = corpus.windows("train", 16, count=5, seed=3)
    assert drawn.shape == (5, 17)
    assert torch.equal(drawn, corpus.windows("train", 16, count=5, seed=3))
    with pytest.raises(ValueError, match="length must be below"):
        corpus.windows("val", corpus.val.numel())
    with pytest.raises(ValueError, match="count must be an int >= 0"):
        corpus.windows("train", 16, count=-1)


@pytest.mark.parametrize("options", [{"width": 0}, {"context": -1}, {"width": 10, "heads": 4}])
def test_gpt_bad_sizes(options):
    with pytest.raises(ValueError, match="width|context|heads"):
        GPT(10, **options)


def test_zoo_recipe_builds_a_gpt_over_the_corpus(corpus):
    from labkit import zoo

    built = zoo.RECIPES["gpt-pydoc"].build()
    assert isinstance(built, GPT) and built.token.num_embeddings == corpus.vocab_size
    assert built.context == 64


def test_benchmark_explains_torchao_wanda_masks():
    """torchao's WandaSparsifier ranks the whole layer by |W| * ||X||^2; the benchmark's
    third labkit mask is that, and must equal torchao's everywhere."""
    pytest.importorskip("torchao")
    from benchmarks import llm as benchmark
    from benchmarks.config import smoke

    results = benchmark.run(smoke())
    layers = [row for row in results["peer"] if row["layer"] != "(model)"]
    assert layers and all(row["agreement"]["squared"] == 1.0 for row in layers)
    assert "torchao" in benchmark.markdown(results)
