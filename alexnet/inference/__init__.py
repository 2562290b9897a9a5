"""Inference on any model a user can point at: :func:`open_predictor` -> :class:`Predictor`."""

from alexnet.inference.predictor import (
    BATCH,
    KIND_WORDS,
    BaselinePredictor,
    OnnxPredictor,
    Predictor,
    TorchPredictor,
    open_predictor,
    prediction_record,
)

__all__ = ["BATCH", "KIND_WORDS", "BaselinePredictor", "OnnxPredictor", "Predictor", "TorchPredictor", "open_predictor",
           "prediction_record"]  # fmt: skip
