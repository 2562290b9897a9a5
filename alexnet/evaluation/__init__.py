"""Using trained models: loading them with their input convention, top-1/top-5 error on a
dataset, features, confusion, retrieval. Predictions for image files are :mod:`alexnet.inference`'s.
"""

from alexnet.evaluation.checkpoints import evaluate_checkpoints, write_per_class
from alexnet.evaluation.loading import (
    LoadedModel,
    display_classes,
    fit_input_to_model,
    imagenet_class_names,
    load_model,
    torchvision_convention,
)
from alexnet.evaluation.metrics import Meter, evaluate

__all__ = ["LoadedModel", "Meter", "display_classes", "evaluate", "evaluate_checkpoints", "fit_input_to_model",
           "imagenet_class_names", "load_model", "torchvision_convention", "write_per_class"]  # fmt: skip
