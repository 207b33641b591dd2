r"""AMC: AutoML for Model Compression (He et al. 2018), for the lab's VGG.

Choosing one pruning ratio per layer is a search problem: the ratios interact (pruning
``conv_i``'s outputs also shrinks ``conv_{i+1}``'s inputs) and a grid over ``L`` layers
grows as ``n^L``. AMC hands the problem to a reinforcement-learning agent that walks
through the network one layer at a time, like an expert who prunes layer by layer:

* **state** ``s_t`` of conv ``t``: its index, input and output channels, kernel size,
  stride and MACs, the MACs that the choices for the previous layers already removed,
  the MACs of the layers still to come and the previous action, each normalised to
  [0, 1] (:attr:`ChannelPruningEnv.STATE_FEATURES`);
* **action** ``a_t``: the fraction of conv ``t``'s output channels to remove, a
  *continuous* number in ``[0, max_ratio]`` (hence DDPG rather than a discrete agent);
* **budget**: AMC never lets a policy miss the MAC budget. Each action is limited so
  that, even with every later layer pruned as much as allowed, the model still fits
  (:func:`limit_ratio`);
* **reward**, once the episode has pruned every layer: ``R = -error`` of the pruned
  model on a validation subset, *without* finetuning (a cheap proxy for the accuracy
  after finetuning).

Which layers: every conv of the VGG. Removing output channels of ``conv_i`` also removes
input channels of the next layer; after the last conv, global average pooling feeds
the linear head, so the last conv's channels are prunable too (removing one drops a
column of the head, as :func:`labkit.pruning.channels.channel_prune` does). Fixed are the
image channels that enter the first conv and the classes that leave the head. Channels
are sorted by importance first (:func:`labkit.pruning.channels.apply_channel_sorting`),
so a ratio keeps the most important channels.

MACs as a chain: with ``w_0`` the image channels, ``w_{j+1}`` the channels conv ``j``
keeps and ``w_{L+1}`` the classes,

.. math::

    \text{MACs} = \sum_j u_j \, w_j \, w_{j+1},

where ``u_j`` is layer ``j``'s MACs per (input channel, output channel) pair
(``k_h * k_w * H_j * W_j`` for a conv, 1 for the head). The count is exact: it equals
:func:`labkit.measure.count_macs` of the pruned model.

The agent is DDPG (Lillicrap et al. 2016), as in AMC: an actor ``mu(s)`` proposes the
action, a critic ``Q(s, a)`` learns the reward, both with slowly following *target*
networks (``theta' <- tau * theta + (1 - tau) * theta'``); exploration adds
truncated-normal noise of decaying width ``sigma`` around ``mu(s)``. Every transition of
an episode receives the episode's reward, and the critic learns

    y = (R - b) + gamma * Q'(s', mu'(s')),

where ``b`` is a moving average of past rewards (a baseline that reduces variance). AMC
uses ``gamma = 1``, the default here. Since every transition already carries the
episode's reward, ``gamma = 0`` is also sound: the critic then regresses the reward
directly, ``Q(s_t, a_t) ~ E[R | s_t, a_t]``, which learns faster on the lab's four layers
(the target networks only matter for ``gamma > 0``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from labkit.measure import count_macs, macs_per_layer
from labkit.models import VGG
from labkit.pruning.channels import (
    apply_channel_sorting,
    channel_prune,
    conv_blocks,
    get_num_channels_to_keep,
)
from labkit.training import evaluate, torch_threads
from labkit.validation import batches, check_count, check_loader, check_real, check_seed


def limit_ratio(ratio: float, *, reducible_macs: float, fixed_macs: float,
                budget_macs: float, max_ratio: float) -> float:
    r"""AMC's budget rule: one layer's pruning ratio, limited so the budget stays reachable.

    When the agent prunes a fraction ``r`` of layer ``t``'s channels, the fewest MACs the
    model can still end with (every *later* layer pruned by ``max_ratio``) are

    .. math::

        M(r) = M_\text{fixed} + (1 - r) \, M_\text{reducible},

    where :math:`M_\text{reducible}` (``reducible_macs``) are the MACs that scale with layer
    ``t``'s channels (its own and the next layer's input side, at full width),
    :math:`M_\text{fixed}` (``fixed_macs``) all the others and :math:`M_\text{budget}`
    the budget (``budget_macs``).
    ``M(r) <= budget_macs`` holds exactly when

    .. math::

        r \ge r_\min = 1 - \frac{M_\text{budget} - M_\text{fixed}}{M_\text{reducible}},

    so the rule returns ``min(max(ratio, r_min, 0), max_ratio)``: the agent's ratio,
    raised to ``r_min`` when it prunes too little, never negative and never above
    ``max_ratio``.
    """
    ratio = check_real(ratio, "ratio")
    check_real(reducible_macs, "reducible_macs", 0.0, low_open=True)
    check_real(fixed_macs, "fixed_macs", 0.0)
    check_real(budget_macs, "budget_macs", 0.0)
    check_real(max_ratio, "max_ratio", 0.0, 1.0, high_open=True)
    min_ratio = 1.0 - (budget_macs - fixed_macs) / reducible_macs
    return float(min(max(ratio, min_ratio, 0.0), max_ratio))


def chain_macs(unit_macs: Sequence[int], widths: Sequence[int]) -> int:
    """``sum_j unit_macs[j] * widths[j] * widths[j + 1]``: the MACs of a chain of layers.

    ``widths`` has one entry more than ``unit_macs``: the channels between the layers.
    """
    if len(widths) != len(unit_macs) + 1:
        raise ValueError(f"widths must have len(unit_macs) + 1 = {len(unit_macs) + 1} "
                         f"entries, got {len(widths)}")
    return sum(unit * fan_in * fan_out for unit, fan_in, fan_out
               in zip(unit_macs, widths[:-1], widths[1:], strict=True))


class Environment(Protocol):
    """What :func:`amc_search` needs from an environment.

    ``reset()`` starts an episode and returns the first state; ``step(action)`` returns
    the next state, the action really applied (after any limit) and whether the episode
    is over; ``reward()`` and ``cost()`` judge the finished episode.
    """

    state_dim: int

    def reset(self) -> torch.Tensor: ...

    def step(self, action: float) -> tuple[torch.Tensor, float, bool]: ...

    def reward(self) -> float: ...

    def cost(self) -> float: ...


@dataclass(frozen=True)
class PrunableLayer:
    """A conv the agent prunes: its name in the model, its geometry and its dense MACs."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    macs: int


