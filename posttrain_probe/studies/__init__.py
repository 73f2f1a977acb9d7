"""The studies behind experiments/*.py: config → pair → probe → result → figure, one function per study.

Each takes a `Study` (which pair, output folder, device, sizes; see `common`) and returns the run directories
it wrote. The scripts in experiments/ only parse arguments and call `run_script(name, ..., run_<study>)`.
"""

from .common import PAIRS, SIZES, PairSpec, Study, run_script, study_from_args, study_parser
from .directions import run_directions
from .drift import run_checkpoint_drift
from .knowledge import run_knowledge_localization
from .neurons import run_entropy_neurons
from .rlvr import LOSSES, rlvr_config, run_rlvr_dynamics, train_runs

__all__ = [
    "LOSSES",
    "PAIRS",
    "SIZES",
    "PairSpec",
    "Study",
    "rlvr_config",
    "run_checkpoint_drift",
    "run_directions",
    "run_entropy_neurons",
    "run_knowledge_localization",
    "run_rlvr_dynamics",
    "run_script",
    "study_from_args",
    "study_parser",
    "train_runs",
]
