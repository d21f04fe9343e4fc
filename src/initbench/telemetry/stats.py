"""Per-layer statistics and histograms computed on the device, batched across layers.

The probes: every Linear/Conv layer of a model (``fc1``, ``conv17``, ``head``, ...) paired with
the activation module that follows it in the forward pass (``act1``, ``act17``, ...; found from
the call order, not from names); a layer with no activation (the head) is observed through its
raw output.

:func:`stack` copies a list of tensors into private buffers, one ``(k, n)`` buffer per group of
same-shaped tensors, and :func:`summarize` reduces every group with a fixed number of kernels,
whatever the number of layers, into one float64 matrix on the device: one row per tensor, the
columns of :data:`FIELDS` followed by the histogram counts. The caller copies that matrix to the
host once.

Conventions:

- Statistics are over the finite elements; NaN and +-Inf are counted in ``nonfinite`` and left
  out of the histogram. (The histogram range of a tensor with non-finite elements also spans 0.)
- ``std`` is the population standard deviation; ``rms = sqrt(mean^2 + std^2)``.
- Each tensor is scaled by the power of two at or above its largest finite magnitude before it
  is reduced (exact), so values up to the float32 maximum neither overflow nor lose the
  mean-centred variance.
- Histograms have ``bins`` equal-width bins between the finite minimum and maximum (a constant
  tensor ``c`` gets ``c +- |c|/2``, or ``+-0.5`` around 0).
- ``dead_frac`` (ReLU family): the fraction of units (features; channels for convs) never
  positive anywhere in the batch. ``saturated_frac`` (tanh, sigmoid, softsign): the fraction of
  outputs within ``1 - SATURATION`` of an asymptote, on a scale where the asymptotes are +-1
  (tanh: ``|y| > 0.99``; sigmoid: ``y < 0.005`` or ``y > 0.995``). NaN where not applicable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from initbench.inits import LAYER_TYPES
from initbench.models.activations import activation_name, get_activation

FIELDS = ("count", "nonfinite", "mean", "std", "rms", "lo", "hi", "dead_frac", "saturated_frac")
COL = {name: i for i, name in enumerate(FIELDS)}
MAX_BINS = 512  # W&B's histogram limit
SATURATION = 0.99  # |normalized output| above this counts as saturated
# Asymptotes of the saturating activations (the registry's family "saturating").
ASYMPTOTES = {"tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


@dataclass(frozen=True)
class Probe:
    """One observed layer: its weights, and the module whose output are its activations."""

    name: str  # the layer's module name: fc1, conv17, head
    kind: str  # linear | conv1d | conv2d | conv3d
    layer: nn.Module  # the Linear/Conv layer (its weight)
    output: nn.Module  # the activation module after it, or the layer itself (the head)
    activation: str | None  # registry name of that activation; None for a raw layer output

    @property
    def family(self) -> str:
        """The activation's family: relu | saturating | other (a raw output is "other")."""
        return get_activation(self.activation).family if self.activation else "other"


def find_probes(model: nn.Module, example: Tensor | None = None) -> list[Probe]:
    """Every Linear/Conv layer of ``model`` in ``named_modules`` order, paired with the
    activation module that follows it.

    "Follows" is in the order the model calls its leaf modules on ``example`` (one forward pass
    in eval mode, without autograd; the model's modes are restored), or, without an example or
    where that pass fails, in definition order: the first activation module (the registry's, or
    any of ``torch.nn``'s activations) after the layer and before the next Linear/Conv layer.
    Norms, pooling, dropout and reshapes in between are passed over. A layer with no activation
    after it (a head) is observed through its own output. Names do not matter.
    """
    order = _call_order(model, example)
    position = {m: i for i, m in enumerate(order)}
    probes = []
    for name, layer in model.named_modules():
        if not isinstance(layer, LAYER_TYPES):
            continue
        output, act = layer, None
        for module in order[position[layer] + 1 :] if layer in position else ():
            if isinstance(module, LAYER_TYPES):
                break
            name_in_registry = _registry_name(module)
            if name_in_registry is not None or type(module).__module__ == nn.ReLU.__module__:
                # an activation: the registry's, or any of torch.nn.modules.activation (those
                # get no dead/saturation statistics)
                output, act = module, name_in_registry
                break
        probes.append(Probe(name or type(layer).__name__.lower(), type(layer).__name__.lower(),
                            layer, output, act))  # fmt: skip
    if not probes:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layers to observe")
    return probes


def _registry_name(module: nn.Module) -> str | None:
    try:
        return activation_name(module)
    except ValueError:
        return None


def _call_order(model: nn.Module, example: Tensor | None) -> list[nn.Module]:
    """The model's leaf modules in the order of their first call on ``example``, then those it
    did not call, in definition order; definition order alone without an example."""
    leaves = [m for m in model.modules() if not list(m.children())]
    if example is None:
        return leaves
    called: dict[nn.Module, None] = {}
    handles = [m.register_forward_hook(lambda m, i, o: called.setdefault(m)) for m in leaves]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    except Exception:
        return leaves
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.training = training
    return [*called, *(m for m in leaves if m not in called)]


