"""The embedded toy world: a generated world, a base model pretrained on it, and its SFT twin.

`build(preset, seed)` returns a `ToyPair` with HF directories `base_dir` / `post_dir`, evaluation sets in
`data_dir` (in the formats of the real-data loaders) and the acceptance `report`.
"""

from .builder import ToyPair, build
from .config import PRESETS, ToyWorldConfig, preset_config

__all__ = ["build", "ToyPair", "ToyWorldConfig", "PRESETS", "preset_config"]
