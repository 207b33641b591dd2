"""Pruning criteria: *how important* is a weight, a row or a channel?

Importance scores, larger = more important; a granularity helper
(:mod:`labkit.pruning.granularity`) turns them into a keep-mask.

* **Magnitude** (Han et al. 2015): ``|w|`` for a weight; the L1 or L2 norm of a row
  (an output channel) for a group.
* **Scaling factor** (network slimming, Liu et al. 2017): the BatchNorm scale
  ``|gamma_c|`` of channel ``c``, pushed towards zero during training by an L1
  penalty ``lambda * sum |gamma|``.
* **Second order** (Optimal Brain Damage, LeCun et al. 1989): expanding the loss around
  a trained model, ``dL = sum g_i dw_i + 1/2 sum h_ii dw_i^2 + 1/2 sum_{i!=j} h_ij dw_i
  dw_j``; with ``g = 0`` at convergence and the cross terms neglected, deleting
  ``w_i`` (``dw_i = -w_i``) costs ``1/2 h_ii w_i^2``. The Hessian diagonal ``h_ii``
  is computed exactly by autograd for a small layer, or estimated for a whole model:
  with Hutchinson's estimator ``diag(H) = E[z * Hz]`` over Rademacher vectors ``z``
  (Hutchinson 1990; Bekas et al. 2007), unbiased but noisy where the Hessian is far from
  diagonal; or with the diagonal of the Fisher information (the Gauss-Newton matrix),
  exact and positive, which the labs use for whole-model OBD.
* **First-order Taylor** (Molchanov et al. 2017, 2019): ``|w_i * dL/dw_i|``, the
  first-order estimate of the loss change when ``w_i`` is removed.
* **Random**: the baseline every criterion must beat.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from labkit.measure import prunable_layers
from labkit.validation import (
    batches,
    check_count,
    check_real,
    check_seed,
    check_tensor,
    parameter_device,
)

BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def magnitude(weight: torch.Tensor) -> torch.Tensor:
    """Element-wise magnitude ``|w|`` (Han et al. 2015).

    ``weight``: a real tensor without NaN or infinity (a NaN would rank as the most
    important weight of all)."""
    check_tensor(weight, "weight")
    return weight.detach().abs()


def row_norm(weight: torch.Tensor, p: float = 2) -> torch.Tensor:
    """The Lp norm of every row ``weight[o]`` (an output channel): ``(sum_j |w_oj|^p)^(1/p)``.

    The lecture's example: ``[[3, -2], [1, -5]]`` has row L1 norms 5 and 6 and row L2
    norms sqrt(13) and sqrt(26). ``p`` is a real number ``>= 1`` or ``math.inf``. An
    integer ``weight`` is read as floating point (the norms are not integers).
    """
    check_tensor(weight, "weight")
    if weight.dim() < 2:
        raise ValueError(
            f"weight must have rows (dim() >= 2), got a {weight.dim()}-D tensor of shape "
            f"{tuple(weight.shape)}"
        )
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not p >= 1:
        raise ValueError(f"p must be a real number >= 1 (or math.inf), got {p!r}")
    values = weight.detach().flatten(1)
    if not values.is_floating_point():
        values = values.to(torch.get_default_dtype())
    return torch.linalg.vector_norm(values, ord=float(p), dim=1)


def random_importance(weight: torch.Tensor, *, seed: int) -> torch.Tensor:
    """Uniform random scores of ``weight``'s shape, drawn with ``seed``: the baseline."""
    check_tensor(weight, "weight", kind="any", finite=False)
    generator = torch.Generator().manual_seed(check_seed(seed))
    return torch.rand(weight.shape, generator=generator).to(weight.device)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights of the prunable layers, by parameter name (``"backbone.conv1.weight"``)."""
    return {f"{name}.weight": layer.weight for name, layer in prunable_layers(model).items()}


def _batchnorms(model: nn.Module) -> dict[str, nn.Module]:
    """The BatchNorms of ``model``, each of which must have a scale ``gamma``."""
    parameter_device(model)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, BATCHNORM_TYPES)}
    if not layers:
        raise ValueError(f"model has no BatchNorm layer: {type(model).__name__}")
    for name, bn in layers.items():
        if bn.weight is None:
            raise ValueError(f"BatchNorm {name!r} has no scale gamma (affine=False): network "
                             "slimming needs affine BatchNorms, nn.BatchNorm2d(c, affine=True)")
    return layers


def scaling_factors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Network slimming's channel importance ``|gamma|`` of every BatchNorm, by layer name."""
    return {name: bn.weight.detach().abs().clone() for name, bn in _batchnorms(model).items()}