def _min_max(column: torch.Tensor) -> torch.Tensor:
    """``(x - min) / (max - min)``, or zeros for a constant column."""
    span = column.max() - column.min()
    return (column - column.min()) / span if span > 0 else torch.zeros_like(column)


class ChannelPruningEnv:
    """AMC's environment: an episode prunes the convs of a VGG one after the other.

    ``model`` is not changed: the environment prunes a channel-sorted copy. ``val_loader``
    holds the validation *subset* the reward is computed on. ``mac_budget``: the pruned
    model keeps at most this fraction of the dense MACs; ``max_ratio``: no layer keeps
    fewer than ``get_num_channels_to_keep(channels, max_ratio)`` channels. Raises
    ``ValueError`` when the budget cannot be met even with every layer at ``max_ratio``.
    """

    STATE_FEATURES = ("index", "in_channels", "out_channels", "kernel_size", "stride", "macs",
                      "reduced", "rest", "previous_ratio")
    """The state's features, in order; the first six are min-max normalised over the
    layers, ``reduced`` and ``rest`` are fractions of the dense MACs."""

    def __init__(self, model: VGG, val_loader: DataLoader, *, mac_budget: float = 0.5,
                 max_ratio: float = 0.8) -> None:
        check_real(mac_budget, "mac_budget", 0.0, 1.0, low_open=True)
        check_real(max_ratio, "max_ratio", 0.0, 1.0, high_open=True)
        blocks = conv_blocks(model)
        self.model = apply_channel_sorting(model)
        self.val_loader = val_loader
        self.max_ratio = float(max_ratio)
        check_loader(val_loader, "val_loader")
        example = next(batches(val_loader, "val_loader"))[0][:1]
        layer_macs = macs_per_layer(model, example)
        convs = [getattr(model.backbone, conv) for conv, _ in blocks]
        self.layers = tuple(
            PrunableLayer(f"backbone.{name}", conv.in_channels, conv.out_channels,
                          conv.kernel_size[0], conv.stride[0], layer_macs[f"backbone.{name}"])
            for (name, _), conv in zip(blocks, convs, strict=True))
        classes = model.classifier.out_features
        self._dense_widths = (convs[0].in_channels, *(c.out_channels for c in convs), classes)
        chain = [*(layer.macs for layer in self.layers), layer_macs["classifier"]]
        pairs = zip(chain, self._dense_widths[:-1], self._dense_widths[1:], strict=True)
        self._unit_macs = tuple(macs // (fan_in * fan_out) for macs, fan_in, fan_out in pairs)
        self.dense_macs = count_macs(model, example)
        self._other_macs = self.dense_macs - chain_macs(self._unit_macs, self._dense_widths)
        self.budget_macs = math.floor(mac_budget * self.dense_macs)
        self._min_widths = (self._dense_widths[0],
                            *(get_num_channels_to_keep(c.out_channels, max_ratio) for c in convs),
                            classes)
        smallest = self.macs_of_widths(self._min_widths)
        if smallest > self.budget_macs:
            raise ValueError(
                f"mac_budget {mac_budget} is out of reach: with every layer pruned by "
                f"max_ratio {max_ratio} the model keeps {smallest / self.dense_macs:.3f} of "
                "its MACs")
        static = torch.tensor([[i, layer.in_channels, layer.out_channels, layer.kernel_size,
                                layer.stride, layer.macs] for i, layer in enumerate(self.layers)],
                              dtype=torch.float32)
        self._static = torch.stack([_min_max(column) for column in static.T], dim=1)
        self.reset()

    @property
    def state_dim(self) -> int:
        return len(self.STATE_FEATURES)

    def macs_of_widths(self, widths: Sequence[int]) -> int:
        """MACs of the chain ``(image channels, kept channels of each conv..., classes)``."""
        return self._other_macs + chain_macs(self._unit_macs, widths)

    def policy_macs(self, ratios: Sequence[float]) -> int:
        """MACs of the model pruned by ``ratios`` (one per conv), as
        :func:`labkit.measure.count_macs` counts them, without building the model."""
        if len(ratios) != len(self.layers):
            raise ValueError(f"ratios must list one ratio for each of the {len(self.layers)} "
                             f"convs, got {list(ratios)}")
        kept = (get_num_channels_to_keep(layer.out_channels, ratio)
                for layer, ratio in zip(self.layers, ratios, strict=True))
        return self.macs_of_widths((self._dense_widths[0], *kept, self._dense_widths[-1]))

    def channel_macs(self) -> list[int]:
        """The MACs one output channel of each conv costs: the dense MACs less those of
        the model with that conv alone one channel narrower (its own products and those
        of the layer that reads it)."""
        costs = []
        for position in range(1, len(self._dense_widths) - 1):
            narrower = list(self._dense_widths)
            narrower[position] -= 1
            costs.append(self.dense_macs - self.macs_of_widths(narrower))
        return costs

    def uniform_ratio(self, budget_macs: float, *, step: float = 0.01) -> float:
        """The smallest ratio on a grid of ``step`` (below ``max_ratio``) that, applied to
        every conv, brings :meth:`policy_macs` within ``budget_macs``: the uniform
        baseline at that budget."""
        check_real(step, "step", 0.0, self.max_ratio, low_open=True)
        check_real(budget_macs, "budget_macs", 0.0)
        for k in range(math.ceil(self.max_ratio / step - 1e-9)):
            ratio = round(k * step, 6)
            if self.policy_macs([ratio] * len(self.layers)) <= budget_macs:
                return ratio
        raise ValueError(f"budget_macs {budget_macs:,} is out of reach for a uniform ratio "
                         f"below max_ratio {self.max_ratio}")

    def reset(self) -> torch.Tensor:
        """Start an episode: every layer dense; returns the state of the first conv."""
        self._widths = list(self._dense_widths)
        self._ratios: list[float] = []
        return self._state()

    @property
    def done(self) -> bool:
        return len(self._ratios) == len(self.layers)

    @property
    def ratios(self) -> tuple[float, ...]:
        """The ratios applied so far in this episode, one per conv."""
        return tuple(self._ratios)

    def _state(self) -> torch.Tensor:
        t = len(self._ratios)
        current = self.macs_of_widths(self._widths)
        rest = chain_macs(self._unit_macs[t + 1:], self._widths[t + 1:])
        dynamic = torch.tensor([(self.dense_macs - current) / self.dense_macs,
                                rest / self.dense_macs,
                                self._ratios[-1] if self._ratios else 0.0])
        return torch.cat([self._static[t], dynamic])

    def budget_terms(self) -> tuple[int, int]:
        """``(reducible_macs, fixed_macs)`` of the current layer for :func:`limit_ratio`.

        With the earlier layers as chosen and every later layer at its fewest channels,
        ``reducible_macs`` are the MACs that scale with the current conv's output channels
        (the conv itself and the next layer's input side, at full width) and
        ``fixed_macs`` all the others.
        """
        if self.done:
            raise RuntimeError("the episode is over: call reset() first")
        t = len(self._ratios)
        worst = [*self._widths[:t + 2], *self._min_widths[t + 2:]]
        per_channel = self._unit_macs[t] * worst[t] + self._unit_macs[t + 1] * worst[t + 2]
        reducible = per_channel * self.layers[t].out_channels
        return reducible, self.macs_of_widths(worst) - reducible

    def step(self, action: float) -> tuple[torch.Tensor, float, bool]:
        """Prune the current conv by ``action`` (limited by the budget rule).

        The kept channels are rounded as :func:`labkit.pruning.channels.channel_prune`
        rounds them, but never above what the budget allows. Returns the next state (zeros
        after the last conv), the ratio really applied and whether the episode is over.
        """
        reducible, fixed = self.budget_terms()
        t = len(self._ratios)
        channels = self.layers[t].out_channels
        ratio = limit_ratio(float(action), reducible_macs=reducible, fixed_macs=fixed,
                            budget_macs=self.budget_macs, max_ratio=self.max_ratio)
        kept = min(get_num_channels_to_keep(channels, ratio),
                   (self.budget_macs - fixed) * channels // reducible)
        self._widths[t + 1] = kept
        self._ratios.append(1.0 - kept / channels)
        state = torch.zeros(self.state_dim) if self.done else self._state()
        return state, self._ratios[-1], self.done

    def pruned_model(self, ratios: Sequence[float] | None = None) -> VGG:
        """A new, smaller VGG: the sorted model pruned by ``ratios`` (default: this episode's)."""
        return channel_prune(self.model, list(self._ratios if ratios is None else ratios))

    def cost(self) -> float:
        """MACs of this episode's policy (layers not yet pruned count as dense)."""
        return float(self.macs_of_widths(self._widths))

    def reward(self) -> float:
        """``-error`` (a fraction in [-1, 0]) of the pruned model on the validation subset."""
        if not self.done:
            raise RuntimeError("the reward is given once every layer is pruned")
        return evaluate(self.pruned_model(), self.val_loader) / 100.0 - 1.0


def _mlp(inputs: int, hidden: int, output: nn.Module | None = None) -> nn.Sequential:
    layers = [nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
              nn.Linear(hidden, 1)]
    return nn.Sequential(*layers, *([output] if output is not None else []))


class ReplayBuffer:
    """The last ``capacity`` transitions ``(s, a, r, s', done)``, sampled uniformly."""

    def __init__(self, capacity: int, state_dim: int) -> None:
        check_count(capacity, "capacity")
        self.states = torch.zeros(capacity, state_dim)
        self.actions = torch.zeros(capacity, 1)
        self.rewards = torch.zeros(capacity, 1)
        self.next_states = torch.zeros(capacity, state_dim)
        self.dones = torch.zeros(capacity, 1)
        self._next, self._size = 0, 0

    def __len__(self) -> int:
        return self._size

    def add(self, state: torch.Tensor, action: float, reward: float,
            next_state: torch.Tensor, done: bool) -> None:
        i = self._next
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.dones[i] = next_state, float(done)
        self._next = (i + 1) % len(self.states)
        self._size = min(self._size + 1, len(self.states))

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        index = torch.randint(self._size, (count,), generator=generator)
        return (self.states[index], self.actions[index], self.rewards[index],
                self.next_states[index], self.dones[index])


class DDPGAgent:
    """DDPG (Lillicrap et al. 2016) with AMC's settings, for a one-dimensional action in [0, 1].

    Actor ``mu(s)``: an MLP ending in a sigmoid. Critic ``Q(s, a)``: an MLP on the state and
    the action. Targets follow with ``theta' <- tau * theta + (1 - tau) * theta'``.
    Exploration draws ``a ~ N(mu(s), sigma^2)`` truncated to [0, 1]; ``sigma`` shrinks by
    ``sigma_decay`` after every learning episode. The reward baseline ``b`` is a moving
    average ``b <- b + baseline_momentum * (R - b)`` of the episode rewards. Networks,
    noise and replay sampling are seeded by ``seed``; the global random state is untouched.
    """

    def __init__(self, state_dim: int, *, hidden: int = 64, actor_lr: float = 3e-4,
                 critic_lr: float = 1e-2, tau: float = 0.01, discount: float = 1.0,
                 buffer_size: int = 2000, batch_size: int = 32, sigma: float = 0.5,
                 sigma_decay: float = 0.97, baseline_momentum: float = 0.1,
                 seed: int = 0) -> None:
        check_count(state_dim, "state_dim")
        check_count(hidden, "hidden")
        check_count(batch_size, "batch_size")
        check_count(buffer_size, "buffer_size", batch_size)
        for name, value in (("actor_lr", actor_lr), ("critic_lr", critic_lr),
                            ("sigma", sigma)):
            check_real(value, name, 0.0, math.inf, low_open=True, high_open=True)
        for name, value in (("tau", tau), ("sigma_decay", sigma_decay),
                            ("baseline_momentum", baseline_momentum)):
            check_real(value, name, 0.0, 1.0, low_open=True)
        check_real(discount, "discount", 0.0, 1.0)
        seed = check_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = _mlp(state_dim, hidden, nn.Sigmoid())
            self.critic = _mlp(state_dim + 1, hidden)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self._actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_lr)
        self._critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr)
        self.buffer = ReplayBuffer(buffer_size, state_dim)
        self.batch_size, self.tau, self.discount = batch_size, tau, discount
        self.sigma, self.sigma_decay = float(sigma), sigma_decay
        self.baseline_momentum = baseline_momentum
        self.baseline = 0.0
        self._episodes = 0
        self._generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def act(self, state: torch.Tensor, *, explore: bool = True) -> float:
        """``mu(s)``, with truncated-normal exploration noise when ``explore``."""
        mean = self.actor(state[None]).item()
        if not explore:
            return mean
        sample = torch.empty(1)
        nn.init.trunc_normal_(sample, mean=mean, std=self.sigma, a=0.0, b=1.0,
                              generator=self._generator)
        return sample.item()

    def random_action(self) -> float:
        """A uniform action in [0, 1]: the warm-up episodes explore with these."""
        return torch.rand(1, generator=self._generator).item()

    def remember(self, state: torch.Tensor, action: float, reward: float,
                 next_state: torch.Tensor, done: bool) -> None:
        self.buffer.add(state, action, reward, next_state, done)

    def end_episode(self, reward: float, *, learning: bool) -> None:
        """Update the reward baseline; after a learning episode, narrow the noise."""
        self.baseline = reward if self._episodes == 0 else (
            self.baseline + self.baseline_momentum * (reward - self.baseline))
        self._episodes += 1
        if learning:
            self.sigma *= self.sigma_decay

    def update(self) -> tuple[float, float] | None:
        """One gradient step of critic and actor on a replay batch, then soft updates.

        Returns ``(critic_loss, actor_loss)``, or None while the buffer holds less than a
        batch.
        """
        if len(self.buffer) < self.batch_size:
            return None
        states, actions, rewards, next_states, dones = self.buffer.sample(
            self.batch_size, self._generator)
        with torch.no_grad():
            next_q = self.critic_target(
                torch.cat([next_states, self.actor_target(next_states)], dim=1))
            target = rewards - self.baseline + self.discount * (1.0 - dones) * next_q
        critic_loss = nn.functional.mse_loss(
            self.critic(torch.cat([states, actions], dim=1)), target)
        self._critic_optimizer.zero_grad()
        critic_loss.backward()
        self._critic_optimizer.step()
        actor_loss = -self.critic(torch.cat([states, self.actor(states)], dim=1)).mean()
        self._actor_optimizer.zero_grad()
        actor_loss.backward()
        self._actor_optimizer.step()
        for network, target_network in ((self.actor, self.actor_target),
                                        (self.critic, self.critic_target)):
            with torch.no_grad():
                for parameter, target_parameter in zip(network.parameters(),
                                                       target_network.parameters(), strict=True):
                    target_parameter.lerp_(parameter, self.tau)
        return critic_loss.item(), actor_loss.item()


