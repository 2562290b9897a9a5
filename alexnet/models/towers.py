"""The paper's model parallelism (section 3.2, Figure 2): each tower on its own device.

:class:`TwoTowerAlexNet` is built from a grouped two-tower :class:`~alexnet.models.alexnet.AlexNet`
and computes exactly the same function with the same ``state_dict``; only where the work runs
changes. Every layer is cut in half along its outputs (dim 0 of each weight and bias), one half
per tower:

* conv1, conv2, conv4, conv5 and half of fc6/fc7 live on the tower's device; conv2, conv4 and
  conv5 read only their own tower's maps (the grouped convolutions of the single-device net);
* conv3, fc6 and fc7 read **both** towers ("the GPUs communicate only in certain layers"):
  the other tower's activations are copied over before them (Figure 2's crossing lines);
* fc8 runs on the first device, on both towers' fc7 outputs; the logits come back there.

LRN: with ``lrn_scope="all"`` the grouped single-device net normalises over all of conv1's
(conv2's) maps, so a window near the middle channel reaches into the other tower's maps. To stay
equal to it, each tower receives the ``size // 2`` boundary maps it needs from the other one (a
"halo" of two maps) before its LRN. With ``lrn_scope="tower"`` (the paper's own split: each GPU
normalised within its own maps) each tower normalises its half alone and nothing crosses.

Dropout is applied at the source, to a tower's own outputs before they are shared, so both
towers' halves of fc6/fc7 see the same dropped units, as in the single-device net.

Cost, and why it is an option: on one modern GPU the whole paper net fits many times over, and
data parallelism (DDP) scales it better: each device then runs full-size, well-shaped kernels
and exchanges gradients once per step (61M values, overlapped with the backward pass), whereas
this split halves every kernel's width and moves activations across devices at conv3, fc6 and
fc7 (and the LRN halos) twice per step (forward and backward), serialising the two towers unless
the devices run asynchronously. It is here for fidelity to the paper's two-GTX-580 system and
for teaching, not for speed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from alexnet.errors import UserError
from alexnet.models.alexnet import AlexNet

# Layers cut in half along their outputs, in forward order, and the other per-tower modules.
SPLIT_LAYERS = {"features": ("conv1", "conv2", "conv3", "conv4", "conv5"), "classifier": ("fc6", "fc7")}
TOWER_MODULES = ("act1", "norm1", "pool1", "act2", "norm2", "pool2", "act3", "act4", "act5", "pool5",
                 "act6", "drop6", "act7", "drop7")  # fmt: skip


def parse_devices(spec: str | Sequence[str]) -> tuple[torch.device, torch.device]:
    """``"cuda:0,cuda:1"`` (or two names) -> two devices; a :class:`UserError` if unusable."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    if len(names) != 2 or not all(names):
        raise UserError(f"towers_on needs two devices, DEV0,DEV1 (e.g. cuda:0,cuda:1), got {spec!r}")
    try:
        devices = tuple(torch.device(n) for n in names)
    except RuntimeError as e:
        raise UserError(f"towers_on: {e}") from None
    for d in devices:
        if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
            raise UserError(f"towers_on: {d} is not a visible CUDA device ({torch.cuda.device_count()} visible)")
        if d.type not in ("cpu", "cuda"):
            raise UserError(f"towers_on: only cpu and cuda devices are supported, got {d}")
    return devices  # type: ignore[return-value]


def _half(layer: nn.Conv2d | nn.Linear, tower: int) -> nn.Conv2d | nn.Linear:
    """``layer``'s outputs of ``tower`` (first or second half) as a layer of its own."""
    n = layer.weight.shape[0] // 2
    bias = layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        # A grouped (two-group) layer: each half reads its own tower's maps only.
        in_channels = layer.in_channels // layer.groups
        half: nn.Conv2d | nn.Linear = nn.Conv2d(in_channels, n, layer.kernel_size, layer.stride, layer.padding,
                                                layer.dilation, bias=bias)  # fmt: skip
    else:
        half = nn.Linear(layer.in_features, n, bias=bias)
    rows = slice(tower * n, (tower + 1) * n)
    with torch.no_grad():
        half.weight.copy_(layer.weight[rows])
        if bias:
            half.bias.copy_(layer.bias[rows])
    return half


