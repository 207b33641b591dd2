"""The models the labs prune: a VGG-style CNN and an MLP.

The CNN follows the original lab's VGG (Simonyan and Zisserman 2015): blocks of
conv3x3 -> BatchNorm -> ReLU, max-pooling between stages, global average pooling
and one linear head, no residual connections, so that removing a channel touches
exactly one conv, its BatchNorm and the next conv (or the head). Layers are named
``conv0, bn0, relu0, pool0, conv1, ...`` inside ``model.backbone``.

:class:`ResNet` adds what VGG lacks: residual connections (He et al. 2016), whose additions
couple the channels of every conv whose output meets in them, so that those channels can
only be removed together (:func:`labkit.pruning.channels.channel_groups`).

:class:`MobileNetV2` and :class:`DenseNet` are the networks students bring that ResNet does
not cover: depthwise convs, whose output channels are their input channels (Sandler et al.
2018), and concatenations, after which a layer reads each earlier conv's channels at an
offset (Huang et al. 2017).

:class:`GPT` is a small decoder-only transformer for character-level language modelling,
written top to bottom like Karpathy's nanoGPT ``model.py`` (Radford et al. 2019): token and
position embeddings, pre-LayerNorm blocks of causal self-attention and an MLP, a final
LayerNorm and an output head tied to the token embedding.
"""

from __future__ import annotations

import copy
import numbers
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

POOL = "M"


def _is_count(value: object) -> bool:
    """Whether ``value`` is a positive int (a NumPy integer counts; a bool does not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1

DIGITS_WIDTHS: tuple[int | str, ...] = (32, 32, POOL, 64, 64, POOL)
"""Widths of the digits model: two stages of two convs on 8x8 inputs."""

CIFAR_WIDTHS: tuple[int | str, ...] = (64, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512,
                                       POOL)
"""Widths of the original lab's VGG for CIFAR-10 (8 convs)."""


