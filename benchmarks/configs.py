"""The experiment configs a benchmark measures: read from ``configs/``, the files ``cli.py`` trains with."""

from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_config(name: str) -> tuple[dict, dict, int]:
    """``(model init_args, data init_args, max_epochs)`` of ``configs/<name>.yaml``."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    return config["model"].get("init_args", {}), config["data"].get("init_args", {}), config["trainer"]["max_epochs"]
