"""What defines a training run: :class:`TrainConfig` (data, recipe, where to write, runtime
settings), stored in every checkpoint and in the run's ``config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from alexnet.training.recipes import Recipe, get_recipe

DEFAULT_KEEP_CHECKPOINTS = 2  # step checkpoints kept (each is a full copy once last.pt moves on)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run: data, recipe, where to write, and runtime settings.

    ``model_options`` are extra model keyword options (``lrn``, ``activation``, ...) on top of
    what the recipe and the dataset imply.
    """

    data: str
    recipe: Recipe
    out: str
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None  # None: this machine's faster layout (alexnet/precision.py)
    compile: bool = False
    workers: int = 0  # decoding threads for prepared datasets; 0 = in the training thread
    gpu_decode: bool = False  # prepared JPEGs decoded on the GPU (CUDA only)
    checkpoint_every: int = 0
    keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS  # newest step checkpoints kept; older ones deleted
    eval_batch_size: int = 500
    progress: bool = True
    model_options: dict[str, Any] = field(default_factory=dict)
    # Own images: the LR range test, and starting from pretrained weights.
    # fixed: recipe.lr; auto: the LR range test's choice (at most recipe.lr); steps: recipe.lr
    # scaled to the run's step count (the `alexnet train` default; see training/lr_finder.py)
    lr_policy: str = "fixed"
    init_from: str | None = None  # alexnet checkpoint / run folder, or a torchvision AlexNet state_dict
    freeze: str = "none"  # one of warmstart.FROZEN_LAYERS
    pretrained_lr_scale: float = 0.1  # lr multiplier of the pretrained layers (with init_from)
    init_norm: str = "weights"  # input normalisation with init_from: the weights' or the data's

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        recipe_fields = dict(d.pop("recipe"))
        recipe = get_recipe(recipe_fields["name"]).with_overrides(**recipe_fields)
        return cls(recipe=recipe, **d)
