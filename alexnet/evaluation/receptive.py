"""Receptive fields from the layer geometry: which input pixels each unit of a layer sees.

Walking the network's ``features`` in order, every convolution or pooling of kernel ``k``,
stride ``s``, padding ``p`` and dilation ``d`` maps the geometry of its input to its output::

    size'   = size + (k - 1) * d * jump      (pixels of the input one unit sees, per side)
    jump'   = jump * s                       (input pixels between neighbouring units)
    offset' = offset - p * jump              (input column of unit 0's first pixel)

so unit ``(y, x)`` of a layer sees rows ``offset + y * jump .. + size - 1`` (and the same for
columns), clipped to the image. Element-wise and channel-wise modules (ReLU, LRN, dropout) leave
it unchanged. The paper net's conv5 sees 163 x 163 pixels of its 227 x 227 input.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from alexnet.errors import UserError

# Modules that act on each position on its own (LRN mixes channels, not positions).
POINTWISE = (nn.ReLU, nn.Tanh, nn.Identity, nn.Dropout, nn.BatchNorm2d, nn.LocalResponseNorm)
SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class Field:
    """The receptive field of the units of one layer, in input pixels."""

    layer: str
    size: int  # side of the square of input pixels one unit sees (before clipping)
    jump: int  # input pixels between neighbouring units (the product of the strides)
    offset: int  # input row/column of the first pixel unit 0 sees (negative: in the padding)

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)``, bottom/right exclusive, of the input pixels unit
        ``(y, x)`` sees in an ``height x width`` image (clipped to it)."""
        top, left = self.offset + y * self.jump, self.offset + x * self.jump
        return max(top, 0), max(left, 0), min(top + self.size, height), min(left + self.size, width)


def _square(value: int | tuple[int, ...], what: str, name: str) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise UserError(f"{name}: non-square {what} {value}; receptive fields are computed for square geometry")
    return int(value[0])


def _is_pointwise(module: nn.Module) -> bool:
    return isinstance(module, POINTWISE) or type(module).__name__ == "LocalResponseNorm"


def layer_sequence(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of ``model.features`` in forward order, named as in the paper: weight layers by
    their role (``conv1`` ..), a pooling layer ``pool<i>`` after the last ``conv<i>`` before it."""
    features = getattr(model, "features", None)
    roles = getattr(model, "layers_by_role", None)
    if not isinstance(features, nn.Sequential) or roles is None:
        raise UserError(f"{type(model).__name__} has no sequential convolutional part (features) to trace")
    names = {id(m): role for role, m in roles().items()}
    out: list[tuple[str, nn.Module]] = []
    last = 0
    for child_name, module in features.named_children():
        if id(module) in names:
            name = names[id(module)]
            last = int(name[4:]) if name.startswith("conv") else last
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            name = f"pool{last}"
        else:
            name = child_name
        out.append((name, module))
    return out


def receptive_fields(model: nn.Module) -> dict[str, Field]:
    """The :class:`Field` of every convolution and pooling layer of ``model``'s ``features``, in
    forward order (``conv1``, ``pool1``, ``conv2`` ..., as :func:`layer_sequence` names them)."""
    size, jump, offset = 1, 1, 0
    fields: dict[str, Field] = {}
    for name, module in layer_sequence(model):
        if isinstance(module, SPATIAL):
            k = _square(module.kernel_size, "kernel", name)
            s = _square(module.stride, "stride", name)
            p = _square(module.padding, "padding", name)
            d = _square(getattr(module, "dilation", 1), "dilation", name)
            size, offset, jump = size + (k - 1) * d * jump, offset - p * jump, jump * s
            fields[name] = Field(name, size, jump, offset)
        elif not _is_pointwise(module):
            raise UserError(f"{name} ({type(module).__name__}): its receptive field is unknown")
    return fields