@dataclass
class Group:
    """Same-shaped tensors copied into one private buffer ``data`` of shape (k, n)."""

    rows: list[int]  # positions of the tensors in the list given to :func:`stack`
    data: Tensor
    shape: tuple[int, ...]  # shape of one tensor
    activation: str | None


def stack(
    tensors: Sequence[Tensor], activations: Sequence[str | None] | None = None
) -> list[Group]:
    """Copy ``tensors`` (detached) into one buffer per (shape, dtype, activation) group.

    The buffers are float32 (float64 for float64 tensors) and belong to the caller, so
    :func:`summarize` may overwrite them.
    """
    acts = list(activations) if activations is not None else [None] * len(tensors)
    keyed: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        keyed.setdefault((tuple(t.shape), t.dtype, acts[i]), []).append(i)
    groups = []
    for (shape, dtype, act), rows in keyed.items():
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        data = torch.stack([tensors[i].detach().reshape(-1) for i in rows]).to(compute)
        groups.append(Group(rows, data, shape, act))
    return groups


def summarize(groups: Sequence[Group], n_rows: int, bins: int = 0) -> Tensor:
    """Reduce the groups to an ``(n_rows, len(FIELDS) + bins)`` float64 matrix on their device.

    Row ``r`` describes the tensor at position ``r`` of the list given to :func:`stack` (rows of
    positions that no group holds stay NaN). Overwrites the groups' buffers. ``bins=0``: no
    histogram columns.
    """
    if not 0 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be in [0, {MAX_BINS}] (got {bins})")
    device = groups[0].data.device if groups else torch.device("cpu")
    out = torch.full((n_rows, len(FIELDS) + bins), float("nan"), dtype=torch.float64,
                     device=device)  # fmt: skip
    for group in groups:
        out.index_copy_(0, _row_index(tuple(group.rows), device), _summarize_group(group, bins))
    return out


def _summarize_group(group: Group, bins: int) -> Tensor:
    # Every step is a whole-buffer op or a per-row reduction, in place where it can be: this
    # runs for every layer at once, and its cost is a few passes over the buffer.
    x = group.data  # (k, n), private: overwritten below
    k, n = x.shape
    f64 = torch.float64
    nonfinite = (x - x).ne_(0).sum(1)  # x - x is NaN exactly where x is NaN or +-Inf
    count = n - nonfinite
    dead, saturated = _unit_fractions(x, group)
    x.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    lo_raw, hi_raw = x.amin(1), x.amax(1)
    # Scale by the power of two at or above the largest magnitude: |x| <= 1 from here on (no
    # overflow in the sums below), and a power of two scales every element exactly, so a small
    # spread far from zero keeps all its digits (an arbitrary scale rounds each element).
    peak = torch.maximum(lo_raw.abs(), hi_raw.abs())
    _, exponent = torch.frexp(peak)  # peak < 2**exponent
    # 2**-exponent in the buffer's type, which holds it for exponents in [min normal, max]
    # (float32: [-126, 128]); subnormal inputs get 2**126, which still leaves them below 1
    finfo = torch.finfo(x.dtype)
    lowest, highest = math.frexp(finfo.tiny)[1] - 1, math.frexp(finfo.max)[1]
    inv_scale = torch.ldexp(torch.ones_like(lo_raw), -exponent.clamp(lowest, highest))
    x.mul_(inv_scale[:, None])
    lo, hi = lo_raw * inv_scale, hi_raw * inv_scale
    # The sums are accumulated in float64 (the buffer stays float32, read as float64 inside
    # the reduction): a float32 sum of squares over millions of elements (a CNN activation
    # holds ~8M) is off by 1e-4..1e-3 relative, float64 by ~1e-15. It costs a few reductions
    # per snapshot, not per step; the exact sums are worth more than the speed here.
    n_fin = count.clamp_min(1).to(f64)
    shift0 = (x.sum(1, dtype=f64) / n_fin).to(x.dtype)  # the mean, rounded to the buffer's type
    x.sub_(shift0[:, None])
    # Shifted data: with d = x - shift0, mean = shift0 + mean(d) and var = mean(d^2) - mean(d)^2,
    # exact up to rounding because shift0 is within a rounding error of the mean. The zeros
    # that replaced non-finite elements are now -shift0: take them out of both sums.
    s0 = shift0.to(f64)
    d_mean = (x.sum(1, dtype=f64) + nonfinite * s0) / n_fin
    d_sq = (torch.linalg.vector_norm(x, dim=1, dtype=f64) ** 2 - nonfinite * s0**2) / n_fin
    var = (d_sq - d_mean**2).clamp_min(0)
    mean = shift0  # the histogram below bins x - shift0
    # A constant c (or no finite element) gets the range c +- |c|/2, or +-0.5 around 0.
    degenerate = hi <= lo
    half = torch.where(peak > 0, peak, torch.ones_like(peak)) * 0.5
    lo = torch.where(degenerate, lo - half * inv_scale, lo)  # exact: by a power of two
    hi = torch.where(degenerate, hi + half * inv_scale, hi)
    s64 = inv_scale.to(f64).reciprocal()  # the scale, exactly: a power of two
    pad = degenerate.to(f64) * half.to(f64)  # the edges in the tensor's units, from the extremes
    none = count == 0  # no finite element: no mean, std or rms
    mean64 = torch.where(none, float("nan"), (s0 + d_mean) * s64)
    std64 = torch.where(none, float("nan"), var.sqrt() * s64)
    cols = [
        count.to(f64),
        nonfinite.to(f64),
        mean64,
        std64,
        torch.sqrt(mean64**2 + std64**2),
        lo_raw.to(f64) - pad,
        hi_raw.to(f64) + pad,
        dead,
        saturated,
    ]
    stats = torch.stack(cols, dim=1)
    if not bins:
        return stats
    # Bin index in [0, bins) as a real number, shifted by row * bins, so that one count over the
    # whole buffer fills every row's histogram at once.
    width = (hi - lo) / bins
    shift = (lo - mean)[:, None]
    rows = torch.arange(k, device=x.device, dtype=x.dtype)[:, None] * bins
    x.sub_(shift).div_(width[:, None]).clamp_(0, bins - 0.5).add_(rows)
    counts = _bin_counts(x, k * bins).view(k, bins)
    # The non-finite elements were counted as zeros: take them out of the bin that zero fell in
    # (found with the same arithmetic as above, so it is the same bin).
    zero = (torch.zeros_like(shift) - mean[:, None]).sub_(shift).div_(width[:, None])
    zero_bin = zero.clamp_(0, bins - 0.5).long()
    counts.scatter_add_(1, zero_bin, -nonfinite[:, None].to(counts.dtype))
    return torch.cat([stats, counts.to(f64)], dim=1)


