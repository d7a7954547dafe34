from .trainer import (Trainer, build_trainer, epoch_length, register_trainer, register_trainer_hooks,  # noqa: F401
                      seed_from_config, trainer_class)
