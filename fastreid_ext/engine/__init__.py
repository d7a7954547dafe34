from .trainer import Trainer, register_trainer_hooks  # noqa: F401
