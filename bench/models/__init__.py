"""Model zoo: `create(name, ...)` builds any registered net; `describe(name)` gives params and FLOPs.

One file per family; importing this package registers them all.
"""

from ._registry import (
    ModelConfigError,
    UnknownModelError,
    create,
    families,
    list_models,
    model_info,
    model_options,
    register_model,
)
from .flops import count_flops, count_params, create_meta, describe, describe_all
# importing a family module registers its models
from . import densenet, fitnet, highway, preact, resnet_cifar, resnext_cifar, resnext_imagenet  # noqa: F401

__all__ = [
    "ModelConfigError",
    "UnknownModelError",
    "count_flops",
    "count_params",
    "create",
    "describe",
    "describe_all",
    "families",
    "list_models",
    "model_info",
    "model_options",
    "register_model",
]