def row_norms(groups: Sequence[Group], n_rows: int) -> Tensor:
    """The L2 norm of every stacked tensor, as a float64 vector in :func:`stack`'s order."""
    device = groups[0].data.device if groups else torch.device("cpu")
    out = torch.full((n_rows,), float("nan"), dtype=torch.float64, device=device)
    for group in groups:
        # float64 accumulation, as in _summarize_group: a float32 norm of ~8M elements is
        # off by ~1e-3 relative
        norms = torch.linalg.vector_norm(group.data, dim=1, dtype=torch.float64)
        out.index_copy_(0, _row_index(tuple(group.rows), device), norms)
    return out


@functools.lru_cache(maxsize=1024)
def _row_index(rows: tuple[int, ...], device: torch.device) -> Tensor:
    """``rows`` as an index tensor on ``device``, made once: a fresh host-to-device copy per
    snapshot would wait for the device's queued work."""
    return torch.tensor(rows, device=device)


def _bin_counts(positions: Tensor, n_bins: int) -> Tensor:
    """Counts of ``floor(positions)`` in ``[0, n_bins)`` (positions are already in range).

    bincount is the fast one on the CPU; on CUDA it reads its input's maximum back to the host,
    so there histc (given its range, it never syncs) does the counting.
    """
    if positions.device.type == "cpu":
        return torch.bincount(positions.view(-1).int(), minlength=n_bins)
    return _histc_counts(positions, n_bins)


def _histc_counts(positions: Tensor, n_bins: int) -> Tensor:
    """:func:`_bin_counts` on CUDA (float counts), on any device: histc with unit-wide bins."""
    return torch.histc(positions, bins=n_bins, min=0, max=n_bins)


def _unit_fractions(x: Tensor, group: Group) -> tuple[Tensor, Tensor]:
    """Dead fraction (ReLU family) and saturated fraction (saturating family) per row; else NaN."""
    k = x.shape[0]
    nan = torch.full((k,), float("nan"), dtype=torch.float64, device=x.device)
    dead, saturated = nan, nan
    if group.activation is None:
        return dead, saturated
    family = get_activation(group.activation).family
    if family == "relu" and len(group.shape) >= 2:
        batch, units = group.shape[0], group.shape[1]
        # a unit is alive if any of its outputs (any example, any position) is positive;
        # amax propagates NaN, so a unit with a NaN output counts as not alive
        unit_max = x.view(k, batch, units, -1).amax(dim=(1, 3))
        dead = (unit_max > 0).logical_not().to(torch.float64).mean(1)
    elif family == "saturating" and group.activation in ASYMPTOTES:
        low, high = ASYMPTOTES[group.activation]
        centre, half = (low + high) / 2, (high - low) / 2
        near = (x - centre).abs_().gt_(SATURATION * half)
        saturated = near.sum(1).to(torch.float64) / x.shape[1]
    return dead, saturated
