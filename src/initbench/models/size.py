"""How big a model is, measured on the ``meta`` device (nothing is allocated).

The memory estimate (:mod:`initbench.memory`) uses it to refuse a run that cannot fit before
the model exists; :func:`initbench.models.model_size` measures it for any model, and a test
checks it against built models, exactly.
"""

from __future__ import annotations

from typing import NamedTuple


class ModelSize(NamedTuple):
    """A model's size in numbers of values (Python ints: no overflow, however big).

    Attributes:
        params: trainable parameters (``sum(p.numel() for p in model.parameters())``).
        activations: values one example puts through a training forward pass, the ones kept for
            backward: its input plus every layer's output (``nn.Flatten``'s, a view, excepted).
        widest: the largest of those tensors, per example: an evaluation pass (no autograd)
            holds about two at a time.
    """

    params: int
    activations: int
    widest: int
