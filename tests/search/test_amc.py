import copy
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from labkit.measure import count_macs
from labkit.models import MLP, VGG
from labkit.pruning.channels import channel_prune, get_num_channels_to_keep
from labkit.search import amc, comparison
from labkit.training import evaluate

WIDTHS = (6, "M", 8, 5)


def small_vgg(seed=0) -> VGG:
    torch.manual_seed(seed)
    return VGG(WIDTHS).eval()


def random_loader(count=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=count)


def run_episode(env, actions):
    env.reset()
    for action in actions:
        _, _, done = env.step(action)
    assert done
    return env.ratios


# --- the budget rule -------------------------------------------------------------------


@pytest.mark.parametrize(("ratio", "expected"), [
    (0.3, 0.3),    # within the budget already: unchanged
    (0.0, 0.25),   # prunes too little: raised to r_min = 1 - (100 - 40) / 80
    (0.9, 0.8),    # above max_ratio: lowered
    (-0.5, 0.25),  # negative: raised to r_min
])
def test_limit_ratio_raises_too_small_ratios_and_caps_at_max_ratio(ratio, expected):
    limited = amc.limit_ratio(ratio, reducible_macs=80, fixed_macs=40, budget_macs=100,
                              max_ratio=0.8)
    assert limited == pytest.approx(expected)


def test_limit_ratio_never_goes_below_zero_when_the_budget_is_loose():
    assert amc.limit_ratio(-0.2, reducible_macs=10, fixed_macs=0, budget_macs=100,
                           max_ratio=0.5) == 0.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"reducible_macs": 0}, "reducible_macs"),
    ({"max_ratio": 1.0}, "max_ratio"),
    ({"max_ratio": -0.1}, "max_ratio"),
])
def test_limit_ratio_rejects_bad_input(kwargs, match):
    arguments = {"reducible_macs": 10, "fixed_macs": 0, "budget_macs": 5, "max_ratio": 0.8}
    with pytest.raises(ValueError, match=match):
        amc.limit_ratio(0.5, **{**arguments, **kwargs})


def test_chain_macs_sums_unit_macs_times_both_widths():
    assert amc.chain_macs([9, 1], [2, 3, 4]) == 9 * 2 * 3 + 1 * 3 * 4
    with pytest.raises(ValueError, match="widths"):
        amc.chain_macs([9, 1], [2, 3])


# --- the environment -------------------------------------------------------------------


def test_environment_describes_each_conv_and_counts_macs_exactly():
    model, loader = small_vgg(), random_loader()
    env = amc.ChannelPruningEnv(model, loader, mac_budget=0.5)
    example = next(iter(loader))[0][:1]
    assert [layer.name for layer in env.layers] == ["backbone.conv0", "backbone.conv1",
                                                    "backbone.conv2"]
    assert [(layer.in_channels, layer.out_channels) for layer in env.layers] == [
        (1, 6), (6, 8), (8, 5)]
    assert env.layers[1].macs == 3 * 3 * 4 * 4 * 6 * 8
    assert env.dense_macs == count_macs(model, example)
    assert env.budget_macs == math.floor(0.5 * env.dense_macs)
    assert env.macs_of_widths((1, 6, 8, 5, 10)) == env.dense_macs


@settings(max_examples=30, deadline=None)
@given(ratios=st.lists(st.floats(0.0, 0.95), min_size=3, max_size=3))
def test_policy_macs_match_the_pruned_model(ratios):
    model, loader = small_vgg(), random_loader(count=4)
    env = amc.ChannelPruningEnv(model, loader, mac_budget=1.0)
    pruned = channel_prune(env.model, ratios)
    assert env.policy_macs(ratios) == count_macs(pruned, torch.zeros(1, 1, 8, 8))


def test_uniform_ratio_is_the_smallest_grid_ratio_within_the_budget():
    env = amc.ChannelPruningEnv(small_vgg(), random_loader(), mac_budget=1.0, max_ratio=0.8)
    budget = 0.5 * env.dense_macs
    ratio = env.uniform_ratio(budget)
    assert env.policy_macs([ratio] * 3) <= budget
    assert env.policy_macs([round(ratio - 0.01, 6)] * 3) > budget
    assert env.uniform_ratio(env.dense_macs) == 0.0
    assert env.uniform_ratio(budget, step=0.1) == math.ceil(round(ratio * 10, 6)) / 10
    with pytest.raises(ValueError, match="out of reach for a uniform ratio below max_ratio 0.8"):
        env.uniform_ratio(1)
    with pytest.raises(ValueError, match=r"step must be a finite number in \(0, 0.8\]"):
        env.uniform_ratio(budget, step=0.0)


