"""Helpers shared by the tests: import them from here, never from another test module.

* :mod:`tests.helpers.cli`: run ``alexnet`` in-process or as a subprocess, the one-line error check.
* :mod:`tests.helpers.layouts`: small datasets in each real layout (ILSVRC, Kaggle, folders, IDX, CIFAR).
* :mod:`tests.helpers.shapes`: a small real image set of drawn shapes, written as IDX files.
* :mod:`tests.helpers.interop`: small run folders, real image files and a live server.
"""
