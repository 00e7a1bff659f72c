"""Every path of the project, from one place.

Notebooks, the pipeline and the tests take their paths from here, never typed by hand.
"""

from __future__ import annotations

from pathlib import Path

PROJ_ROOT = Path(__file__).resolve().parents[2]

PARAMS_FILE = PROJ_ROOT / "params.yaml"
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
DATA_DIR = PROJ_ROOT / "data"
RAW_DIR = DATA_DIR / "raw"
SUBSET_DIR = DATA_DIR / "subset"
MODELS_DIR = PROJ_ROOT / "models"
REPORTS_DIR = PROJ_ROOT / "reports"
CHECKPOINTS_DIR = MODELS_DIR / "checkpoints"

# Files inside the subset folder.
MANIFEST_NAME = "manifest.csv"
SUMMARY_NAME = "summary.json"
MASKED_DIRNAME = "masked"
UNMASKED_DIRNAME = "unmasked"

# The masked-face detector and landmark model (unmasking.detector): in the models folder, and shipped side by side.
MASKED_DETECTOR = "masked_faces.svm"
MASKED_LANDMARKS = "masked_landmarks.dat"
MASKED_CARD = "masked_faces.json"

def model_path(name: str, models_dir: Path | None = None) -> Path:
    """Where the trained weights of model ``name`` live."""
    return Path(models_dir or MODELS_DIR) / f"{name}.keras"


def model_card_path(name: str, models_dir: Path | None = None) -> Path:
    """The JSON model card beside the weights of model ``name``."""
    return Path(models_dir or MODELS_DIR) / f"{name}.json"


def resolve(path: str | Path, base: Path | None = None) -> Path:
    """Resolve a path given in params.yaml (relative to the project root) to an absolute path."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(base or PROJ_ROOT) / p).resolve()
