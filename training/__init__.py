"""Fine-tuning: data formats, chat templates, packing, LoRA / QLoRA / full, DeepSpeed, checkpoints, export.

A library: may import `pipelines` only. `train(TrainingConfig(...), callbacks)` is the entry point.
"""

from training.config import TrainingConfig
from training.data import DataError, Example, Turn, load_examples, parse_file
from training.model import TrainingError
from training.trainer import Callbacks, TrainResult, train

__all__ = ["Callbacks", "DataError", "Example", "TrainResult", "TrainingConfig", "TrainingError", "Turn",
           "load_examples", "parse_file", "train"]
