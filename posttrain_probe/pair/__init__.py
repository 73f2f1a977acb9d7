"""Paired loading, canonical hook sites, interventions with receipts."""

from .arch import ArchInfo, UnsupportedArchitectureError, discover
from .engines import BACKENDS, RunOutput
from .interventions import Ablate, Add, Edit, Intervention, InterventionNotFired, Patch, Receipt
from .loading import HookedModel, ModelLoadError, load_model, resolve_source
from .pair import ModelPair, encode, load_pair
from .parity import PairMismatchError, ParityReport, check_parity
from .prompts import format_instruction, resolve_format
from .sites import GLOBAL_KINDS, LAYER_KINDS, Site, SiteError, all_sites, parse_site

__all__ = [
    "ArchInfo",
    "UnsupportedArchitectureError",
    "discover",
    "BACKENDS",
    "RunOutput",
    "Ablate",
    "Add",
    "Edit",
    "Intervention",
    "InterventionNotFired",
    "Patch",
    "Receipt",
    "HookedModel",
    "ModelLoadError",
    "load_model",
    "resolve_source",
    "ModelPair",
    "encode",
    "load_pair",
    "PairMismatchError",
    "ParityReport",
    "check_parity",
    "format_instruction",
    "resolve_format",
    "GLOBAL_KINDS",
    "LAYER_KINDS",
    "Site",
    "SiteError",
    "all_sites",
    "parse_site",
]