def _with_halo(norm: nn.Module, a0: torch.Tensor, a1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``norm`` over the channels of ``a0`` then ``a1`` (one per device), computed per tower with
    the other tower's boundary maps copied over: equal to ``norm(cat(a0, a1))`` split in two."""
    size = getattr(norm, "size", None)
    if size is None:  # nn.Identity (lrn=False): nothing crosses the boundary
        return norm(a0), norm(a1)
    before, after = size // 2, (size - 1) // 2
    c0 = a0.shape[1]
    n0 = norm(torch.cat([a0, a1[:, :after].to(a0.device)], 1)) if after else norm(a0)
    n1 = norm(torch.cat([a0[:, c0 - before :].to(a1.device), a1], 1)) if before else norm(a1)
    return n0[:, :c0], n1[:, before:]


class TwoTowerAlexNet(nn.Module):
    """A grouped two-tower :class:`AlexNet` spread over two devices (see the module docstring).

    Args:
        net: the grouped network (``towers=2``); its weights are copied, it is not kept.
        devices: the first and second tower's device (they may be the same, e.g. for tests).

    ``state_dict()`` and ``load_state_dict()`` use the grouped net's keys and shapes, so
    checkpoints move freely between the two. ``to()`` changes dtype and memory format but leaves
    each tower on its device; inputs may be on any device, logits come back on ``devices[0]``.
    """

    def __init__(self, net: AlexNet, devices: Sequence[torch.device]) -> None:
        super().__init__()
        if net.features.conv2.groups != 2:
            raise ValueError("towers_on needs the two-tower net (towers=2)")
        self.devices = tuple(torch.device(d) for d in devices)
        self.feature_side = net.feature_side
        self.lrn_order, self.lrn_scope = net.lrn_order, net.lrn_scope
        self.towers = nn.ModuleList()
        for t, device in enumerate(self.devices):
            parts = {name: _half(getattr(getattr(net, seq), name), t) for seq, names in SPLIT_LAYERS.items() for name in names}
            for name in TOWER_MODULES:
                seq = net.features if hasattr(net.features, name) else net.classifier
                parts[name] = copy.deepcopy(getattr(seq, name))
                if getattr(parts[name], "groups", 1) > 1:  # a per-tower LRN: this tower holds one group
                    parts[name].groups = 1
            self.towers.append(nn.ModuleDict(parts).to(device))
        self.fc8 = copy.deepcopy(net.classifier.fc8).to(self.devices[0])

    # -- forward ----------------------------------------------------------------------------

    def _both(self, name: str, h: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [tower[name](x) for tower, x in zip(self.towers, h, strict=True)]

    def _shared(self, h: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Both towers' activations, concatenated along channels on each tower's device."""
        return [torch.cat([x.to(d) for x in h], 1) for d in self.devices]

    def _norm_and_pool(self, i: int, h: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Layer ``i``'s LRN and max-pooling, in the grouped net's order (``lrn_order``)."""
        t0 = self.towers[0]  # LRN has no state: one tower's module serves both (see _with_halo)

        def norm(v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
            if self.lrn_scope == "tower":  # each tower's own maps only: nothing crosses
                return self._both(f"norm{i}", v)
            return list(_with_halo(t0[f"norm{i}"], *v))

        if self.lrn_order == "norm-pool":
            return self._both(f"pool{i}", norm(h))
        return norm(self._both(f"pool{i}", h))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """fc7's activations (both towers, on ``devices[0]``), as :meth:`AlexNet.forward_features`."""
        h = self._norm_and_pool(1, self._both("act1", self._both("conv1", [x.to(d) for d in self.devices])))
        h = self._norm_and_pool(2, self._both("act2", self._both("conv2", h)))
        h = self._both("act3", self._both("conv3", self._shared(h)))  # both towers feed conv3
        h = self._both("act4", self._both("conv4", h))
        h = self._both("pool5", self._both("act5", self._both("conv5", h)))
        h = self._both("drop6", self._both("act6", self._both("fc6", self._shared([torch.flatten(v, 1) for v in h]))))
        h = self._both("drop7", self._both("act7", self._both("fc7", self._shared(h))))
        return torch.cat([v.to(self.devices[0]) for v in h], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.forward_features(x))

    def layers_by_role(self) -> dict[str, nn.Conv2d | nn.Linear]:
        """The first tower's halves of conv1 .. fc7, and fc8 (for code that inspects layers)."""
        t0 = self.towers[0]
        return {name: t0[name] for names in SPLIT_LAYERS.values() for name in names} | {"fc8": self.fc8}

    # -- devices ----------------------------------------------------------------------------

    def to(self, *args: Any, **kwargs: Any) -> TwoTowerAlexNet:  # type: ignore[override]
        """dtype and memory format as ``nn.Module.to``; the device part is ignored (towers stay put)."""
        _, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        options: dict[str, Any] = {"non_blocking": non_blocking}
        if dtype is not None:
            options["dtype"] = dtype
        if memory_format is not None:
            options["memory_format"] = memory_format
        for tower, device in zip(self.towers, self.devices, strict=True):
            tower.to(device, **options)
        self.fc8.to(self.devices[0], **options)
        return self

    # -- the grouped net's state_dict -------------------------------------------------------

    def _pairs(self) -> list[tuple[str, str]]:
        """(grouped key, per-tower parameter name) for every split parameter."""
        return [(f"{seq}.{name}.{p}", f"{name}.{p}") for seq, names in SPLIT_LAYERS.items() for name in names
                for p in ("weight", "bias")]  # fmt: skip

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:  # type: ignore[override]
        """The grouped net's state_dict (halves concatenated on ``devices[0]``)."""
        out = destination if destination is not None else {}
        for key, part in self._pairs():
            halves = [tower.get_parameter(part) for tower in self.towers]
            merged = torch.cat([h if keep_vars else h.detach() for h in (halves[0], halves[1].to(halves[0].device))])
            out[prefix + key] = merged
        for p in ("weight", "bias"):
            value = getattr(self.fc8, p)
            out[f"{prefix}classifier.fc8.{p}"] = value if keep_vars else value.detach()
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        """Load a grouped net's state_dict (or this one's), splitting each tensor between the towers."""
        expected = {key for key, _ in self._pairs()} | {"classifier.fc8.weight", "classifier.fc8.bias"}
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if strict and (missing or unexpected):
            raise RuntimeError(f"TwoTowerAlexNet.load_state_dict: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for key, part in self._pairs():
                if key in state_dict:
                    value = state_dict[key]
                    n = value.shape[0] // 2
                    for t, tower in enumerate(self.towers):
                        tower.get_parameter(part).copy_(value[t * n : (t + 1) * n])
            for p in ("weight", "bias"):
                key = f"classifier.fc8.{p}"
                if key in state_dict:
                    getattr(self.fc8, p).copy_(state_dict[key])
        return nn.modules.module._IncompatibleKeys(missing, unexpected)


def split_towers(net: AlexNet, devices: str | Sequence[str]) -> TwoTowerAlexNet:
    """``net`` (grouped, two towers) spread over ``devices`` (``"cuda:0,cuda:1"`` or two names)."""
    return TwoTowerAlexNet(net, parse_devices(devices))