def test_policy_macs_need_one_ratio_per_conv():
    env = amc.ChannelPruningEnv(small_vgg(), random_loader(), mac_budget=1.0)
    with pytest.raises(ValueError, match="one ratio for each"):
        env.policy_macs([0.5, 0.5])
    with pytest.raises(ValueError, match="prune_ratio"):
        env.policy_macs([0.5, 0.5, 1.5])


def test_states_have_the_documented_features_in_unit_range():
    env = amc.ChannelPruningEnv(small_vgg(), random_loader(), mac_budget=0.6)
    state = env.reset()
    assert state.shape == (len(amc.ChannelPruningEnv.STATE_FEATURES),) == (env.state_dim,)
    features = dict(zip(env.STATE_FEATURES, state.tolist(), strict=True))
    assert features["index"] == 0 and features["reduced"] == 0
    assert features["previous_ratio"] == 0 and 0 < features["rest"] < 1
    state, ratio, done = env.step(0.5)
    features = dict(zip(env.STATE_FEATURES, state.tolist(), strict=True))
    assert not done and features["index"] == 0.5
    assert features["previous_ratio"] == pytest.approx(ratio)
    assert features["reduced"] > 0


@settings(max_examples=60, deadline=None)
@given(budget=st.floats(0.05, 1.0), max_ratio=st.floats(0.1, 0.9),
       actions=st.lists(st.floats(-1.0, 2.0), min_size=3, max_size=3))
def test_no_policy_exceeds_the_mac_budget(budget, max_ratio, actions):
    model, loader = small_vgg(), random_loader(count=4)
    try:
        env = amc.ChannelPruningEnv(model, loader, mac_budget=budget, max_ratio=max_ratio)
    except ValueError:
        assume(False)
    ratios = run_episode(env, actions)
    pruned = env.pruned_model()
    kept = [m.out_channels for m in pruned.backbone if isinstance(m, torch.nn.Conv2d)]
    for ratio, layer, channels in zip(ratios, env.layers, kept, strict=True):
        assert ratio >= 0 and channels == round((1 - ratio) * layer.out_channels)
        assert channels >= get_num_channels_to_keep(layer.out_channels, max_ratio)
    pruned_macs = count_macs(pruned, next(iter(loader))[0][:1])
    assert pruned_macs == env.cost() <= env.budget_macs


def test_actions_within_the_budget_are_applied_as_given():
    env = amc.ChannelPruningEnv(small_vgg(), random_loader(), mac_budget=1.0, max_ratio=0.9)
    ratios = run_episode(env, [0.5, 0.25, 0.4])
    assert ratios == pytest.approx([0.5, 0.25, 0.4])


def test_reward_is_minus_the_error_of_the_pruned_model():
    model, loader = small_vgg(), random_loader()
    env = amc.ChannelPruningEnv(model, loader, mac_budget=0.7)
    run_episode(env, [0.2, 0.5, 0.1])
    assert env.reward() == pytest.approx(evaluate(env.pruned_model(), loader) / 100 - 1)


def test_environment_leaves_the_model_unchanged():
    model = small_vgg()
    before = copy.deepcopy(model.state_dict())
    env = amc.ChannelPruningEnv(model, random_loader(), mac_budget=0.5)
    run_episode(env, [0.7, 0.7, 0.7])
    env.reward()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_environment_rejects_bad_input_and_misuse():
    model, loader = small_vgg(), random_loader()
    with pytest.raises(ValueError, match="mac_budget"):
        amc.ChannelPruningEnv(model, loader, mac_budget=0.0)
    with pytest.raises(ValueError, match="max_ratio"):
        amc.ChannelPruningEnv(model, loader, max_ratio=1.0)
    with pytest.raises(ValueError, match="out of reach"):
        amc.ChannelPruningEnv(model, loader, mac_budget=0.05, max_ratio=0.5)
    with pytest.raises(TypeError, match="VGG"):
        amc.ChannelPruningEnv(MLP(), loader)
    env = amc.ChannelPruningEnv(model, loader)
    with pytest.raises(RuntimeError, match="reward"):
        env.reward()
    run_episode(env, [0.1, 0.1, 0.1])
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0.1)


# --- the agent -------------------------------------------------------------------------


class PeakedReward:
    """One step per episode; the reward peaks at the action 0.3."""

    state_dim = 2
    optimum = 0.3

    def reset(self):
        self.action = None
        return torch.tensor([0.5, 1.0])

    def step(self, action):
        self.action = action
        return torch.zeros(2), action, True

    def reward(self):
        return -abs(self.action - self.optimum)

    def cost(self):
        return 0.0


