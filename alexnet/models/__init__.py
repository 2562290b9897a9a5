"""The models, by name: ``create(name, num_classes, **options)`` (the registry is :mod:`alexnet.models.registry`).

=================  ===========================================================  =====
name               what                                                         input
=================  ===========================================================  =====
``alexnet``        the paper's 2-tower net, per-tower LRN, 60,965,224 params    227
``alexnet-owt``    torchvision's single-tower layout, torchvision-compatible    224
``alexnet-small``  the paper's topology at CPU size, for 28-32 px data          28
``alexnet-small-depth``  alexnet-small minus one middle conv (section 7)         28
``fourlayer``      the four-layer CIFAR-10 net of Figure 1 (section 3.1)        32
=================  ===========================================================  =====
"""

from alexnet.models.registry import *  # the registry's __all__: the public API
from alexnet.models.registry import __all__ as __all__
