"""The training stages ``pretrain``, ``finetune`` and ``distill``: TorchDistributor + petastorm, tracked in MLflow.

- :mod:`~propensity.stages.training.pretrain`: :func:`run_pretrain` (masked-language modelling);
- :mod:`~propensity.stages.training.finetune`: :func:`run_finetune` (the teacher, registered);
- :mod:`~propensity.stages.training.distill`: :func:`run_distill` (the student, registered);
- :mod:`~propensity.stages.training.transfer`: the transfer experiment.

Underneath: :mod:`~propensity.stages.training.start` (typed starting points),
:mod:`~propensity.stages.training.fit` (one fine-tuning run), :mod:`~propensity.stages.training.wide`
(the heads' logistic regressions), :mod:`~propensity.stages.training.train_fn` (what each training
process runs, also standalone with ``torchrun``), :mod:`~propensity.stages.training.loaders`
(petastorm readers), :mod:`~propensity.stages.training.data` (Spark side) and
:mod:`~propensity.stages.training.distributed` (TorchDistributor). Import stages from their
modules; this package imports nothing heavy.
"""