def slimming_penalty(model: nn.Module, strength: float = 1e-4) -> torch.Tensor:
    """Network slimming's sparsity penalty ``strength * sum_c |gamma_c|`` (Liu et al. 2017).

    Summed over every BatchNorm scale of ``model``; differentiable, so
    ``labkit.training.train(..., extra_loss=slimming_penalty)`` adds it to the loss
    (``functools.partial`` sets another ``strength``).
    """
    strength = check_real(strength, "strength", 0.0)
    return strength * sum(bn.weight.abs().sum() for bn in _batchnorms(model).values())


def dataset_loss(model: nn.Module, loader: DataLoader) -> torch.Tensor:
    """Mean cross-entropy of ``model`` over ``loader``, in eval mode, with its graph.

    The loss the second-order criteria differentiate twice. BatchNorm uses its running
    statistics (eval mode), so the loss is that of the model being pruned; the model's
    train/eval mode is restored afterwards.
    """
    device = parameter_device(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for inputs, labels in batches(loader, "loader"):
            total = total + F.cross_entropy(model(inputs.to(device)), labels.to(device),
                                            reduction="sum")
            count += labels.numel()
    finally:
        model.train(was_training)
    return total / count


def _gradient_with_graph(loss: torch.Tensor, parameters: Iterable[torch.Tensor]):
    check_tensor(loss, "loss", kind="floating")
    if loss.numel() != 1:
        raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")
    return torch.autograd.grad(loss, list(parameters), create_graph=True)


def exact_hessian_diagonal(
    loss: torch.Tensor, parameter: torch.Tensor, *, chunk_size: int = 256
) -> torch.Tensor:
    """The exact Hessian diagonal ``h_ii = d^2 loss / dw_i^2`` of one parameter, by autograd.

    Differentiates the gradient ``g = dloss/dw`` (built with ``create_graph``) along the
    unit vectors ``e_i``: ``d(g . e_i)/dw`` is row ``i`` of the Hessian, whose ``i``-th
    entry is ``h_ii``. Rows come ``chunk_size`` at a time (batched Hessian-vector
    products), but the cost is still one backward pass per weight, so this is for small
    layers (up to a few thousand weights). ``loss`` keeps its graph.
    """
    check_count(chunk_size, "chunk_size")
    (gradient,) = _gradient_with_graph(loss, [parameter])
    gradient = gradient.flatten()
    size = parameter.numel()
    diagonal = torch.zeros(size, dtype=parameter.dtype, device=parameter.device)
    if not gradient.requires_grad:
        return diagonal.reshape(parameter.shape)
    for start in range(0, size, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, size), device=parameter.device)
        steps = torch.arange(rows.numel(), device=parameter.device)
        unit_vectors = torch.zeros(rows.numel(), size, dtype=parameter.dtype,
                                   device=parameter.device)
        unit_vectors[steps, rows] = 1.0
        (hessian_rows,) = torch.autograd.grad(gradient, parameter, grad_outputs=unit_vectors,
                                              retain_graph=True, is_grads_batched=True,
                                              materialize_grads=True)
        diagonal[rows] = hessian_rows.reshape(rows.numel(), size)[steps, rows]
    return diagonal.reshape(parameter.shape)


