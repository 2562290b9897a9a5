"""Figures and the HTML report of a run (drawing only: the numbers come from evaluation).

* :mod:`~alexnet.reporting.plots`: matplotlib charts (curves, top-5 bars, heat map, histogram);
* :mod:`~alexnet.reporting.grids`: Pillow image grids (conv1 kernels, retrieval rows);
* :mod:`~alexnet.reporting.html`: assembling one self-contained HTML page;
* :mod:`~alexnet.reporting.report`: ``alexnet report`` itself, gathering the numbers and figures.
"""
