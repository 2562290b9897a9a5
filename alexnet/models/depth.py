"""AlexNet with one middle convolutional layer removed (section 7, the depth ablation).

Section 7: "if a single convolutional layer is removed, our network's performance degrades.
For example, removing any of the middle layers results in a loss of about 2% for the top-1
performance of the network." The middle layers are conv2, conv3 and conv4. Removing conv_k
drops it with its activation (and conv2's LRN); the pools stay, so the spatial arithmetic and
fc6 are unchanged, and conv_{k+1} is rebuilt to read conv_{k-1}'s maps.
"""

from __future__ import annotations

import inspect

from torch import nn

from alexnet.models.alexnet import AlexNet
from alexnet.models.init import initialize

REMOVABLE = ("none", "conv2", "conv3", "conv4")


class AlexNetDepth(AlexNet):
    """:class:`AlexNet` with ``remove`` (``none``, ``conv2``, ``conv3`` or ``conv4``) taken out.

    ``remove="none"`` is exactly :class:`AlexNet` (same layers, same initial weights for a seed).
    Every other keyword is :class:`AlexNet`'s.
    """

    def __init__(self, num_classes: int = 1000, *, remove: str = "none", **kwargs: object) -> None:
        if remove not in REMOVABLE:
            raise ValueError(f"remove must be one of {', '.join(REMOVABLE)}, got {remove!r}")
        super().__init__(num_classes, **kwargs)  # type: ignore[arg-type]
        self.removed = remove
        if remove == "none":
            return
        k = int(remove[-1])
        f = self.features
        before: nn.Conv2d = getattr(f, f"conv{k - 1}")
        after: nn.Conv2d = getattr(f, f"conv{k + 1}")
        for name in (f"conv{k}", f"act{k}", f"norm{k}"):
            if hasattr(f, name):
                setattr(f, name, nn.Identity())
        setattr(
            f,
            f"conv{k + 1}",
            nn.Conv2d(before.out_channels, after.out_channels, after.kernel_size, after.stride, after.padding,
                      groups=after.groups),
        )  # fmt: skip
        # Re-initialise every layer with the same scheme: the rebuilt conv must follow it too.
        initialize(self.layers_by_role(), kwargs.get("init", "paper"))  # type: ignore[arg-type]

    def layers_by_role(self) -> dict[str, nn.Conv2d | nn.Linear]:
        """As :meth:`AlexNet.layers_by_role`, without the removed layer."""
        layers = super().layers_by_role()
        return {role: layer for role, layer in layers.items() if isinstance(layer, (nn.Conv2d, nn.Linear))}


def _signature() -> inspect.Signature:
    """AlexNet's keywords plus ``remove``, so the registry sees (and checks) every option."""
    base = inspect.signature(AlexNet.__init__)
    params = [p for p in base.parameters.values() if p.kind is not p.VAR_KEYWORD]
    params.append(inspect.Parameter("remove", inspect.Parameter.KEYWORD_ONLY, default="none", annotation=str))
    return base.replace(parameters=params[1:])  # without ``self``


AlexNetDepth.__signature__ = _signature()  # type: ignore[attr-defined]
