"""The model registry: each model's name, builder and input size, and ``create(name,
num_classes, **options)`` with its options checked; the options' legacy defaults and one
canonical spelling of a model and its options (re-exported by :mod:`alexnet.models`)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from alexnet.errors import UserError
from alexnet.models.alexnet import PAPER_SHAPE, SMALL_SHAPE, AlexNet
from alexnet.models.depth import AlexNetDepth
from alexnet.models.fourlayer import FourLayerNet

__all__ = [
    "LEGACY_DEFAULTS", "MODELS", "ModelInfo", "available", "canonical", "count_parameters", "create", "explicit_options",
    "info", "model_options", "saved_options",
]


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: how to build it and what input it expects."""

    name: str
    description: str
    image_size: int
    build: Callable[..., nn.Module]
    default_options: tuple[tuple[str, object], ...] = ()
    # (model, options): built with these options, this model is exactly that model (the same
    # layers and, for a seed, the same initial weights); see :func:`canonical`.
    same_as: tuple[str, tuple[tuple[str, object], ...]] | None = None


class _ImportedOnUse:
    """A builder named ``"module:attribute"`` that is imported when it is first called or inspected.

    Why: torchvision (which ``alexnet-owt`` subclasses) brings torch._dynamo with it, about 1 s of
    every command's start-up on a 2-core CPU, and no other model needs it.
    """

    def __init__(self, target: str) -> None:
        self.target = target

    def _resolve(self) -> Callable[..., nn.Module]:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __call__(self, *args: object, **kwargs: object) -> nn.Module:
        return self._resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:  # what inspect.signature() reads: the options
        return inspect.signature(self._resolve())


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo(
            "alexnet",
            "paper-exact AlexNet: 2 towers, per-tower LRN, overlapping pooling",
            227,
            partial(AlexNet, shape=PAPER_SHAPE),
            # Section 3.2/3.3: each GPU normalised across its own kernel maps (see LEGACY_DEFAULTS).
            (("lrn_scope", "tower"),),
        ),
        ModelInfo(
            "alexnet-owt",
            "torchvision's single-tower 'one weird trick' AlexNet",
            224,
            _ImportedOnUse("alexnet.models.owt:AlexNetOWT"),
        ),
        ModelInfo(
            "alexnet-small",
            "the paper's topology sized for 28-32 px images (CPU demo, ablations)",
            28,
            partial(AlexNet, shape=SMALL_SHAPE),
            (("init", "kaiming"),),
        ),
        ModelInfo(
            "alexnet-small-depth",
            "alexnet-small with option remove=conv2|conv3|conv4 (section 7)",
            28,
            partial(AlexNetDepth, shape=SMALL_SHAPE),
            (("init", "kaiming"),),
            ("alexnet-small", (("remove", "none"),)),  # tests/test_experiments_models.py checks it
        ),
        ModelInfo("fourlayer", "the four-layer CIFAR-10 net of section 3.1, Figure 1 (relu/tanh)", 32, FourLayerNet),
    )
}


# Options whose default changed after runs had been saved: for each model, the value a saved
# option set *without* the option was built with. Checkpoints name these options explicitly
# (:func:`explicit_options`, on writing) and an older checkpoint gets the old value
# (:func:`saved_options`, on reading), so a model rebuilt from a run computes what was trained.
# alexnet's lrn_scope: "all" (across both towers) until the per-tower LRN became its default.
LEGACY_DEFAULTS: dict[str, tuple[tuple[str, object], ...]] = {"alexnet": (("lrn_scope", "all"),)}


def saved_options(name: str, options: dict[str, object]) -> dict[str, object]:
    """The options a checkpoint of ``name`` was built with: ``options`` plus the old default of
    every option in :data:`LEGACY_DEFAULTS` that it does not name (it predates the option)."""
    return dict(LEGACY_DEFAULTS.get(name, ())) | dict(options)


def explicit_options(name: str, options: dict[str, object]) -> dict[str, object]:
    """``options`` with today's default of every :data:`LEGACY_DEFAULTS` option it leaves out,
    as a checkpoint must record them (see :func:`saved_options`)."""
    if name not in LEGACY_DEFAULTS:
        return dict(options)
    entry, current = info(name), {}
    defaults = dict(entry.default_options)
    params = inspect.signature(entry.build).parameters
    for key, _ in LEGACY_DEFAULTS[name]:
        current[key] = defaults[key] if key in defaults else params[key].default
    return current | dict(options)


def available() -> list[str]:
    """Names of all registered models."""
    return list(MODELS)


def info(name: str) -> ModelInfo:
    """The registry entry for ``name``; a :class:`UserError` naming the choices if unknown."""
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)} (see `alexnet models`)") from None


def model_options(name: str) -> list[str]:
    """The keyword options that ``create(name, ...)`` accepts."""
    sig = inspect.signature(info(name).build)
    options = [p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "shape"]
    # The two-tower nets can also be spread over two devices (section 3.2; models/towers.py).
    return [*options, "towers_on"] if "towers" in options else options


def create(name: str, num_classes: int = 1000, **options: object) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs.

    ``options`` are the model's keyword arguments (for ``alexnet``/``alexnet-small``:
    ``in_channels, image_size, activation, lrn, lrn_convention, lrn_k, lrn_order, lrn_scope, pooling,
    towers, dropout, init, widths, fc_width`` and ``towers_on="DEV0,DEV1"``, the paper's model parallelism, see
    :mod:`alexnet.models.towers`; for ``alexnet-owt``: ``in_channels, dropout, init``). Unknown
    names and bad values raise :class:`UserError`.
    """
    entry = info(name)
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"model {name!r} has no option {', '.join(unknown)}; its options are: {', '.join(allowed)}")
    kwargs = dict(entry.default_options) | options
    towers_on = kwargs.pop("towers_on", None)
    try:
        model = entry.build(num_classes=num_classes, **kwargs)
        if towers_on:
            from alexnet.models.towers import split_towers

            model = split_towers(model, towers_on)  # type: ignore[arg-type]
    except ValueError as e:
        raise UserError(f"model {name!r}: {e}") from None
    return model


def canonical(name: str, options: dict[str, object]) -> tuple[str, dict[str, object]]:
    """The model and complete options that ``create(name, **options)`` builds, in one spelling.

    Every option the call leaves out gets its default (the registry's, else the signature's), a
    model that is another one with some options (``ModelInfo.same_as``) is named as that one, and
    ``towers_on`` (where the towers run, not what they compute) is dropped. Two runs whose recipes
    agree and whose canonical models are equal train the same network from the same seed.
    """
    entry = info(name)
    options = {k: v for k, v in options.items() if k != "towers_on"}
    if entry.same_as is not None:
        target, when = entry.same_as
        if all(options.get(k, _default(entry, k)) == v for k, v in when):
            return canonical(target, {k: v for k, v in options.items() if k not in dict(when)})
    return entry.name, {k: options.get(k, _default(entry, k)) for k in model_options(name) if k != "towers_on"}


def _default(entry: ModelInfo, option: str) -> object:
    defaults = dict(entry.default_options)
    return defaults[option] if option in defaults else inspect.signature(entry.build).parameters[option].default


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
