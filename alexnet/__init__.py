"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) rebuilt on PyTorch and torchvision."""

__version__ = "0.1.0"
