"""spark_bench entry point: ``python run.py [group=choice ...] [knob=value ...]`` (see README)."""

import sys

import hydra
from omegaconf import DictConfig

from spark_bench.config import ConfigError, register_resolvers
from spark_bench.models import ModelLoadError
from spark_bench.runner import run

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        results = run(cfg)
    except (ConfigError, ModelLoadError) as err:  # the user's input, not our bug: no traceback
        print(f"spark_bench: error: {err}", file=sys.stderr)
        sys.exit(2)
    return results["scores"]["average"]


if __name__ == "__main__":
    main()