class VGG(nn.Module):
    """VGG-style CNN: ``widths`` lists conv output channels, ``"M"`` a 2x2 max-pool."""

    def __init__(
        self,
        widths: Sequence[int | str] = DIGITS_WIDTHS,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if not any(_is_count(w) for w in widths):
            raise ValueError(f"widths must contain at least one conv width, got {widths!r}")
        layers: list[tuple[str, nn.Module]] = []
        channels, conv_index, pool_index = in_channels, 0, 0
        for width in widths:
            if width == POOL:
                layers.append((f"pool{pool_index}", nn.MaxPool2d(2)))
                pool_index += 1
                continue
            if not _is_count(width):
                raise ValueError(f"widths entries must be positive ints or 'M', got {width!r}")
            width = int(width)
            layers += [
                (f"conv{conv_index}", nn.Conv2d(channels, width, 3, padding=1, bias=False)),
                (f"bn{conv_index}", nn.BatchNorm2d(width)),
                (f"relu{conv_index}", nn.ReLU(inplace=True)),
            ]
            channels, conv_index = width, conv_index + 1
        self.backbone = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Linear(channels, num_classes)

    @property
    def widths(self) -> tuple[int | str, ...]:
        """Conv output channels and ``"M"`` pools, in order, read off the layers themselves
        (so a model whose channels were removed reports its new widths)."""
        return tuple(POOL if isinstance(layer, nn.MaxPool2d) else layer.out_channels
                     for layer in self.backbone if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)
        x = x.mean(dim=(2, 3))
        return self.classifier(x)


class MLP(nn.Module):
    """Fully connected network: flatten, then Linear-ReLU for each hidden width."""

    def __init__(self, in_features: int = 64, hidden: Sequence[int] = (128, 64),
                 num_classes: int = 10) -> None:
        super().__init__()
        if any(not _is_count(h) for h in hidden):
            raise ValueError(f"hidden widths must be positive ints, got {hidden!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        for width in map(int, hidden):
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


RESNET_DIGITS_WIDTHS: tuple[int, ...] = (16, 32)
"""Stage widths of the digits ResNet: two stages on 8x8 inputs (8x8, then 4x4)."""


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al. 2016): ``relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x))``.

    The shortcut ``s`` is the identity when the block keeps the shape, else a projection:
    a strided 1x1 conv and its BatchNorm (``shortcut.conv``, ``shortcut.bn``). The addition
    makes the block's output channels and its input's channels one and the same.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)),
                ("bn", nn.BatchNorm2d(out_channels))]))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet: a conv3x3-BN-ReLU stem, stages of :class:`BasicBlock`, global average
    pooling and a linear head.

    Stage ``i`` has ``blocks`` blocks of ``widths[i]`` channels; the first block of every
    stage after the first halves the resolution (stride 2, projection shortcut). Modules:
    ``stem.conv``, ``stem.bn``, ``stages.<i>.<j>.conv1`` (block ``j`` of stage ``i``), ...,
    ``classifier``.
    """

    def __init__(self, widths: Sequence[int] = RESNET_DIGITS_WIDTHS, blocks: int = 1,
                 in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        if not widths or not all(_is_count(w) for w in widths):
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths!r}")
        if not _is_count(blocks):
            raise ValueError(f"blocks must be a positive int, got {blocks!r}")
        widths, blocks = [int(w) for w in widths], int(blocks)
        self.stem = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)),
            ("bn", nn.BatchNorm2d(widths[0])), ("relu", nn.ReLU())]))
        stages, channels = [], widths[0]
        for index, width in enumerate(widths):
            stage = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                stage.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.classifier(x.mean(dim=(2, 3)))


MOBILENET_DIGITS_BLOCKS: tuple[tuple[int, int, int], ...] = ((8, 1, 1), (12, 2, 4), (12, 1, 4),
                                                             (16, 2, 4))
"""``(out_channels, stride, expansion)`` of each inverted residual of the digits MobileNetV2."""


class InvertedResidual(nn.Module):
    """MobileNetV2's block (Sandler et al. 2018): a 1x1 ``expand`` conv to ``expansion``
    times the channels (none when ``expansion == 1``), a 3x3 ``depthwise`` conv
    (``groups`` = channels: each output channel filters its own input channel), a 1x1
    ``project`` conv back down with no activation after it (the linear bottleneck), each
    conv followed by its BatchNorm, ReLU6 after the first two; the input is added to the
    output when the stride is 1 and the widths agree.

    The depthwise conv ties its output channels to its input channels: removing an expanded
    channel removes it from ``expand``, ``depthwise``, their BatchNorms and ``project``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 expansion: int = 6) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[tuple[str, nn.Module]] = []
        if expansion != 1:
            layers += [("expand", nn.Conv2d(in_channels, hidden, 1, bias=False)),
                       ("bn0", nn.BatchNorm2d(hidden)), ("relu0", nn.ReLU6())]
        layers += [("depthwise", nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden,
                                           bias=False)),
                   ("bn1", nn.BatchNorm2d(hidden)), ("relu1", nn.ReLU6()),
                   ("project", nn.Conv2d(hidden, out_channels, 1, bias=False)),
                   ("bn2", nn.BatchNorm2d(out_channels))]
        self.layers = nn.Sequential(OrderedDict(layers))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """A small MobileNetV2 (Sandler et al. 2018): a 3x3 conv stem, inverted residuals
    ``blocks`` of ``(out_channels, stride, expansion)``, a 1x1 conv to ``last`` channels,
    global average pooling and a linear head after ``x.view(x.size(0), -1)``."""

    def __init__(self, blocks: Sequence[tuple[int, int, int]] = MOBILENET_DIGITS_BLOCKS,
                 stem: int = 8, last: int = 32, in_channels: int = 1,
                 num_classes: int = 10) -> None:
        super().__init__()
        if not blocks or any(len(block) != 3 or not all(map(_is_count, block))
                             for block in blocks):
            raise ValueError("blocks must be a non-empty list of (out_channels, stride, "
                             f"expansion) positive ints, got {blocks!r}")
        if not all(map(_is_count, (stem, last))):
            raise ValueError(f"stem and last must be positive ints, got {stem!r}, {last!r}")
        self.stem = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)),
            ("bn", nn.BatchNorm2d(stem)), ("relu", nn.ReLU6())]))
        layers, channels = [], stem
        for out_channels, stride, expansion in blocks:
            layers.append(InvertedResidual(channels, out_channels, stride, expansion))
            channels = out_channels
        self.blocks = nn.Sequential(*layers)
        self.last = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(channels, last, 1, bias=False)),
            ("bn", nn.BatchNorm2d(last)), ("relu", nn.ReLU6())]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.last(self.blocks(self.stem(x))))
        return self.classifier(x.view(x.size(0), -1))


