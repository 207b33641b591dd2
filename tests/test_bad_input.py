"""Unusual input, one regression test per case: a clear error naming the argument, or a
correct answer; never a silent wrong answer or a hang."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit import data, measure, training
from labkit.hardware import eie, nm
from labkit.hardware.sparseconv import build_kernel_map, synthetic_point_cloud
from labkit.models import MLP, VGG, ResNet
from labkit.pruning import channels, criteria, neurons, schedule, sensitivity
from labkit.pruning.granularity import GRANULARITIES, granularity_mask, nm_mask
from labkit.pruning.masking import Pruner, slimming_masks
from labkit.search import amc, netadapt
from tests.support.tiny_models import tiny_loader, tiny_vgg

NAN = float("nan")


def loader():
    return tiny_loader(n=12)


def empty_loader():
    return DataLoader(TensorDataset(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.long)),
                      batch_size=4)


# Silent wrong answers and hangs.

@pytest.mark.parametrize("sparsity", [0.875, 0.9, 0.99])
def test_pattern_mask_at_high_sparsity_keeps_one_weight_per_group(sparsity):
    weight = torch.randn(4, 8, 3, 3)
    mask = granularity_mask(weight, sparsity, "pattern")
    groups = mask.movedim(1, -1).reshape(-1, 4)
    assert (groups.sum(dim=1) == 1).all()


class WithTransposedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.up = nn.ConvTranspose2d(4, 4, 2)

    def forward(self, x):
        return self.up(self.conv(x))


@pytest.mark.parametrize("call", [
    lambda m: measure.model_sparsity(m),
    lambda m: measure.model_size_bits(m, index="csr"),
    lambda m: Pruner.from_sparsity(m, 0.5),
    lambda m: sensitivity.sensitivity_scan(m, loader(), progress=False),
])
def test_unknown_weight_layers_are_refused_by_name(call):
    with pytest.raises(TypeError, match="layer 'up' of type ConvTranspose2d, which labkit "
                                        "does not prune"):
        call(WithTransposedConv())


@pytest.mark.parametrize("layer", [nn.MultiheadAttention(4, 2), nn.LSTM(4, 4),
                                   nn.Bilinear(4, 4, 2)])
def test_layers_with_weights_of_other_names_are_refused(layer):
    with pytest.raises(TypeError, match=type(layer).__name__):
        measure.prunable_layers(nn.ModuleDict({"a": nn.Linear(4, 4), "b": layer}))


def test_conv1d_and_conv3d_are_pruned_and_counted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(0), nn.Conv3d(1, 2, 3))
    assert sorted(measure.prunable_layers(model)) == ["0", "2"]
    pruner = Pruner.from_sparsity(model, 0.5)
    pruner.apply()
    assert measure.model_sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert set(pruner.sparsity()) == {"0.weight", "2.weight"}


def test_embeddings_are_left_dense_on_purpose():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    assert list(measure.prunable_layers(model)) == ["1"]


class RegisteredOutOfOrder(nn.Module):
    """Two conv-BN pairs registered in another order than they run."""

    def __init__(self):
        super().__init__()
        self.conv_b = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(4)
        self.conv_a = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(4)

    def forward(self, x):
        x = torch.relu(self.bn_a(self.conv_a(x)))
        return self.bn_b(self.conv_b(x))


def test_slimming_pairs_batchnorms_by_the_graph_not_registration_order():
    model = RegisteredOutOfOrder()
    with torch.no_grad():
        model.bn_a.weight.copy_(torch.tensor([0.1, 1.0, 1.0, 1.0]))
        model.bn_b.weight.copy_(torch.tensor([1.0, 1.0, 1.0, 0.2]))
    masks = slimming_masks(model, 0.25)
    assert masks["bn_a.weight"].tolist() == [False, True, True, True]
    assert masks["conv_a.weight"][0].logical_not().all()
    assert masks["conv_a.weight"][1:].all()
    assert masks["conv_b.weight"][3].logical_not().all()


class BatchNormAfterPooling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(torch.max_pool2d(self.conv(x), 2))


def test_slimming_refuses_what_it_cannot_pair():
    with pytest.raises(ValueError, match="BatchNorm 'bn' normalises the output of 'max_pool2d'"):
        slimming_masks(BatchNormAfterPooling(), 0.5)


def test_slimming_refuses_a_model_it_cannot_trace():
    class Branchy(BatchNormAfterPooling):
        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="tracing the model with torch.fx, which failed"):
        slimming_masks(Branchy(), 0.5)


@pytest.mark.parametrize("call", [
    lambda w: criteria.magnitude(w),
    lambda w: criteria.row_norm(w),
    lambda w: criteria.obd_importance(w, torch.ones_like(w)),
    lambda w: granularity_mask(w, 0.5, "fine-grained"),
    lambda w: nm.prune_2_4(w),
    lambda w: nm.mask_2_4(w),
    lambda w: eie.share_weights(w),
])
def test_nan_weights_are_refused(call):
    weight = torch.randn(4, 8)
    weight[1, 2] = NAN
    with pytest.raises(ValueError, match=r"must be finite.*index \(1, 2\)"):
        call(weight)


def test_voxelize_refuses_nan_points():
    from labkit.hardware.sparseconv import voxelize

    points = torch.tensor([[0.0, 0.0, 0.0], [NAN, 0.5, 0.5]])
    with pytest.raises(ValueError, match="points"):
        voxelize(points, 0.1)


@pytest.mark.parametrize("lr", [NAN, math.inf, 0.0, -0.1])
def test_train_refuses_a_learning_rate_that_is_not_a_positive_number(lr):
    with pytest.raises(ValueError, match="lr must be a finite number in \\(0, inf\\]"):
        training.train(tiny_vgg(), loader(), epochs=1, lr=lr, progress=False)


def test_train_stops_when_the_loss_diverges():
    with pytest.raises(FloatingPointError, match="training loss became"):
        training.train(tiny_vgg(), loader(), epochs=3, lr=1e30, progress=False)


@pytest.mark.parametrize("strength", [NAN, math.inf, -1.0])
def test_slimming_penalty_refuses_nan_strength(strength):
    with pytest.raises(ValueError, match="strength must be a finite number"):
        criteria.slimming_penalty(tiny_vgg(), strength)


@pytest.mark.parametrize("argument", ["ratio", "reducible_macs", "fixed_macs", "budget_macs",
                                      "max_ratio"])
def test_limit_ratio_refuses_nan(argument):
    arguments = {"ratio": 0.5, "reducible_macs": 10, "fixed_macs": 0, "budget_macs": 5,
                 "max_ratio": 0.8, argument: NAN}
    ratio = arguments.pop("ratio")
    with pytest.raises(ValueError, match=f"{argument} must be a finite number"):
        amc.limit_ratio(ratio, **arguments)


@pytest.mark.parametrize("value", [NAN, math.inf, 0.0, -1.0])
def test_measure_latency_refuses_run_times_that_would_never_end(value):
    with pytest.raises(ValueError, match="min_run_time must be a finite number"):
        measure.measure_latency(nn.Linear(2, 2), torch.randn(1, 2), min_run_time=value)


def test_model_size_counts_buffers():
    model = tiny_vgg()
    bits = measure.model_size_bits(model)
    state = model.state_dict()
    floats = sum(t.numel() for t in state.values() if t.is_floating_point())
    counters = sum(t.numel() for t in state.values() if not t.is_floating_point())
    assert bits == floats * 32 + counters * 64
    assert measure.model_size_bits(model, buffers=False) == measure.num_parameters(model) * 32
    assert measure.model_size_bits(model, 8) == floats * 8 + counters * 64
    bn_statistics = 2 * (4 + 8) * 32 + 2 * 64
    assert measure.model_size_bits(model, count_nonzero_only=True) == \
        measure.num_parameters(model, count_nonzero_only=True) * 32 + bn_statistics


# Unhelpful errors become errors that name the argument.

@pytest.mark.parametrize("call, argument", [
    (lambda: training.evaluate(tiny_vgg(), empty_loader()), "loader"),
    (lambda: training.evaluate(tiny_vgg(), []), "loader"),
    (lambda: training.evaluate(tiny_vgg(), iter([])), "loader"),
    (lambda: training.train(tiny_vgg(), empty_loader(), progress=False), "train_loader"),
    (lambda: training.train(tiny_vgg(), loader(), empty_loader(), progress=False),
     "val_loader"),
    (lambda: sensitivity.sensitivity_scan(tiny_vgg(), empty_loader(), progress=False),
     "val_loader"),
    (lambda: amc.ChannelPruningEnv(tiny_vgg(), empty_loader()), "val_loader"),
    (lambda: netadapt.netadapt(tiny_vgg(), None, empty_loader(), loader()), "train_loader"),
    (lambda: criteria.taylor_importance(tiny_vgg(), empty_loader()), "loader"),
    (lambda: criteria.fisher_diagonal(tiny_vgg(), empty_loader()), "loader"),
    (lambda: neurons.collect_apoz(tiny_vgg(), empty_loader()), "loader"),
])
def test_empty_loaders_are_named(call, argument):
    with pytest.raises(ValueError, match=f"^{argument} is empty"):
        call()


@pytest.mark.parametrize("call", [
    lambda m: training.evaluate(m, loader()),
    lambda m: training.train(m, loader(), progress=False),
    lambda m: criteria.slimming_penalty(m),
])
def test_a_model_without_parameters_is_refused(call):
    with pytest.raises(ValueError, match=r"model \(Sequential\) has no parameters"):
        call(nn.Sequential(nn.Flatten(), nn.ReLU()))


def test_netadapt_with_the_whole_latency_as_budget_returns_the_start():
    from labkit.pruning.channels import conv_blocks

    model = tiny_vgg()
    names = tuple(f"backbone.{conv}" for conv, _ in conv_blocks(model))
    widths = ((2, 4), (4, 8))
    latency = ({(1, w): float(w) for w in widths[0]},
               {(a, b): float(a * b) for a in widths[0] for b in widths[1]})
    table = netadapt.LatencyTable(names, 1, widths, latency, {})
    family = netadapt.netadapt(model, table, loader(), loader(), latency_budget=1.0,
                               progress=False)
    assert len(family) == 1 and family[0].widths == (4, 8)


def test_batchnorm_without_affine_parameters_is_named():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, affine=False))
    with pytest.raises(ValueError, match=r"BatchNorm '1' has no scale gamma \(affine=False\)"):
        slimming_masks(model, 0.5)
    with pytest.raises(ValueError, match="affine=False"):
        criteria.scaling_factors(model)


def test_row_norm_of_its_own_integer_example():
    weight = torch.tensor([[3, -2], [1, -5]])
    assert criteria.row_norm(weight, p=1).tolist() == [5.0, 6.0]
    assert torch.allclose(criteria.row_norm(weight), torch.tensor([13.0, 26.0]).sqrt())


@pytest.mark.parametrize("call", [
    criteria.magnitude, criteria.row_norm, nm.prune_2_4, eie.share_weights,
    *(lambda w, g=g: granularity_mask(w, 0.5, g) for g in GRANULARITIES),
    lambda w: nm_mask(w, 2, 4), channels.get_input_channel_importance,
    lambda w: neurons.magnitude_channel_selection(w, 2),
])
def test_bool_weights_are_refused(call):
    with pytest.raises(TypeError, match="weight must have a real"):
        call(torch.ones(4, 8, dtype=torch.bool))


@pytest.mark.parametrize("call", [
    lambda: training.train(tiny_vgg(), loader(), seed=None, progress=False),
    lambda: training.seed_everything(None),
    lambda: criteria.random_importance(torch.ones(3), seed=None),
    lambda: data.load("digits", seed=None),
    lambda: amc.DDPGAgent(4, seed=None),
    lambda: eie.share_weights(torch.ones(2, 2), seed=None),
    lambda: neurons.sample_next_conv(tiny_vgg(), 0, loader(), seed=None),
    lambda: schedule.random_reinit(tiny_vgg(), {}, seed=None),
    lambda: schedule.Recipe(loader(), loader(), seed=None, progress=False),
])
def test_seed_none_is_refused(call):
    with pytest.raises(TypeError, match="seed must be an int in .* got None"):
        call()


def test_numpy_scalars_count_as_python_numbers(digits):
    model = tiny_vgg()
    assert measure.model_size_bits(model, np.int64(8)) == measure.model_size_bits(model, 8)
    assert len(digits.loaders(np.int64(100))[0]) == len(digits.loaders(100)[0])
    assert measure.measure_latency(nn.Linear(2, 2), torch.randn(1, 2), threads=np.int64(1),
                                   min_run_time=np.float32(0.01)).threads == 1
    sample = neurons.sample_next_conv(model, 0, loader(), positions_per_image=np.int64(2))
    assert sample.patches.shape[0] == 2 * 12
    assert sensitivity.allocate_sparsities(
        model, sensitivity.sensitivity_scan(model, loader(), sparsities=[0.5], progress=False),
        np.float32(0.9))


def test_numpy_scalars_count_as_python_numbers_in_pruning_and_models():
    assert channels.get_num_channels_to_keep(np.int64(8), np.float32(0.25)) == 6
    assert neurons.magnitude_channel_selection(torch.randn(4, 8, 3, 3), np.int64(2)).numel() == 2
    assert granularity_mask(torch.randn(4, 8), np.float64(0.5), "pattern").sum() == 16
    assert nm_mask(torch.randn(4, 8), np.int64(2), np.int64(4)).sum() == 16
    assert build_kernel_map(torch.zeros(1, 3, dtype=torch.long), np.int64(3)).kernel_size == 3
    assert len(synthetic_point_cloud("sphere", np.int64(5))) == 5
    assert VGG((np.int64(4), "M", np.int64(6))).widths == (4, "M", 6)
    assert ResNet((np.int64(4),), blocks=np.int64(1))(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert MLP(hidden=(np.int64(5),))(torch.zeros(2, 64)).shape == (2, 10)


@pytest.mark.parametrize("call", [
    lambda w: neurons.magnitude_channel_selection(w, 1),
    channels.get_input_channel_importance,
    lambda w: channels.reader_importance([w]),
    lambda w: neurons.lasso_channel_selection(
        neurons.ConvSample(torch.randn(6, 4, 9), torch.randn(6, 2)), w, 1),
])
def test_a_one_dimensional_weight_in_channel_selection_is_refused(call):
    with pytest.raises(ValueError, match=r"weight must be .*got shape \(4,\)"):
        call(torch.ones(4))


def test_dense_layers_as_one_string_is_refused():
    with pytest.raises(TypeError, match=r"dense_layers must be a list of names, got the single "
                                        r"string 'classifier' \(write \['classifier'\]\)"):
        schedule.layer_sparsities(tiny_vgg(), 0.5, "classifier")
    with pytest.raises(TypeError, match="layers must be a list of names"):
        sensitivity.sensitivity_scan(tiny_vgg(), loader(), layers="classifier", progress=False)


@pytest.mark.parametrize("indices", [torch.tensor([0.0, 1.0]), torch.tensor([True, False]),
                                     [0.5, 1.7], [True, False]])
def test_float_and_bool_channel_indices_are_refused(indices):
    from labkit.pruning.channels import remove_channels

    with pytest.raises(TypeError, match="integer"):
        remove_channels(tiny_vgg(), [indices, torch.arange(8)])


def test_least_squares_refuses_float_channel_indices():
    sample = neurons.sample_next_conv(tiny_vgg(), 0, loader())
    with pytest.raises(TypeError, match="keep must"):
        neurons.least_squares_weight(sample, [0.5, 1.7], (3, 3))


class TiedLinears(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x))


@pytest.mark.parametrize("call", [measure.prunable_layers, measure.model_sparsity,
                                  lambda m: Pruner.from_sparsity(m, 0.5)])
def test_tied_weights_are_refused(call):
    with pytest.raises(ValueError, match=r"ties one weight tensor to \['a.weight', 'b.weight'\]"):
        call(TiedLinears())


def test_a_scan_of_another_model_is_refused():
    scan = sensitivity.sensitivity_scan(tiny_vgg(), loader(), sparsities=[0.5], progress=False)
    other = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(ValueError, match="scan is not a scan of this model"):
        sensitivity.allocate_sparsities(other, scan, 0.5)


@pytest.mark.parametrize("threads", [True, 0, 1.0])
def test_threads_must_be_a_count(threads):
    with pytest.raises((TypeError, ValueError), match="threads must be an int"):
        measure.measure_latency(nn.Linear(2, 2), torch.randn(1, 2), threads=threads)
    with pytest.raises((TypeError, ValueError), match="threads must be an int"):
        training.train(tiny_vgg(), loader(), threads=threads, progress=False)


@pytest.mark.parametrize("call", [
    lambda: measure.get_sparsity([0, 1]),
    lambda: measure.tensor_size_bits([0, 1]),
    lambda: criteria.magnitude([0.5, 1.0]),
    lambda: neurons.apoz([[0.0, 1.0]]),
    lambda: nm.matmul_2_4([1.0] * 8, nm.compress_2_4(nm.prune_2_4(torch.randn(2, 8)))),
    lambda: measure.count_macs(nn.Linear(2, 2), [[1.0, 2.0]]),
])
def test_a_list_where_a_tensor_belongs_is_refused(call):
    with pytest.raises(TypeError, match="must be a torch.Tensor, got list"):
        call()


class SharedReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.b(self.relu(self.a(x.flatten(1)[:, :4]))))


def test_a_relu_reused_at_two_places_is_refused_by_apoz():
    with pytest.raises(ValueError, match="nn.ReLU 'relu' runs 2 times in one forward pass"):
        neurons.collect_apoz(SharedReLU(), loader())


def test_an_empty_batch_and_an_all_zero_sample_are_refused_not_answered_with_nan():
    with pytest.raises(ValueError, match=r"activations must be .*N >= 1 samples"):
        neurons.apoz(torch.zeros(0, 4))
    zero = neurons.ConvSample(torch.zeros(6, 2, 9), torch.zeros(6, 3))
    with pytest.raises(ValueError, match="sample explains nothing"):
        neurons.compare_selections(zero, torch.ones(3, 2, 3, 3), 1)
    with pytest.raises(ValueError, match="sample.outputs are all zero"):
        neurons.reconstruction_error(zero, torch.ones(3, 1, 3, 3), [0])