def test_ddpg_learns_the_peak_of_a_one_dimensional_reward():
    env = PeakedReward()
    agent = amc.DDPGAgent(env.state_dim, seed=0)
    result = amc.amc_search(env, agent, episodes=200, warmup=40, progress=False)
    assert agent.act(env.reset(), explore=False) == pytest.approx(env.optimum, abs=0.05)
    policy, reward = amc.actor_policy(env, agent)
    assert reward == env.reward() == -abs(policy[0] - env.optimum)
    assert policy == (agent.act(env.reset(), explore=False),)
    assert result.best_policy[0] == pytest.approx(env.optimum, abs=0.02)
    assert sum(result.rewards[-20:]) / 20 > sum(result.rewards[:40]) / 40 + 0.1


def test_search_history_and_best_policy():
    env = PeakedReward()
    result = amc.amc_search(env, amc.DDPGAgent(2, seed=1), episodes=30, warmup=10,
                            progress=False)
    assert len(result.rewards) == len(result.policies) == len(result.costs) == 30
    assert result.best_reward == max(result.rewards)
    assert result.rewards[result.best_episode] == result.best_reward
    assert result.policies[result.best_episode] == result.best_policy


def test_search_is_repeatable_with_a_seed():
    def search(seed):
        env = amc.ChannelPruningEnv(small_vgg(), random_loader(), mac_budget=0.5)
        return amc.amc_search(env, amc.DDPGAgent(env.state_dim, seed=seed, batch_size=8),
                              episodes=12, warmup=4, progress=False)

    assert search(3) == search(3)
    assert search(3).policies != search(4).policies


def test_noise_stays_in_range_and_decays():
    agent = amc.DDPGAgent(3, sigma=0.5, sigma_decay=0.9, seed=0)
    state = torch.rand(3)
    assert all(0 <= agent.act(state) <= 1 for _ in range(50))
    agent.end_episode(-0.5, learning=False)
    assert agent.sigma == 0.5 and agent.baseline == -0.5
    agent.end_episode(-0.1, learning=True)
    assert agent.sigma == pytest.approx(0.45)
    assert agent.baseline == pytest.approx(-0.5 + agent.baseline_momentum * 0.4)


def test_update_moves_targets_softly():
    agent = amc.DDPGAgent(2, batch_size=4, tau=0.25, seed=0)
    assert agent.update() is None
    for i in range(4):
        agent.remember(torch.rand(2), 0.1 * i, -0.5, torch.rand(2), i == 3)
    old_target = [p.clone() for p in agent.actor_target.parameters()]
    losses = agent.update()
    assert losses is not None and all(math.isfinite(loss) for loss in losses)
    for old, online, target in zip(old_target, agent.actor.parameters(),
                                   agent.actor_target.parameters(), strict=True):
        assert torch.allclose(target, 0.75 * old + 0.25 * online)


def test_replay_buffer_keeps_the_last_transitions():
    buffer = amc.ReplayBuffer(3, state_dim=1)
    for i in range(5):
        buffer.add(torch.tensor([float(i)]), 0.1 * i, -i, torch.tensor([i + 1.0]), False)
    assert len(buffer) == 3
    assert sorted(buffer.states.flatten().tolist()) == [2.0, 3.0, 4.0]
    states, *_ = buffer.sample(20, torch.Generator().manual_seed(0))
    assert set(states.flatten().tolist()) <= {2.0, 3.0, 4.0}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"state_dim": 0}, "state_dim"),
    ({"tau": 0.0}, "tau"),
    ({"discount": 1.5}, "discount"),
    ({"sigma": 0.0}, "sigma"),
    ({"batch_size": 64, "buffer_size": 10}, "buffer_size"),
    ({"actor_lr": -1.0}, "actor_lr"),
])
def test_agent_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        amc.DDPGAgent(**{"state_dim": 4, **kwargs})


def test_search_rejects_bad_episode_counts():
    agent = amc.DDPGAgent(2)
    with pytest.raises(ValueError, match="episodes"):
        amc.amc_search(PeakedReward(), agent, episodes=0)
    with pytest.raises(ValueError, match="warmup"):
        amc.amc_search(PeakedReward(), agent, episodes=5, warmup=6)


