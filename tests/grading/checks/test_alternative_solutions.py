"""Every check of labs 00, 01, 02, 03, 03b, 07, 07b and 08 graded the referee's way
(:func:`core.all_cases`, :func:`core.expected_outcome`, :func:`core.outcome`,
``check.compare``) on correct solutions written in other styles than labkit's reference
(formula order, dtype of intermediates, loops, NumPy, sort vs rank vs threshold under the
stated tie rule), over 50 seeds of hidden cases; and on the mistakes students make, each
of which must fail with a message naming the problem."""

import copy
import functools
import itertools
import math
from fractions import Fraction

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.grading.checks import CHECKS, core
from labkit.hardware.sparseconv import kernel_offsets
from labkit.models import BasicBlock
from labkit.pruning import channels
from tests.support.hardware_solutions import (
    encode_vectorised,
    encode_with_divmod,
    kernel_map_broadcast,
    kernel_map_from_the_inputs,
    lockstep_as_a_list,
    lockstep_loops,
    lockstep_numpy,
    metadata_loops,
    metadata_topk_of_a_key,
)
from tests.support.lab_submissions import lab_solutions
from tests.support.paths import LABS

SEEDS = range(50)

# --- the referee's path, with expected outcomes cached per seed -------------------------


@functools.cache
def graded(name, seed):
    """The cases of ``seed`` (public then hidden) and the reference's outcome on each."""
    check = CHECKS[name]
    cases = core.all_cases(check, seed)
    return cases, [core.expected_outcome(check, case) for case in cases]


def first_failure(name, solution, seeds=SEEDS):
    """``"<case>: <what differs>"`` for the first case ``solution`` fails, or None. The
    public cases run once (they are the same for every seed), the hidden ones per seed;
    a check that may change its arguments gets fresh cases."""
    check = CHECKS[name]
    public = len(check.cases())
    for number, seed in enumerate(seeds):
        cases, expected = graded(name, seed)
        if not check.pure:
            cases = core.all_cases(check, seed)
        start = 0 if number == 0 else public
        for case, want in zip(cases[start:], expected[start:], strict=True):
            problem = check.compare(want, core.outcome(check, solution, case))
            if problem:
                return f"seed {seed}, {case.name}: {problem}"
    return None


def from_lab(stem, function):
    """The lab's own solution of ``function``, loaded when first called."""
    def solution(*args, **kwargs):
        return lab_solutions(stem)[function](*args, **kwargs)

    solution.__name__ = f"{stem}:{function}"
    return solution


def row_major_ranking(scores):
    """Indices of a 1-D ``scores`` from the highest to the lowest, ties in index order:
    NumPy's lexsort (last key first)."""
    values = scores.detach().double().numpy()
    return torch.from_numpy(np.lexsort((np.arange(len(values)), -values)))


def rank_in_groups(groups):
    """For every entry of each row of ``groups``: how many entries of its row come before
    it (a higher score, or an equal score at a lower index). No sort at all."""
    scores = groups.unsqueeze(-1)  # entry i against entry j on the last dimension
    others = groups.unsqueeze(-2)
    size = groups.shape[-1]
    lower = torch.arange(size)[None, :] < torch.arange(size)[:, None]
    return ((others > scores) | ((others == scores) & lower)).sum(dim=-1)


# --- lab 00 ---------------------------------------------------------------------------


def sparsity_zeros_over_size(tensor):
    return (tensor == 0).sum().item() / tensor.numel()


def sparsity_float32_mean(tensor):
    return (tensor == 0).float().mean().item()


def sparsity_numpy(tensor):
    return np.mean(tensor.numpy() == 0)  # a numpy.float64


def sparsity_as_a_0d_tensor(tensor):
    return 1 - torch.count_nonzero(tensor) / tensor.numel()


def sparsity_loop(tensor):
    values = tensor.flatten().tolist()
    return sum(1 for value in values if value == 0) / len(values)


def size_loop(model, data_width=32, count_nonzero_only=False):
    total = 0
    for _, parameter in model.named_parameters():
        total += int((parameter != 0).sum()) if count_nonzero_only else parameter.numel()
    return total * data_width


def size_numpy(model, data_width=32, count_nonzero_only=False):
    counts = [np.count_nonzero(p.detach().numpy()) if count_nonzero_only else p.numel()
              for p in model.parameters()]
    return np.sum(counts, dtype=np.int64) * data_width  # a numpy.int64


def size_as_a_0d_tensor(model, data_width=32, count_nonzero_only=False):
    if count_nonzero_only:
        return sum(p.ne(0).sum() for p in model.parameters()) * data_width
    return torch.tensor(sum(p.numel() for p in model.parameters())) * data_width


# --- lab 01 ---------------------------------------------------------------------------


def fine_grained_loop(weight, sparsity):
    if not 0 <= sparsity < 1:
        raise ValueError("sparsity must be in [0, 1)")
    values = weight.flatten().abs().tolist()
    pruned = round(len(values) * sparsity)
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    keep = [False] * len(values)
    for index in order[:len(values) - pruned]:
        keep[index] = True
    return torch.tensor(keep).reshape(weight.shape)


def fine_grained_lexsort(weight, sparsity):
    if sparsity < 0 or sparsity >= 1:
        raise ValueError("sparsity out of range")
    flat = weight.reshape(-1)
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[row_major_ranking(flat.abs())[:flat.numel() - round(flat.numel() * sparsity)]] = True
    return keep.view(weight.shape)