def hutchinson_hessian_diagonal(
    loss: torch.Tensor,
    parameters: Mapping[str, torch.Tensor],
    *,
    samples: int = 64,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Hutchinson's estimate of the Hessian diagonal of many parameters at once.

    ``diag(H) = E_z[z * Hz]`` for Rademacher ``z`` (entries +1 or -1 with equal
    probability, drawn with ``seed``), since ``E[z_i z_j] = 1`` if ``i = j`` else 0.
    Each sample costs one Hessian-vector product (a backward pass through the gradient),
    whatever the number of weights, so it scales to a whole model. The estimate of
    ``h_ii`` has variance ``sum_{j != i} h_ij^2 / samples``: it is noisy wherever the
    off-diagonal of the Hessian outweighs its diagonal, as in a trained network. The
    Hessian is that of ``loss`` over all ``parameters`` jointly (a dict name -> tensor,
    e.g. :func:`prunable_weights`).
    """
    check_count(samples, "samples")
    seed = check_seed(seed)
    names = list(parameters)
    tensors = [parameters[name] for name in names]
    gradients = _gradient_with_graph(loss, tensors)
    generator = torch.Generator().manual_seed(seed)
    sums = [torch.zeros_like(t) for t in tensors]
    for _ in range(samples):
        probes = [(torch.randint(0, 2, t.shape, generator=generator) * 2 - 1).to(t)
                  for t in tensors]
        products = torch.autograd.grad(gradients, tensors, grad_outputs=probes,
                                       retain_graph=True, materialize_grads=True)
        for total, probe, product in zip(sums, probes, products, strict=True):
            total += probe * product.detach()
    return {name: total / samples for name, total in zip(names, sums, strict=True)}


def obd_importance(weight: torch.Tensor, hessian_diagonal: torch.Tensor) -> torch.Tensor:
    """Optimal Brain Damage saliency ``1/2 * h_ii * w_i^2`` (LeCun et al. 1989)."""
    check_tensor(weight, "weight")
    check_tensor(hessian_diagonal, "hessian_diagonal")
    if hessian_diagonal.shape != weight.shape:
        raise ValueError(
            f"hessian_diagonal must have weight's shape {tuple(weight.shape)}, "
            f"got {tuple(hessian_diagonal.shape)}"
        )
    return 0.5 * hessian_diagonal.detach() * weight.detach() ** 2


def fisher_diagonal(
    model: nn.Module,
    loader: DataLoader,
    parameters: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The diagonal of the Fisher information matrix, a positive stand-in for ``diag(H)``.

    ``F = 1/N sum_n sum_c p(c | x_n) g_nc * g_nc``, where ``g_nc`` is the gradient of the
    cross-entropy of sample ``n`` *had its label been* ``c``. For a softmax
    cross-entropy, ``F`` equals the Gauss-Newton matrix ``sum_n J_n^T (diag p - p p^T)
    J_n``: the Hessian without its second-derivative-of-the-network term, which vanishes
    where the logits are linear in the weights (the last layer) and is small at a
    converged model (Martens 2020). Computed **exactly**, with no sampling: per-sample
    gradients (``torch.func.vmap`` over ``torch.func.grad``) for every class,
    weighted by the model's probabilities; one batched backward pass per class and
    batch (under ``no_grad``: ``torch.func.grad`` differentiates anyway, and no graph to
    the other parameters is kept). Eval mode (restored afterwards); ``parameters`` defaults to
    :func:`prunable_weights`. Used with OBD as in Fisher pruning (Theis et al. 2018).
    """
    parameters = prunable_weights(model) if parameters is None else parameters
    values = {name: tensor.detach() for name, tensor in parameters.items()}
    device = parameter_device(model)
    was_training = model.training
    model.eval()

    def loss_for_label(values, image, label):
        logits = torch.func.functional_call(model, values, (image[None],))
        return F.cross_entropy(logits, label[None])

    per_sample_gradients = torch.func.vmap(torch.func.grad(loss_for_label),
                                           in_dims=(None, 0, 0))
    sums = {name: torch.zeros_like(value) for name, value in values.items()}
    count = 0
    for inputs, _ in batches(loader, "loader"):
        inputs = inputs.to(device)
        with torch.no_grad():
            probabilities = F.softmax(model(inputs), dim=1)
            for label in range(probabilities.shape[1]):
                labels = torch.full((inputs.shape[0],), label, device=device)
                gradients = per_sample_gradients(values, inputs, labels)
                for name, gradient in gradients.items():
                    sums[name] += torch.einsum("n,n...->...", probabilities[:, label],
                                               gradient**2)
        count += inputs.shape[0]
    model.train(was_training)
    return {name: total / count for name, total in sums.items()}


def taylor_importance(
    model: nn.Module,
    loader: DataLoader,
    parameters: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """First-order Taylor importance ``|w_i * dL/dw_i|``, averaged over the batches of
    ``loader`` (Molchanov et al. 2017, 2019).

    The gradient is that of each batch's mean cross-entropy, in eval mode; averaging
    the absolute value per batch (rather than taking the full-data gradient, which is
    near zero at convergence) keeps the signal. ``parameters`` defaults to
    :func:`prunable_weights`. ``.grad`` fields and the train/eval mode are left as they
    were.
    """
    parameters = prunable_weights(model) if parameters is None else parameters
    names = list(parameters)
    tensors = [parameters[name] for name in names]
    device = parameter_device(model)
    was_training = model.training
    model.eval()
    sums = [torch.zeros_like(t) for t in tensors]
    count = 0
    for inputs, labels in batches(loader, "loader"):
        loss = F.cross_entropy(model(inputs.to(device)), labels.to(device))
        gradients = torch.autograd.grad(loss, tensors, materialize_grads=True)
        for total, tensor, gradient in zip(sums, tensors, gradients, strict=True):
            total += (tensor.detach() * gradient).abs()
        count += 1
    model.train(was_training)
    return {name: total / count for name, total in zip(names, sums, strict=True)}