class DenseLayer(nn.Module):
    """DenseNet-BC's layer (Huang et al. 2017): BN-ReLU-conv1x1 to ``4 * growth`` channels,
    BN-ReLU-conv3x3 to ``growth`` new channels, concatenated after its input's: every later
    layer reads the channels of every earlier one."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(OrderedDict([
            ("bn1", nn.BatchNorm2d(in_channels)), ("relu1", nn.ReLU()),
            ("conv1", nn.Conv2d(in_channels, 4 * growth, 1, bias=False)),
            ("bn2", nn.BatchNorm2d(4 * growth)), ("relu2", nn.ReLU()),
            ("conv2", nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


class DenseNet(nn.Module):
    """A small DenseNet-BC (Huang et al. 2017): a 3x3 conv stem of ``2 * growth`` channels,
    dense blocks of ``layers[b]`` :class:`DenseLayer` each, a transition between blocks
    (BN-ReLU-conv1x1 halving the channels, 2x2 average pooling), then BN-ReLU, global
    average pooling and a linear head.

    A BatchNorm or conv after a concatenation sees each earlier conv's channels at an offset,
    so removing channel ``j`` of one conv removes input channel ``offset + j`` of every later
    layer of the block.
    """

    def __init__(self, layers: Sequence[int] = (2, 2), growth: int = 4, in_channels: int = 1,
                 num_classes: int = 10) -> None:
        super().__init__()
        if not layers or not all(map(_is_count, layers)) or not _is_count(growth):
            raise ValueError(f"layers must be a non-empty list of positive ints and growth a "
                             f"positive int, got layers={layers!r}, growth={growth!r}")
        channels = 2 * growth
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for index, count in enumerate(layers):
            if index:
                stages.append(nn.Sequential(OrderedDict([
                    ("bn", nn.BatchNorm2d(channels)), ("relu", nn.ReLU()),
                    ("conv", nn.Conv2d(channels, channels // 2, 1, bias=False)),
                    ("pool", nn.AvgPool2d(2))])))
                channels //= 2
            for _ in range(count):
                stages.append(DenseLayer(channels, growth))
                channels += growth
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.features(self.stem(x))))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@torch.no_grad()
def randomize_batchnorms(model: nn.Module) -> nn.Module:
    """Give every BatchNorm2d affine parameters and running statistics like those training
    leaves (a fresh layer has 1, 0, 0, 1, under which channel surgery bugs go unseen).

    Draws from torch's global generator (seed it first); returns ``model`` in eval mode.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@torch.no_grad()
def with_parameters(model: nn.Module, values: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` whose named parameters hold ``values``, each reshaped to its
    parameter's shape (a conv weight may come as its ``out x (in * k * k)`` matrix);
    ``model`` is not changed."""
    parameters = dict(model.named_parameters())
    for name, value in values.items():
        if name not in parameters:
            raise ValueError(f"values names a parameter {name!r} that the model does not "
                             f"have; parameters are {sorted(parameters)}")
        if not isinstance(value, torch.Tensor) or value.numel() != parameters[name].numel():
            raise ValueError(f"value of {name!r} must be a tensor of "
                             f"{parameters[name].numel()} elements (shape "
                             f"{tuple(parameters[name].shape)}), got "
                             f"{tuple(getattr(value, 'shape', ()))}")
    changed = copy.deepcopy(model)
    changed_parameters = dict(changed.named_parameters())
    for name, value in values.items():
        changed_parameters[name].copy_(value.reshape(parameters[name].shape))
    return changed


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position ``t`` sees only positions ``<= t``.

    ``qkv`` projects every token to its query, key and value at once; ``proj`` mixes the
    heads' outputs back into the residual stream.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"heads must divide width, got width={width}, heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class FeedForward(nn.Module):
    """The transformer's MLP: ``width -> 4 width -> GELU -> width``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, 4 * width)
        self.proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = FeedForward(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer over a vocabulary of ``vocab_size`` tokens.

    ``model(tokens)`` maps ``(batch, length)`` token ids, ``length <= context``, to
    ``(batch, length, vocab_size)`` logits of the next token. The linear layers a pruner
    sees are ``blocks.<i>.attn.qkv``, ``blocks.<i>.attn.proj``, ``blocks.<i>.mlp.fc`` and
    ``blocks.<i>.mlp.proj``; ``head`` shares its weight with ``token``.
    """

    def __init__(self, vocab_size: int, context: int = 64, width: int = 128, depth: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("context", context),
                            ("width", width), ("depth", depth), ("heads", heads)):
            if not _is_count(value):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.context = context
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.token.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"tokens may hold at most context={self.context} positions, "
                             f"got {length}")
        x = self.token(tokens) + self.position(torch.arange(length, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, length: int, *, seed: int = 0,
                 temperature: float = 1.0) -> torch.Tensor:
        """``prompt`` (1-D token ids) followed by ``length`` tokens sampled with ``seed``."""
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        generator = torch.Generator(device=prompt.device).manual_seed(seed)
        tokens = prompt.reshape(1, -1)
        for _ in range(length):
            logits = self(tokens[:, -self.context:])[0, -1] / temperature
            choice = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            tokens = torch.cat([tokens, choice.reshape(1, 1)], dim=1)
        return tokens[0]
