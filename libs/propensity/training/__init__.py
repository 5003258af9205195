"""The teacher model: MLM pretraining and fine-tuning through TorchDistributor + petastorm, tracked in MLflow.

Stages (import them from their modules; this package imports nothing heavy):

- :func:`propensity.training.pretrain.run_pretrain`: ``propensity pretrain``;
- :func:`propensity.training.finetune.run_finetune`: ``propensity finetune``.

Modules: :mod:`~propensity.training.settings` (the ``teacher``, ``student`` and ``training``
config sections), :mod:`~propensity.training.model` (encoder + wide-and-deep heads),
:mod:`~propensity.training.train_fn` (the functions each training process runs, also
standalone with ``torchrun``), :mod:`~propensity.training.loaders` (petastorm readers),
:mod:`~propensity.training.data` (Spark side), :mod:`~propensity.training.distributed`
(TorchDistributor), :mod:`~propensity.training.pyfunc` (the MLflow model) and
:mod:`~propensity.training.mlflow_utils`.
"""

from propensity.training.settings import ModelSettings, StudentSettings, TeacherSettings, TrainSettings

__all__ = ["ModelSettings", "StudentSettings", "TeacherSettings", "TrainSettings"]