def fine_grained_kthvalue(weight, sparsity):
    """The original lab's threshold, with its ties settled: of the weights at the
    threshold, the first ones in row-major order stay."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"bad sparsity {sparsity}")
    magnitude = weight.abs().flatten()
    pruned = round(magnitude.numel() * sparsity)
    if pruned == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    threshold = magnitude.kthvalue(pruned).values
    tied = magnitude == threshold
    tied_to_prune = pruned - int((magnitude < threshold).sum())
    tied_kept = tied & (tied.cumsum(0) <= int(tied.sum()) - tied_to_prune)
    return ((magnitude > threshold) | tied_kept).reshape(weight.shape)


def nm_rank(weight, n, m):
    if not 0 <= n <= m or weight.shape[1] % m:
        raise ValueError("bad n:m for this weight")
    groups = weight.abs().movedim(1, -1)
    groups = groups.reshape(*groups.shape[:-1], -1, m)
    keep = rank_in_groups(groups) < n
    return keep.flatten(-2).movedim(-1, 1)


def nm_loop(weight, n, m):
    if n < 0 or n > m:
        raise ValueError("n must be in [0, m]")
    if weight.shape[1] % m != 0:
        raise ValueError("m must divide the input channels")
    keep = torch.zeros(weight.shape, dtype=torch.bool)
    for o in range(weight.shape[0]):
        for position in itertools.product(*(range(d) for d in weight.shape[2:])):
            for start in range(0, weight.shape[1], m):
                group = [abs(weight[(o, start + j, *position)].item()) for j in range(m)]
                for j in sorted(range(m), key=lambda j: (-group[j], j))[:n]:
                    keep[(o, start + j, *position)] = True
    return keep


def nm_argsort_of_negated(weight, n, m):
    if m < 1 or not 0 <= n <= m or weight.shape[1] % m:
        raise ValueError("invalid")
    last = weight.transpose(1, -1).abs()
    groups = last.reshape(-1, m)
    order = torch.argsort(-groups, dim=1, stable=True)
    keep = torch.zeros(groups.shape, dtype=torch.bool).scatter(1, order[:, :n], True)
    return keep.reshape(last.shape).transpose(1, -1)


# --- lab 02 ---------------------------------------------------------------------------


def row_norm_linalg(weight, p):
    return torch.linalg.norm(weight.reshape(weight.shape[0], -1), ord=p, dim=1)


def row_norm_loop(weight, p):
    return torch.stack([row.abs().pow(p).sum() ** (1 / p) for row in weight])


def row_norm_in_float64(weight, p):
    return weight.double().flatten(1).norm(p=p, dim=1).float()


def hessian_batched(loss, parameter):
    (gradient,) = torch.autograd.grad(loss, parameter, create_graph=True)
    count = parameter.numel()
    (rows,) = torch.autograd.grad(gradient.flatten(), parameter,
                                  grad_outputs=torch.eye(count), is_grads_batched=True)
    return rows.reshape(count, count).diagonal().reshape(parameter.shape)


def hessian_vector_products(loss, parameter):
    (gradient,) = torch.autograd.grad(loss, parameter, create_graph=True)
    entries = []
    for i in range(parameter.numel()):
        direction = torch.zeros(parameter.numel())
        direction[i] = 1.0
        (product,) = torch.autograd.grad(gradient, parameter,
                                         grad_outputs=direction.reshape(parameter.shape),
                                         retain_graph=True)
        entries.append(product.flatten()[i])
    return torch.stack(entries).reshape(parameter.shape)


def obd_other_order(weight, hessian_diagonal):
    return hessian_diagonal * weight * weight / 2


def obd_numpy(weight, hessian_diagonal):
    return torch.from_numpy(0.5 * hessian_diagonal.numpy() * weight.numpy() ** 2)


def obd_square_then_mul(weight, hessian_diagonal):
    return torch.mul(hessian_diagonal, weight.square()).mul(0.5)


def batchnorms(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def slimming_concatenated(model, strength):
    return strength * torch.cat([bn.weight for bn in batchnorms(model)]).abs().sum()


def slimming_loop(model, strength):
    total = torch.zeros(())
    for bn in batchnorms(model):
        total = total + torch.linalg.vector_norm(bn.weight, ord=1)
    return total * strength


# --- lab 03 ---------------------------------------------------------------------------


def apoz_mean_over_other_dims(activations):
    return (activations == 0).float().mean(dim=[d for d in range(activations.dim()) if d != 1])


def apoz_loop(activations):
    return torch.tensor([float((activations[:, c] == 0).sum()) / activations[:, c].numel()
                         for c in range(activations.shape[1])])


def apoz_count_nonzero(activations):
    per_channel = activations.transpose(0, 1).reshape(activations.shape[1], -1)
    return 1 - per_channel.count_nonzero(dim=1) / per_channel.shape[1]


def keep_from_pruned_product(channels, prune_ratio):
    return max(1, round(channels - prune_ratio * channels))


def keep_numpy(channels, prune_ratio):
    return np.maximum(1, np.rint((1 - prune_ratio) * channels)).astype(np.int64)


def keep_exact_fraction(channels, prune_ratio):
    return max(1, round((1 - Fraction(str(prune_ratio))) * channels))


def importance_vector_norm(weight):
    columns = weight.transpose(0, 1).reshape(weight.shape[1], -1)
    return torch.linalg.vector_norm(columns, dim=1).float()


def importance_loop_in_float64(weight):
    return torch.stack([weight[:, j].double().pow(2).sum().sqrt()
                        for j in range(weight.shape[1])]).float()


def importance_float32_first(weight):
    dims = (0, 2, 3) if weight.dim() == 4 else (0,)
    return weight.float().square().sum(dim=dims).sqrt()


def sort_with_index_select(model):
    model = copy.deepcopy(model)
    blocks = channels.conv_blocks(model)
    convs = [getattr(model.backbone, conv) for conv, _ in blocks]
    bns = [getattr(model.backbone, bn) for _, bn in blocks]
    with torch.no_grad():
        for conv, bn, reader in zip(convs, bns, [*convs[1:], model.classifier], strict=True):
            importance = importance_loop_in_float64(reader.weight).tolist()
            order = torch.tensor(sorted(range(len(importance)), key=lambda j: -importance[j]))
            conv.weight.data = conv.weight.data.index_select(0, order)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).data = getattr(bn, name).data.index_select(0, order)
            reader.weight.data = reader.weight.data.index_select(1, order)
    return model


def sort_through_the_state_dict(model):
    state = {key: value.clone() for key, value in model.state_dict().items()}
    names = [*channels.conv_blocks(model)]
    readers = [f"backbone.{conv}" for conv, _ in names[1:]] + ["classifier"]
    for (conv, bn), reader in zip(names, readers, strict=True):
        order = state[f"{reader}.weight"].pow(2).transpose(0, 1).flatten(1).sum(1).argsort(
            descending=True)
        state[f"backbone.{conv}.weight"] = state[f"backbone.{conv}.weight"][order]
        for part in ("weight", "bias", "running_mean", "running_var"):
            state[f"backbone.{bn}.{part}"] = state[f"backbone.{bn}.{part}"][order]
        state[f"{reader}.weight"] = state[f"{reader}.weight"][:, order]
    result = copy.deepcopy(model)
    result.load_state_dict(state)
    return result


# --- lab 03b --------------------------------------------------------------------------


def groups_by_stage(model):
    """Walk ``model.stages`` by index; the stream is the group the next identity joins."""
    stream = ["stem.conv"]
    groups = [stream]
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            prefix = f"stages.{i}.{j}"
            groups.append([f"{prefix}.conv1"])
            if hasattr(block.shortcut, "conv"):
                stream = [f"{prefix}.conv2", f"{prefix}.shortcut.conv"]
                groups.append(stream)
            else:
                stream.append(f"{prefix}.conv2")
    return groups


def groups_by_labels(model):
    """Give every conv the label of its group in a dict, then collect the labels."""
    label, current = {"stem.conv": 0}, 0
    for name, module in model.named_modules():
        if isinstance(module, BasicBlock):
            label[f"{name}.conv1"] = len(set(label.values())) + 1000
            if not isinstance(module.shortcut, nn.Identity):
                current = len(set(label.values()))
                label[f"{name}.shortcut.conv"] = current
            label[f"{name}.conv2"] = current
    groups = {}
    for name, group in label.items():
        groups.setdefault(group, set()).add(name)
    return tuple(tuple(group) for group in groups.values())


def reader_importance_summed_squares(weights):
    squares = [w.double().transpose(0, 1).flatten(1).pow(2).sum(dim=1) for w in weights]
    if len({s.numel() for s in squares}) > 1:
        raise ValueError("readers of different channel counts")
    return torch.stack(squares).sum(dim=0).sqrt().float()


def reader_importance_loop(weights):
    counts = {w.shape[1] for w in weights}
    if len(counts) != 1:
        raise ValueError(f"channel counts differ: {counts}")
    return torch.tensor([math.sqrt(sum(float(w[:, j].pow(2).sum()) for w in weights))
                         for j in range(counts.pop())], dtype=torch.float32)


# --- lab 08 ---------------------------------------------------------------------------


def wanda_lexsort(weight, input_norms, sparsity):
    if not 0 <= sparsity < 1 or input_norms.numel() != weight.shape[1] or input_norms.dim() != 1:
        raise ValueError("bad arguments")
    scores = weight.abs() * input_norms
    keep = torch.zeros(weight.shape, dtype=torch.bool)
    kept = weight.shape[1] - round(weight.shape[1] * sparsity)
    for row in range(weight.shape[0]):
        keep[row, row_major_ranking(scores[row])[:kept]] = True
    return keep


def wanda_rank(weight, input_norms, sparsity):
    if sparsity < 0 or sparsity >= 1:
        raise ValueError("sparsity")
    if tuple(input_norms.shape) != (weight.shape[1],):
        raise ValueError("one norm per input feature")
    pruned = round(weight.shape[1] * sparsity)
    return rank_in_groups(weight.abs() * input_norms[None]) < weight.shape[1] - pruned


def obs_outer_product(weight, factor, column, keep):
    w = weight[:, column]
    error = torch.where(keep, 0.0, w) / factor[column, column]
    updated = weight.clone()
    updated[:, column:] = updated[:, column:] - torch.outer(error, factor[column, column:])
    updated[:, column] = torch.where(keep, w, 0.0)
    return updated


def obs_rows_in_float64(weight, factor, column, keep):
    updated = weight.double().clone()
    u = factor.double()
    for row in range(weight.shape[0]):
        if not keep[row]:
            error = updated[row, column] / u[column, column]
            updated[row, column:] -= error * u[column, column:]
    return updated.float()


def nm_scores_rank(scores, n, m):
    if scores.shape[1] % m or n > m or n < 0 or bool((scores < 0).any()):
        raise ValueError("invalid arguments")
    return (rank_in_groups(scores.reshape(scores.shape[0], -1, m)) < n).reshape(scores.shape)


def nm_scores_loop(scores, n, m):
    rows, columns = scores.shape
    if columns % m != 0:
        raise ValueError("m must divide the inputs")
    if n > m:
        raise ValueError("n > m")
    if scores.min() < 0:
        raise ValueError("negative score")
    keep = torch.zeros(rows, columns, dtype=torch.bool)
    for r in range(rows):
        for start in range(0, columns, m):
            group = scores[r, start:start + m].tolist()
            for j in sorted(range(m), key=lambda j: (-group[j], j))[:n]:
                keep[r, start + j] = True
    return keep


def nm_scores_negated_argsort(scores, n, m):
    if scores.shape[-1] % m or not 0 <= n <= m or (scores < 0).any():
        raise ValueError("bad arguments")
    groups = scores.unflatten(1, (-1, m))
    order = (-groups).argsort(dim=-1, stable=True)
    return torch.zeros_like(groups, dtype=torch.bool).scatter(-1, order[..., :n], True).flatten(1)


# --- every check, its solutions ---------------------------------------------------------

SOLUTIONS = {
    "check_get_sparsity": [from_lab("00_baseline", "get_sparsity"), sparsity_zeros_over_size,
                           sparsity_float32_mean, sparsity_numpy, sparsity_as_a_0d_tensor,
                           sparsity_loop],
    "check_get_model_size": [from_lab("00_baseline", "get_model_size"), size_loop, size_numpy,
                             size_as_a_0d_tensor],
    "check_fine_grained_mask": [from_lab("01_granularity", "fine_grained_mask"),
                                fine_grained_loop, fine_grained_lexsort,
                                fine_grained_kthvalue],
    "check_nm_mask": [from_lab("01_granularity", "nm_mask"), nm_rank, nm_loop,
                      nm_argsort_of_negated],
    "check_row_norm": [from_lab("02_criteria", "row_norm"), row_norm_linalg, row_norm_loop,
                       row_norm_in_float64],
    "check_hessian_diagonal": [from_lab("02_criteria", "hessian_diagonal"), hessian_batched,
                               hessian_vector_products],
    "check_obd_importance": [from_lab("02_criteria", "obd_importance"), obd_other_order,
                             obd_numpy, obd_square_then_mul],
    "check_slimming_penalty": [from_lab("02_criteria", "slimming_penalty"),
                               slimming_concatenated, slimming_loop],
    "check_apoz": [from_lab("03_neuron_pruning", "apoz"), apoz_mean_over_other_dims, apoz_loop,
                   apoz_count_nonzero],
    "check_get_num_channels_to_keep": [from_lab("03_neuron_pruning", "get_num_channels_to_keep"),
                                       keep_from_pruned_product, keep_numpy,
                                       keep_exact_fraction],
    "check_input_channel_importance": [
        from_lab("03_neuron_pruning", "get_input_channel_importance"), importance_vector_norm,
        importance_loop_in_float64, importance_float32_first],
    "check_channel_sorting": [from_lab("03_neuron_pruning", "apply_channel_sorting"),
                              sort_with_index_select, sort_through_the_state_dict],
    "check_residual_groups": [from_lab("03b_residual_pruning", "residual_groups"),
                              groups_by_stage, groups_by_labels],
    "check_reader_importance": [from_lab("03b_residual_pruning", "reader_importance"),
                                reader_importance_summed_squares, reader_importance_loop],
    "check_relative_index_encode": [from_lab("07_hardware_eie", "relative_index_encode"),
                                    encode_vectorised, encode_with_divmod],
    "check_lockstep_cycles": [from_lab("07_hardware_eie", "lockstep_cycles"), lockstep_loops,
                              lockstep_numpy, lockstep_as_a_list],
    "check_pack_2_4_metadata": [from_lab("07b_hardware_nm_sparseconv", "pack_2_4_metadata"),
                                metadata_loops, metadata_topk_of_a_key],
    "check_kernel_map": [from_lab("07b_hardware_nm_sparseconv", "kernel_map"),
                         kernel_map_broadcast, kernel_map_from_the_inputs],
    "check_wanda_mask": [from_lab("08_llm_pruning", "wanda_mask"), wanda_lexsort, wanda_rank],
    "check_obs_update": [from_lab("08_llm_pruning", "obs_update"), obs_outer_product,
                         obs_rows_in_float64],
    "check_nm_score_mask": [from_lab("08_llm_pruning", "nm_score_mask"), nm_scores_rank,
                            nm_scores_loop, nm_scores_negated_argsort],
}


def checks_of_the_labs():
    """The check every check cell of these labs calls."""
    stems = ("00_baseline", "01_granularity", "02_criteria", "03_neuron_pruning",
             "03b_residual_pruning", "07_hardware_eie", "07b_hardware_nm_sparseconv",
             "08_llm_pruning")
    called = set()
    for stem in stems:
        for cell in nbformat.read(LABS / f"{stem}.ipynb", as_version=4).cells:
            if "check" in cell.metadata.get("tags", []):
                called.add(cell.source.strip().removeprefix("checks.").split("(")[0])
    return called


def test_every_check_of_these_labs_has_solutions_in_other_styles():
    assert checks_of_the_labs() == set(SOLUTIONS)
    assert all(len(solutions) >= 3 for solutions in SOLUTIONS.values())


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_correct_solutions_in_other_styles_pass_public_and_hidden_cases(name):
    for solution in SOLUTIONS[name]:
        assert first_failure(name, solution) is None, (name, solution.__name__)


# --- typical mistakes, each named by the feedback -------------------------------------


def lab(stem, function):
    return lab_solutions(stem)[function]


def sparsity_as_density(tensor):
    return tensor.count_nonzero().item() / tensor.numel()


def sparsity_as_a_one_element_tensor(tensor):
    return (tensor == 0).float().mean().reshape(1)


def sparsity_as_a_percentage(tensor):
    return 100 * (tensor == 0).sum().item() / tensor.numel()


def size_with_buffers(model, data_width=32, count_nonzero_only=False):
    tensors = model.state_dict().values()
    count = sum(int(t.count_nonzero()) if count_nonzero_only else t.numel() for t in tensors)
    return count * data_width


def size_in_bytes(model, data_width=32, count_nonzero_only=False):
    return lab("00_baseline", "get_model_size")(model, data_width, count_nonzero_only) / 8


def size_ignoring_nonzero_only(model, data_width=32, count_nonzero_only=False):
    return lab("00_baseline", "get_model_size")(model, data_width)


def fine_grained_kthvalue_with_ties(weight, sparsity):
    if not 0 <= sparsity < 1:
        raise ValueError("sparsity")
    pruned = round(weight.numel() * sparsity)
    if pruned == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    return weight.abs() > weight.abs().flatten().kthvalue(pruned).values


def fine_grained_truncating(weight, sparsity):
    if not 0 <= sparsity < 1:
        raise ValueError("sparsity")
    flat = weight.flatten().abs()
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[row_major_ranking(flat)[:flat.numel() - int(flat.numel() * sparsity)]] = True
    return keep.reshape(weight.shape)


def fine_grained_keeping_the_last_of_ties(weight, sparsity):
    if not 0 <= sparsity < 1:
        raise ValueError("sparsity")
    flat = weight.abs().flatten()
    pruned = torch.argsort(flat, stable=True)[:round(flat.numel() * sparsity)]
    return torch.ones(flat.numel(), dtype=torch.bool).index_fill(0, pruned, False).reshape(
        weight.shape)


def fine_grained_float_mask(weight, sparsity):
    return fine_grained_lexsort(weight, sparsity).float()


def fine_grained_without_the_range_check(weight, sparsity):
    return fine_grained_lexsort(weight, min(max(sparsity, 0.0), 0.999))


def fine_grained_in_place(weight, sparsity):
    mask = fine_grained_lexsort(weight, sparsity)
    weight.mul_(mask)
    return mask


def nm_along_the_last_dimension(weight, n, m):
    if not 0 <= n <= m or weight.shape[1] % m:
        raise ValueError("bad n:m")
    groups = weight.abs().reshape(-1, m)
    keep = torch.zeros(groups.shape, dtype=torch.bool)
    keep.scatter_(1, torch.sort(groups, dim=1, descending=True, stable=True).indices[:, :n], True)
    return keep.reshape(weight.shape)


def nm_without_refusing_a_negative_n(weight, n, m):
    return nm_rank(weight, max(n, 0), m)


def nm_float_mask_from_scatter(weight, n, m):
    return lab("01_granularity", "nm_mask")(weight, n, m).float()


def nm_ties_to_the_last(weight, n, m):
    if not 0 <= n <= m or weight.shape[1] % m:
        raise ValueError("bad n:m")
    channels_last = weight.abs().movedim(1, -1)
    groups = channels_last.reshape(-1, m)
    order = torch.argsort(groups, dim=1, stable=True)  # ascending: the last tie ranks first
    keep = torch.zeros(groups.shape, dtype=torch.bool).scatter(1, order[:, m - n:], True)
    return keep.reshape(channels_last.shape).movedim(-1, 1)


def row_norm_of_columns(weight, p):
    return weight.flatten(1).norm(p=p, dim=0)


def row_norm_squared(weight, p):
    return weight.flatten(1).abs().pow(p).sum(dim=1)


def row_norm_in_float64_kept(weight, p):
    return weight.double().flatten(1).norm(p=p, dim=1)


def hessian_squared_gradient(loss, parameter):
    (gradient,) = torch.autograd.grad(loss, parameter)
    return gradient**2


def hessian_without_create_graph(loss, parameter):
    (gradient,) = torch.autograd.grad(loss, parameter)
    return torch.stack([torch.autograd.grad(g, parameter)[0].flatten()[i]
                        for i, g in enumerate(gradient.flatten())]).reshape(parameter.shape)


def hessian_in_float64(loss, parameter):
    return hessian_batched(loss, parameter).double()


def obd_without_the_half(weight, hessian_diagonal):
    return hessian_diagonal * weight**2


def obd_with_absolute_curvature(weight, hessian_diagonal):
    return 0.5 * hessian_diagonal.abs() * weight**2


def obd_in_place(weight, hessian_diagonal):
    return weight.pow_(2).mul_(hessian_diagonal).mul_(0.5)


def slimming_as_a_float(model, strength):
    return slimming_concatenated(model, strength).item()


def slimming_squared(model, strength):
    return strength * sum(bn.weight.pow(2).sum() for bn in batchnorms(model))


def slimming_first_batchnorm_only(model, strength):
    return strength * batchnorms(model)[0].weight.abs().sum()


def apoz_per_sample(activations):
    return (activations == 0).float().flatten(1).mean(dim=1)


def apoz_of_the_non_zeros(activations):
    return 1 - apoz_mean_over_other_dims(activations)


def apoz_counts(activations):
    return (activations == 0).transpose(0, 1).flatten(1).sum(dim=1).float()


def keep_rounding_the_pruned_count(channels, prune_ratio):
    return max(1, channels - round(prune_ratio * channels))


def keep_rounding_half_up(channels, prune_ratio):
    return max(1, math.floor((1 - prune_ratio) * channels + 0.5))


def keep_truncating(channels, prune_ratio):
    return max(1, int((1 - prune_ratio) * channels))


def keep_possibly_none(channels, prune_ratio):
    return round((1 - prune_ratio) * channels)


def keep_as_a_float(channels, prune_ratio):
    return max(1.0, np.round((1 - prune_ratio) * channels).item())


def importance_of_rows(weight):
    return weight.flatten(1).norm(dim=1).float()


def importance_l1(weight):
    return weight.abs().transpose(0, 1).flatten(1).sum(dim=1).float()


def importance_in_the_weight_dtype(weight):
    return weight.transpose(0, 1).flatten(1).norm(dim=1)


def sort_ascending(model):
    model = copy.deepcopy(model)
    blocks = channels.conv_blocks(model)
    convs = [getattr(model.backbone, conv) for conv, _ in blocks]
    bns = [getattr(model.backbone, bn) for _, bn in blocks]
    with torch.no_grad():
        for conv, bn, reader in zip(convs, bns, [*convs[1:], model.classifier], strict=True):
            order = importance_vector_norm(reader.weight).argsort()
            conv.weight.copy_(conv.weight[order])
            for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                tensor.copy_(tensor[order])
            reader.weight.copy_(reader.weight[:, order])
    return model


def sort_in_place(model):
    sorted_copy = sort_with_index_select(model)
    model.load_state_dict(sorted_copy.state_dict())
    return model


def groups_one_per_conv(model):
    return [[name] for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def groups_projection_in_the_stream(model):
    stream = ["stem.conv"]
    groups = [stream]
    for name, module in model.named_modules():
        if isinstance(module, BasicBlock):
            groups.append([f"{name}.conv1"])
            stream.append(f"{name}.conv2")
            if not isinstance(module.shortcut, nn.Identity):
                stream.append(f"{name}.shortcut.conv")
    return groups


def groups_without_the_stem(model):
    return [group for group in groups_by_stage(model) if "stem.conv" not in group] + [
        [name for name in groups_by_stage(model)[0] if name != "stem.conv"]]


def reader_importance_summing_norms(weights):
    reader_importance_summed_squares(weights)  # the same refusal
    return sum(importance_vector_norm(w) for w in weights)


def reader_importance_truncating(weights):
    count = min(w.shape[1] for w in weights)
    return reader_importance_summed_squares([w[:, :count] for w in weights])


def reader_importance_in_float64(weights):
    return reader_importance_summed_squares(weights).double()


def encode_without_padding(column_codes):
    rows = column_codes.nonzero().flatten()
    runs = rows - torch.cat([torch.tensor([-1]), rows[:-1]]) - 1
    return column_codes[rows].to(torch.uint8), runs.to(torch.uint8)


def encode_padding_from_15(column_codes):
    v, z, run = [], [], 0
    for code in column_codes.tolist():
        if code == 0:
            run += 1
            continue
        while run >= 15:
            v, z, run = [*v, 0], [*z, 15], run - 16
        v, z, run = [*v, code], [*z, max(run, 0)], 0
    return torch.tensor(v, dtype=torch.uint8), torch.tensor(z, dtype=torch.uint8)


def encode_trailing_zeros(column_codes):
    v, z = encode_with_divmod(column_codes)
    trailing = len(column_codes) - 1 - (int(column_codes.nonzero().max()) if v.numel() else -1)
    return (torch.cat([v, torch.zeros(1, dtype=torch.uint8)]),
            torch.cat([z, torch.tensor([min(trailing, 15)], dtype=torch.uint8)])) \
        if trailing else (v, z)


def encode_as_int64(column_codes):
    return tuple(part.long() for part in encode_with_divmod(column_codes))


def lockstep_without_skipping(encoded, x):
    return lockstep_loops(encoded, torch.ones_like(x))


def lockstep_total_work(encoded, x):
    cycles, work = lockstep_loops(encoded, x)
    return int(work.sum()), work


def lockstep_cycles_as_a_float(encoded, x):
    cycles, work = lockstep_loops(encoded, x)
    return float(cycles), work


def metadata_fill_not_sorted(weight):
    rows, columns = weight.shape
    positions = []
    for r in range(rows):
        for start in range(0, columns, 4):
            group = weight[r, start:start + 4].tolist()
            kept = [i for i in range(4) if group[i] != 0]
            positions.append(kept + [i for i in range(4) if group[i] == 0][:2 - len(kept)])
    values = torch.tensor(positions).reshape(rows, -1)
    values = F.pad(values, (0, -values.shape[1] % 4))
    return (values.reshape(rows, -1, 4) << torch.tensor([0, 2, 4, 6])).sum(-1).to(torch.uint8)


def metadata_high_bits_first(weight):
    metadata = metadata_loops(weight)
    fields = [(metadata >> shift) & 3 for shift in (6, 4, 2, 0)]
    return sum(field << (2 * slot) for slot, field in enumerate(fields)).to(torch.uint8)


def metadata_as_int64(weight):
    return metadata_loops(weight).long()


def kernel_map_swapped(coords, kernel_size):
    return [pairs.flip(1) for pairs in kernel_map_broadcast(coords, kernel_size)]


def kernel_map_minus_d(coords, kernel_size):
    return [(coords[:, None] == coords[None] - offset).all(-1).nonzero()
            for offset in kernel_offsets(kernel_size)]


def kernel_map_other_offset_order(coords, kernel_size):
    pairs = kernel_map_broadcast(coords, kernel_size)
    order = kernel_offsets(kernel_size)[:, [2, 1, 0]]  # z slowest instead of x
    positions = {tuple(o): i for i, o in enumerate(kernel_offsets(kernel_size).tolist())}
    return [pairs[positions[tuple(o)]] for o in order.tolist()]


def wanda_over_the_whole_layer(weight, input_norms, sparsity):
    if not 0 <= sparsity < 1 or input_norms.shape != (weight.shape[1],):
        raise ValueError("bad arguments")
    flat = (weight.abs() * input_norms).flatten()
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[row_major_ranking(flat)[:flat.numel() - round(flat.numel() * sparsity)]] = True
    return keep.reshape(weight.shape)


def wanda_weights_only(weight, input_norms, sparsity):
    return wanda_rank(weight, torch.ones_like(input_norms), sparsity)


def wanda_ties_to_the_higher_column(weight, input_norms, sparsity):
    if input_norms.shape != (weight.shape[1],):
        raise ValueError("norms")
    return wanda_rank(weight.flip(1), input_norms.flip(0), sparsity).flip(1)


def wanda_without_refusing_the_norms(weight, input_norms, sparsity):
    if not 0 <= sparsity < 1:
        raise ValueError("sparsity")
    scores = weight.abs() * input_norms[None, :]  # broadcasting fails on its own
    return rank_in_groups(scores) < weight.shape[1] - round(weight.shape[1] * sparsity)


def obs_dividing_by_the_square(weight, factor, column, keep):
    w = weight[:, column]
    error = torch.where(keep, 0.0, w) / factor[column, column] ** 2
    updated = weight.clone()
    updated[:, column:] -= torch.outer(error, factor[column, column:])
    updated[:, column] = torch.where(keep, w, 0.0)
    return updated


def obs_with_the_column_of_u(weight, factor, column, keep):
    return obs_outer_product(weight, factor.T, column, keep)


def obs_in_place(weight, factor, column, keep):
    weight.copy_(obs_outer_product(weight, factor, column, keep))
    return weight


def nm_scores_without_refusing_negatives(scores, n, m):
    return nm_scores_rank(scores.clamp(min=0), n, m)


def nm_scores_ties_to_the_higher_index(scores, n, m):
    return nm_scores_rank(scores.flip(1), n, m).flip(1) if scores.shape[1] % m == 0 \
        else nm_scores_rank(scores, n, m)


def nm_scores_strided_groups(scores, n, m):
    if scores.shape[1] % m or not 0 <= n <= m or (scores < 0).any():
        raise ValueError("bad arguments")
    strided = scores.reshape(scores.shape[0], m, -1).transpose(1, 2)
    keep = rank_in_groups(strided) < n
    return keep.transpose(1, 2).reshape(scores.shape)


MISTAKES = [
    ("check_get_sparsity", sparsity_as_density, "all non-zero: expected 0.0, got 1.0"),
    ("check_get_sparsity", sparsity_as_a_one_element_tensor,
     "expected a number, got a Tensor tensor of shape (1,)"),
    ("check_get_sparsity", sparsity_as_a_percentage, "all zero: expected 1.0, got 100.0"),
    ("check_get_model_size", size_with_buffers, "small VGG, 32-bit"),
    ("check_get_model_size", size_in_bytes, "expected an int, got a float"),
    ("check_get_model_size", size_ignoring_nonzero_only, "count_nonzero_only=True"),
    ("check_fine_grained_mask", fine_grained_kthvalue_with_ties,
     "ties: four equal weights at 50% keep the first two"),
    ("check_fine_grained_mask", fine_grained_truncating, "prunes round(288 * 0.7) = 202"),
    ("check_fine_grained_mask", fine_grained_keeping_the_last_of_ties, "ties"),
    ("check_fine_grained_mask", fine_grained_float_mask,
     "expected dtype torch.bool, got dtype torch.float32"),
    ("check_fine_grained_mask", fine_grained_without_the_range_check,
     "sparsity 1.0 is outside [0, 1): expected ValueError raised"),
    ("check_fine_grained_mask", fine_grained_in_place, "changed its tensor argument 0 in place"),
    ("check_nm_mask", nm_along_the_last_dimension, "groups along input channels"),
    ("check_nm_mask", nm_without_refusing_a_negative_n, "n=-1 < 0: expected ValueError raised"),
    ("check_nm_mask", nm_float_mask_from_scatter,
     "expected dtype torch.bool, got dtype torch.float32"),
    ("check_nm_mask", nm_ties_to_the_last, "ties: all-equal weights keep the first 2"),
    ("check_row_norm", row_norm_of_columns, "L1: 5 and 6: 2 of 2 elements differ"),
    ("check_row_norm", row_norm_squared, "L2: sqrt(13) and sqrt(26)"),
    ("check_row_norm", row_norm_in_float64_kept,
     "expected dtype torch.float32, got dtype torch.float64"),
    ("check_hessian_diagonal", hessian_squared_gradient, "the diagonal of A"),
    ("check_hessian_diagonal", hessian_without_create_graph, "raised RuntimeError"),
    ("check_hessian_diagonal", hessian_in_float64,
     "expected dtype torch.float32, got dtype torch.float64"),
    ("check_obd_importance", obd_without_the_half, "three weights: 3 of 3 elements differ"),
    ("check_obd_importance", obd_with_absolute_curvature, "negative curvature"),
    ("check_obd_importance", obd_in_place, "changed its tensor argument 0 in place"),
    ("check_slimming_penalty", slimming_as_a_float, "a tensor that autograd can differentiate"),
    ("check_slimming_penalty", slimming_squared,
     "fresh VGG, gamma = 1, strength 0.0001: 12 of 13 elements differ"),
    ("check_slimming_penalty", slimming_first_batchnorm_only, "fresh VGG, gamma = 1"),
    ("check_apoz", apoz_per_sample, "expected shape (3,), got shape (2,)"),
    ("check_apoz", apoz_of_the_non_zeros, "the lecture's 2x3x4x4 example"),
    ("check_apoz", apoz_counts, "expected 0.34375, got 11.0"),
    ("check_get_num_channels_to_keep", keep_rounding_the_pruned_count,
     "round the kept count: 3 channels at 0.5 keep round(1.5) = 2: expected 2, "
     "got 1"),
    ("check_get_num_channels_to_keep", keep_rounding_half_up,
     "a tie rounds to even: 6 channels at 0.25 keep round(4.5) = 4: expected 4, got 5"),
    ("check_get_num_channels_to_keep", keep_truncating, "round(7.5) = 8: expected 8, got 7"),
    ("check_get_num_channels_to_keep", keep_possibly_none, "expected 1, got 0"),
    ("check_get_num_channels_to_keep", keep_as_a_float, "expected an int, got a float"),
    ("check_input_channel_importance", importance_of_rows,
     "the lecture's 2x2 linear weight: 2 of 2 elements differ"),
    ("check_input_channel_importance", importance_l1, "the lecture's 2x2 linear weight"),
    ("check_input_channel_importance", importance_in_the_weight_dtype,
     "a float64 weight: the importance is float32 all the same: expected dtype "
     "torch.float32"),
    ("check_channel_sorting", sort_ascending, "VGG (4, M, 8): item 0"),
    ("check_channel_sorting", sort_in_place, "the input model was changed"),
    ("check_residual_groups", groups_one_per_conv, "expected 4 items, got 6"),
    ("check_residual_groups", groups_projection_in_the_stream, "expected 4 items, got 3"),
    ("check_residual_groups", groups_without_the_stem, "item"),
    ("check_reader_importance", reader_importance_summing_norms,
     "a 3x3 conv and a 1x1 projection reading 4 channels"),
    ("check_reader_importance", reader_importance_truncating,
     "readers of different channel counts: expected ValueError raised"),
    ("check_reader_importance", reader_importance_in_float64,
     "expected dtype torch.float32, got dtype torch.float64"),
    ("check_relative_index_encode", encode_without_padding,
     "7 at 22: expected shape (2, 4), got shape (2, 3)"),
    ("check_relative_index_encode", encode_padding_from_15,
     "a run of 15 zeros needs no padding"),
    ("check_relative_index_encode", encode_trailing_zeros, "trailing zeros need no entry"),
    ("check_relative_index_encode", encode_as_int64,
     "expected dtype torch.uint8, got dtype torch.int64"),
    ("check_lockstep_cycles", lockstep_without_skipping, "zero activations are not broadcast"),
    ("check_lockstep_cycles", lockstep_total_work, "item 0: expected"),
    ("check_lockstep_cycles", lockstep_cycles_as_a_float, "expected an int, got a float"),
    ("check_pack_2_4_metadata", metadata_fill_not_sorted,
     "a single non-zero keeps the lowest free zero"),
    ("check_pack_2_4_metadata", metadata_high_bits_first, "one group, kept at 1 and 3"),
    ("check_pack_2_4_metadata", metadata_as_int64,
     "expected dtype torch.uint8, got dtype torch.int64"),
    ("check_kernel_map", kernel_map_swapped, "two neighbours along z"),
    ("check_kernel_map", kernel_map_minus_d, "two neighbours along z"),
    ("check_kernel_map", kernel_map_other_offset_order, "two neighbours along z"),
    ("check_wanda_mask", wanda_over_the_whole_layer, "every row"),
    ("check_wanda_mask", wanda_weights_only,
     "the 2x4 example of the text at 50%: 2 of 8 elements differ"),
    ("check_wanda_mask", wanda_ties_to_the_higher_column, "ties keep the lower column index"),
    ("check_wanda_mask", wanda_without_refusing_the_norms,
     "input_norms of the wrong length: expected ValueError raised"),
    ("check_obs_update", obs_dividing_by_the_square, "column 0 of a 3x6 weight"),
    ("check_obs_update", obs_with_the_column_of_u, "column 0 of a 3x6 weight"),
    ("check_obs_update", obs_in_place, "changed its tensor argument 0 in place"),
    ("check_nm_score_mask", nm_scores_without_refusing_negatives,
     "a negative score: expected ValueError raised"),
    ("check_nm_score_mask", nm_scores_ties_to_the_higher_index, "ties keep the lower index"),
    ("check_nm_score_mask", nm_scores_strided_groups, "2:4 on a 3x8 score"),
]


def test_every_check_of_these_labs_has_typical_mistakes():
    assert {name for name, _, _ in MISTAKES} == set(SOLUTIONS)


@pytest.mark.parametrize(("name", "mistake", "named"), MISTAKES,
                         ids=[mistake.__name__ for _, mistake, _ in MISTAKES])
def test_a_typical_mistake_fails_with_a_message_naming_it(name, mistake, named):
    message = first_failure(name, mistake, seeds=range(3))
    assert message is not None, f"{mistake.__name__} passed {name}"
    assert named in message
