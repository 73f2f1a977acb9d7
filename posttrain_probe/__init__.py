"""posttrain_probe: what did post-training change inside a model, and why does policy entropy collapse?"""

__version__ = "0.1.0"

from .pair import (  # noqa: E402
    Ablate,
    Add,
    Edit,
    HookedModel,
    ModelPair,
    Patch,
    check_parity,
    load_model,
    load_pair,
)
from .steering import SteeringVector  # noqa: E402

__all__ = [
    "__version__",
    "SteeringVector",
    "load_pair",
    "load_model",
    "ModelPair",
    "HookedModel",
    "Patch",
    "Add",
    "Ablate",
    "Edit",
    "check_parity",
]