@dataclass(frozen=True)
class SearchResult:
    """The best policy an AMC search found, and its history, one entry per episode.

    ``policies[e]`` holds the actions applied in episode ``e`` (pruning ratios, one per
    layer), ``rewards[e]`` its reward, ``costs[e]`` its cost (MACs for channel pruning).
    """

    best_policy: tuple[float, ...]
    best_reward: float
    best_episode: int
    rewards: tuple[float, ...]
    policies: tuple[tuple[float, ...], ...]
    costs: tuple[float, ...]


def amc_search(env: Environment, agent: DDPGAgent, *, episodes: int = 100, warmup: int = 20,
               threads: int | None = 1, progress: bool = True) -> SearchResult:
    """Run AMC: ``warmup`` episodes of random actions, then episodes of the learning agent.

    After each learning episode the agent takes one update per transition. The best
    policy is the one with the highest reward over all episodes (ties: the earliest).
    The search runs with ``threads`` torch threads (:func:`labkit.training.torch_threads`).
    """
    check_count(episodes, "episodes")
    check_count(warmup, "warmup", 0)
    if warmup > episodes:
        raise ValueError(f"warmup must be in [0, episodes={episodes}], got {warmup}")
    with torch_threads(threads):
        rewards, policies, costs = _search(env, agent, episodes, warmup, progress)
    best = max(range(episodes), key=lambda e: (rewards[e], -e))
    return SearchResult(policies[best], rewards[best], best, tuple(rewards), tuple(policies),
                        tuple(costs))


