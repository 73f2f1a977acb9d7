"""posttrain_probe: what did post-training change inside a model, and why does policy entropy collapse?

The public names load lazily, so `import posttrain_probe` (and `posttrain-probe --help`) imports no torch."""

from posttrain_probe.utils.lazy import lazy_exports

__version__ = "0.1.0"

_NAMES = {
    "SteeringVector": "steering",
    "load_pair": "pair",
    "load_model": "pair",
    "ModelPair": "pair",
    "HookedModel": "pair",
    "Patch": "pair",
    "Add": "pair",
    "Ablate": "pair",
    "Edit": "pair",
    "check_parity": "pair",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = ["__version__", *sorted(_NAMES)]
