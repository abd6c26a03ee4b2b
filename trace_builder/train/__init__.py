"""Training on the final datasets: SFT and DPO through TRL, IOPO through our own Trainer subclass."""

from trace_builder.train.config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config", "run_training"]


def run_training(config: TrainConfig) -> dict:
    """Train as `config` says (imports torch/TRL lazily); see runner.run_training."""
    from trace_builder.train.runner import run_training as _run

    return _run(config)
