"""The model layer, beneath every stage: what a propensity model is and how one is used.

- :mod:`~propensity.models.encoder`: the event encoder (field embeddings + BERT) and its pretraining objective;
- :mod:`~propensity.models.network`: the encoder + wide-and-deep heads (torch), losses, save/load;
- :mod:`~propensity.models.sequence`: ``event_ids`` cut or padded to a model's positions (Spark and NumPy);
- :mod:`~propensity.models.pyfunc`: the MLflow pyfunc models (the model's input contract) and their logging;
- :mod:`~propensity.models.registry`: registered names, resolving ``models:/`` URIs, local copies;
- :mod:`~propensity.models.spark_scoring`: the one function that scores a Spark DataFrame with a model;
- :mod:`~propensity.models.metrics`: AUC, PR-AUC and log loss in NumPy.

Submodules are imported on use: the training processes import the network without Spark.
"""
