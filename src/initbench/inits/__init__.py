"""Weight initialization schemes, one registry behind ``init_module``.

Usage::

    from initbench.inits import init_module, list_inits

    g = torch.Generator().manual_seed(0)
    init_module(model, "kaiming_normal", activation="relu", generator=g)
    stats = init_module(model, "lsuv", data=batch, generator=g)  # per-layer iterations, variance

Schemes and their formulas: docs/inits.md; Hydra group: conf/init/<name>.yaml.
"""

# Importing the scheme modules registers their schemes.
from . import basic, defaults, learned, lsuv, mean_field, orthogonal, residual, variance  # noqa: F401
from .apply import (
    LAYER_TYPES,
    InitCost,
    check_init_params,
    init_module,
    measure_cost,
    structure_of,
    structure_scheme,
    validate_hparams,
)
from .registry import (
    InitContext,
    Scheme,
    fan_in_and_fan_out,
    get_init,
    list_aliases,
    list_inits,
    register,
    resolve,
    unregister,
)
from .variance import variance_scaling_

__all__ = [
    "LAYER_TYPES",
    "InitContext",
    "InitCost",
    "Scheme",
    "check_init_params",
    "fan_in_and_fan_out",
    "get_init",
    "init_module",
    "unregister",
    "list_aliases",
    "list_inits",
    "measure_cost",
    "register",
    "resolve",
    "structure_of",
    "structure_scheme",
    "validate_hparams",
    "variance_scaling_",
]