Transition = tuple[torch.Tensor, float, torch.Tensor, bool]
"""``(state, applied action, next state, done)``."""


def _episode(env: Environment, choose: Callable[[torch.Tensor], float]) -> list[Transition]:
    """Play one episode, choosing each action with ``choose(state)``."""
    state, done, transitions = env.reset(), False, []
    while not done:
        next_state, applied, done = env.step(choose(state))
        transitions.append((state, applied, next_state, done))
        state = next_state
    return transitions


def _search(env: Environment, agent: DDPGAgent, episodes: int, warmup: int,
            progress: bool) -> tuple[list[float], list[tuple[float, ...]], list[float]]:
    rewards, policies, costs = [], [], []
    for episode in tqdm(range(episodes), desc="AMC", unit="episode", disable=not progress,
                        leave=False):
        learning = episode >= warmup
        transitions = _episode(env, agent.act if learning else lambda _: agent.random_action())
        reward = env.reward()
        agent.end_episode(reward, learning=learning)
        for state, applied, next_state, done in transitions:
            agent.remember(state, applied, reward, next_state, done)
        if learning:
            for _ in transitions:
                agent.update()
        rewards.append(reward)
        policies.append(tuple(applied for _, applied, _, _ in transitions))
        costs.append(env.cost())
    return rewards, policies, costs


