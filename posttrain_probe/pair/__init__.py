"""Paired loading, canonical hook sites, interventions with receipts (names load lazily: importing the package
does not import torch)."""

from posttrain_probe.utils.lazy import lazy_exports

_NAMES = {
    "ArchInfo": "arch",
    "UnsupportedArchitectureError": "arch",
    "discover": "arch",
    "BACKENDS": "engines",
    "RunOutput": "engines",
    "Ablate": "interventions",
    "Add": "interventions",
    "Edit": "interventions",
    "Intervention": "interventions",
    "InterventionNotFired": "interventions",
    "Patch": "interventions",
    "Receipt": "interventions",
    "HookedModel": "loading",
    "ModelLoadError": "loading",
    "load_model": "loading",
    "resolve_source": "loading",
    "ModelPair": "pair",
    "encode": "pair",
    "load_pair": "pair",
    "PairMismatchError": "parity",
    "ParityReport": "parity",
    "check_parity": "parity",
    "format_instruction": "prompts",
    "resolve_format": "prompts",
    "GLOBAL_KINDS": "sites",
    "LAYER_KINDS": "sites",
    "Site": "sites",
    "SiteError": "sites",
    "all_sites": "sites",
    "parse_site": "sites",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = sorted(_NAMES)