def test_search_runs_with_its_thread_count_and_restores_it():
    seen = []

    class Recording(PeakedReward):
        def reward(self):
            seen.append(torch.get_num_threads())
            return super().reward()

    before = torch.get_num_threads()
    amc.amc_search(Recording(), amc.DDPGAgent(2), episodes=3, warmup=1, threads=2,
                   progress=False)
    assert seen == [2, 2, 2] and torch.get_num_threads() == before


def test_compare_seeds_runs_amc_its_actor_and_random_search_once_per_seed():
    env = amc.ChannelPruningEnv(small_vgg(), random_loader(), mac_budget=0.6)
    comparison = amc.compare_seeds(env, (0, 1), episodes=4, warmup=2, progress=False)
    assert comparison.seeds == (0, 1) and len(comparison.searches) == 2
    assert list(comparison.policies) == ["AMC best", "AMC actor", "random search best"]
    for policies in comparison.policies.values():
        assert len(policies) == 2
        for policy in policies:
            assert len(policy) == len(env.layers) and policy == [round(r, 3) for r in policy]
            assert env.policy_macs(policy) <= env.budget_macs * 1.001
    again = amc.amc_search(env, amc.DDPGAgent(env.state_dim, discount=0.0, seed=1),
                           episodes=4, warmup=2, progress=False)
    assert comparison.policies["AMC best"][1] == [round(r, 3) for r in again.best_policy]
    with pytest.raises(ValueError, match="at least one seed"):
        amc.compare_seeds(env, (), episodes=4, warmup=2)


def test_channel_macs_are_what_one_channel_less_saves():
    env = amc.ChannelPruningEnv(small_vgg(), random_loader(), mac_budget=0.6)
    example = torch.zeros(1, 1, 8, 8)
    for index, (layer, cost) in enumerate(zip(env.layers, env.channel_macs(), strict=True)):
        ratios = [1 / layer.out_channels if i == index else 0.0 for i in range(len(env.layers))]
        assert cost == env.dense_macs - env.policy_macs(ratios) > 0
        widths = [get_num_channels_to_keep(other.out_channels, ratio)
                  for other, ratio in zip(env.layers, ratios, strict=True)]
        assert widths[index] == layer.out_channels - 1
        assert cost == count_macs(small_vgg(), example) - count_macs(
            channel_prune(small_vgg(), ratios), example)


# --- the policies compared ------------------------------------------------------------


def test_compare_policies_evaluates_each_run_of_each_policy():
    loader = random_loader()
    env = amc.ChannelPruningEnv(small_vgg(), loader, mac_budget=0.6)
    policies = {"rule": [[0.5, 0.5, 0.5]], "search": [[0.0, 0.25, 0.5], [0.5, 0.0, 0.25]]}
    frame = comparison.compare_policies(env, policies, loader)
    assert list(frame.index) == [("rule", 0), ("search", 0), ("search", 1)]
    example = next(iter(loader))[0][:1]
    for (label, run), row in frame.iterrows():
        ratios = policies[label][run]
        pruned = channel_prune(env.model, ratios)
        assert row["val (%)"] == evaluate(pruned, loader)
        assert row["MACs"] == pytest.approx(
            count_macs(pruned, example) / count_macs(env.model, example))
        assert row["MACs"] < 1
    assert frame.loc[("search", 0), "MACs"] != frame.loc[("search", 1), "MACs"]
    with pytest.raises(ValueError, match="at least one policy per label"):
        comparison.compare_policies(env, {"rule": []}, loader)


def test_channel_costs_put_the_cost_of_a_channel_next_to_the_scan():
    env = amc.ChannelPruningEnv(small_vgg(), random_loader(), mac_budget=0.6)
    scan = {0: [90.0, 80.0, 70.0], 1: [90.0, 85.0, 60.0], 2: [90.0, 88.0, 50.0]}
    frame = comparison.channel_costs(env, scan, [0.0, 0.5, 0.75], 0.5)
    assert list(frame.index) == [layer.name for layer in env.layers]
    assert frame["channels"].tolist() == [layer.out_channels for layer in env.layers]
    assert frame["MACs of one channel"].tolist() == env.channel_macs()
    assert frame["val (%), pruned alone by 0.5"].tolist() == [80.0, 85.0, 88.0]
    with pytest.raises(ValueError, match=r"ratio must be one of the scanned ratios .* got 0.4"):
        comparison.channel_costs(env, scan, [0.0, 0.5, 0.75], 0.4)
    with pytest.raises(ValueError, match="one curve for each of the 3 convs, got 2"):
        comparison.channel_costs(env, {0: scan[0], 1: scan[1]}, [0.0, 0.5, 0.75], 0.5)
