import copy
import itertools

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from labkit.measure import count_macs
from labkit.models import VGG
from labkit.search import netadapt

WIDTHS = (8, "M", 16, 16)


def small_vgg(widths=WIDTHS, seed=0) -> VGG:
    torch.manual_seed(seed)
    return VGG(widths).eval()


def random_loader(count=32, batch_size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def mac_like_table(model: VGG, step: int = 4) -> netadapt.LatencyTable:
    """A table whose entries are each block's MACs in millions: monotone by construction."""
    blocks = netadapt._blocks(model, torch.zeros(1, 1, 8, 8))
    widths = tuple(netadapt.candidate_widths(b.out_channels, step) for b in blocks)
    inputs = [(1,), *widths[:-1]]
    latency_ms = tuple(
        {(c_in, c_out): 1e-6 * b.kernel_size ** 2 * b.height * b.width * c_in * c_out
         for c_in, c_out in itertools.product(w_in, w_out)}
        for b, w_in, w_out in zip(blocks, inputs, widths, strict=True))
    return netadapt.LatencyTable(tuple(b.name for b in blocks), 1, widths, latency_ms,
                                 {"made": "by hand"})


def test_candidate_widths():
    assert netadapt.candidate_widths(32, 8) == (8, 16, 24, 32)
    assert netadapt.candidate_widths(30, 8) == (8, 16, 24, 30)
    assert netadapt.candidate_widths(4, 8) == (4,)
    with pytest.raises(ValueError, match="step"):
        netadapt.candidate_widths(32, 0)
    with pytest.raises(ValueError, match="channels"):
        netadapt.candidate_widths(0, 8)


def ordered_fraction(latencies, tolerance=0.1):
    """Fraction of width pairs w < w' whose latencies are ordered (within ``tolerance``)."""
    pairs = list(itertools.combinations(latencies, 2))
    return sum(small <= large * (1 + tolerance) for small, large in pairs) / len(pairs)


def test_measured_table_is_monotone_enough_and_cached(monkeypatch):
    model = small_vgg((8, 32))
    inputs = torch.zeros(32, 1, 16, 16)
    table = netadapt.latency_table(model, inputs, step=8, runs=5, progress=False)
    assert table.layers == ("backbone.conv0", "backbone.conv1")
    assert table.widths == ((8,), (8, 16, 24, 32))
    for layer in range(len(table.layers)):
        for c_in in table.input_widths(layer):
            row = [table.block_ms(layer, c_in, c_out) for c_out in table.widths[layer]]
            assert all(ms > 0 for ms in row)
            if len(row) > 1:
                assert row[-1] > row[0]
                assert ordered_fraction(row) >= 0.8, row
    path = netadapt.latency_table_path(table.key)
    assert path.exists() and path.suffix == ".json"
    assert table.key["threads"] == 1 and table.key["torch"] == torch.__version__

    def no_measuring(*args, **kwargs):
        raise AssertionError("the cached table should have been used")

    monkeypatch.setattr(netadapt, "fastest_run_ms", no_measuring)
    assert netadapt.latency_table(model, inputs, step=8, runs=5, progress=False) == table


def test_corrupt_cache_file_is_measured_again(monkeypatch):
    model, inputs = small_vgg((4,)), torch.zeros(2, 1, 8, 8)
    monkeypatch.setattr(netadapt, "fastest_run_ms", lambda module, batch, **_: 1.0)
    table = netadapt.latency_table(model, inputs, step=2, progress=False)
    path = netadapt.latency_table_path(table.key)
    path.write_text("{ not json")
    with pytest.warns(UserWarning, match="corrupt or stale"):
        again = netadapt.latency_table(model, inputs, step=2, progress=False)
    assert again == table
    assert netadapt.LatencyTable.from_json(path.read_text()) == table


def test_table_estimate_sums_the_blocks():
    table = mac_like_table(small_vgg())
    expected = (table.block_ms(0, 1, 4) + table.block_ms(1, 4, 12)
                + table.block_ms(2, 12, 16))
    assert table.estimate_ms([4, 12, 16]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="not in the table"):
        table.estimate_ms([5, 12, 16])
    with pytest.raises(ValueError, match="one width for each"):
        table.estimate_ms([4, 12])


@pytest.mark.parametrize("setting", ["step", "threads", "runs"])
def test_latency_table_rejects_bad_settings(setting):
    with pytest.raises(ValueError, match=setting):
        netadapt.latency_table(small_vgg(), torch.zeros(1, 1, 8, 8), **{setting: 0})


def test_each_returned_model_meets_its_steps_budget():
    model = small_vgg()
    before = copy.deepcopy(model.state_dict())
    table = mac_like_table(model)
    family = netadapt.netadapt(model, table, random_loader(), random_loader(seed=1),
                               latency_budget=0.4, iterations=3, finetune_batches=2,
                               progress=False)
    start = family[0]
    assert start.layer is None and start.widths == (8, 16, 16)
    budget_ms = 0.4 * start.latency_ms
    assert len(family) >= 2 and family[-1].latency_ms <= budget_ms
    for previous, step in itertools.pairwise(family):
        assert step.latency_ms <= step.constraint_ms
        assert step.constraint_ms == pytest.approx(
            max(previous.latency_ms - (start.latency_ms - budget_ms) / 3, budget_ms))
        assert step.latency_ms == table.estimate_ms(step.widths)
        convs = [m for m in step.model.backbone if isinstance(m, torch.nn.Conv2d)]
        assert tuple(conv.out_channels for conv in convs) == step.widths
        assert step.layer in table.layers
        assert (step.layer, step.widths[table.layers.index(step.layer)],
                step.val_accuracy) in step.candidates
        assert step.val_accuracy == max(accuracy for *_, accuracy in step.candidates)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_largest_width_within_removes_just_enough_channels():
    table = mac_like_table(small_vgg())
    widths = [8, 16, 16]
    constraint = table.estimate_ms([8, 12, 16])
    assert netadapt.largest_width_within(table, widths, 1, constraint) == 12
    assert netadapt.largest_width_within(table, widths, 1, constraint - 1e-9) == 8
    assert netadapt.largest_width_within(table, widths, 1, 0.0) is None


def test_netadapt_stops_with_a_warning_when_no_single_layer_can_meet_the_step():
    model = small_vgg()
    table = mac_like_table(model)
    with pytest.warns(UserWarning, match="no single layer"):
        family = netadapt.netadapt(model, table, random_loader(), random_loader(),
                                   latency_budget=0.2, iterations=1, finetune_batches=1,
                                   progress=False)
    assert len(family) == 1


def test_netadapt_rejects_bad_input():
    model = small_vgg()
    table = mac_like_table(model)
    loaders = random_loader(), random_loader()
    with pytest.raises(ValueError, match="latency_budget"):
        netadapt.netadapt(model, table, *loaders, latency_budget=1.5)
    with pytest.raises(ValueError, match="out of reach"):
        netadapt.netadapt(model, table, *loaders, latency_budget=0.01)
    with pytest.raises(ValueError, match="does not fit"):
        netadapt.netadapt(small_vgg((8, "M", 16)), table, *loaders)
    with pytest.raises(ValueError, match="iterations"):
        netadapt.netadapt(model, table, *loaders, iterations=0)


def test_table_entries_count_every_measured_block():
    table = mac_like_table(small_vgg())
    assert table.entries == 1 * 2 + 2 * 4 + 4 * 4


def test_first_within_macs_picks_the_first_step_under_the_budget_else_the_last():
    table = mac_like_table(small_vgg())
    family = netadapt.netadapt(small_vgg(), table, random_loader(), random_loader(seed=1),
                               latency_budget=0.4, iterations=3, finetune_batches=2,
                               progress=False)
    example = torch.zeros(1, 1, 8, 8)
    macs = [count_macs(step.model, example) for step in family]
    assert netadapt.first_within_macs(family, macs[0], example) == 0
    assert netadapt.first_within_macs(family, macs[1], example) == 1
    assert netadapt.first_within_macs(family, min(macs) - 1, example) == len(family) - 1
    with pytest.raises(ValueError, match="at least one step"):
        netadapt.first_within_macs([], 1.0, example)
    with pytest.raises(ValueError, match="budget_macs"):
        netadapt.first_within_macs(family, -1.0, example)