def actor_policy(env: Environment, agent: DDPGAgent) -> tuple[tuple[float, ...], float]:
    """The policy the actor has learned: one episode of ``mu(s)`` without noise.

    Returns the applied actions and the episode's reward. (The best policy of a search
    may come from an exploring episode; this is what the agent itself would now do.)
    """
    transitions = _episode(env, lambda state: agent.act(state, explore=False))
    return tuple(applied for _, applied, _, _ in transitions), env.reward()


@dataclass(frozen=True)
class SeedComparison:
    """AMC against random search over seeds (:func:`compare_seeds`).

    ``policies[label][i]`` is the policy (ratios rounded to 3 decimals) found with
    ``seeds[i]``, for the labels ``"AMC best"`` (the best episode of the search),
    ``"AMC actor"`` (what the trained actor does without noise) and ``"random search
    best"`` (the best of as many random episodes); ``searches[i]`` is AMC's search.
    """

    seeds: tuple[int, ...]
    policies: dict[str, list[list[float]]]
    searches: tuple[SearchResult, ...]


def compare_seeds(env: Environment, seeds: Sequence[int], *, episodes: int = 100,
                  warmup: int = 20, discount: float = 0.0,
                  progress: bool = True) -> SeedComparison:
    """Run AMC and a random search of the same length once per seed on ``env``.

    Per seed: a :class:`DDPGAgent` with ``discount`` searches for ``episodes`` episodes
    after ``warmup`` random ones; then its actor plays one noiseless episode; then a
    fresh agent with the same seed plays ``episodes`` random episodes (random search, the
    baseline AMC must beat). A difference between methods means something only where it
    is larger than the spread over seeds.
    """
    if not seeds:
        raise ValueError("seeds must hold at least one seed, got none")
    policies: dict[str, list[list[float]]] = {"AMC best": [], "AMC actor": [],
                                              "random search best": []}
    searches = []
    for seed in seeds:
        agent = DDPGAgent(env.state_dim, discount=discount, seed=seed)
        result = amc_search(env, agent, episodes=episodes, warmup=warmup, progress=progress)
        random_search = amc_search(env, DDPGAgent(env.state_dim, seed=seed),
                                   episodes=episodes, warmup=episodes, progress=progress)
        found = {"AMC best": result.best_policy, "AMC actor": actor_policy(env, agent)[0],
                 "random search best": random_search.best_policy}
        for label, ratios in found.items():
            policies[label].append([round(r, 3) for r in ratios])
        searches.append(result)
    return SeedComparison(tuple(seeds), policies, tuple(searches))
