"""Datasets, sampling order and batch transforms."""

from alexnet.data.dataset import BatchPlan, Dataset, DatasetInfo, TensorDataset
from alexnet.data.sources import open_dataset

__all__ = ["BatchPlan", "Dataset", "DatasetInfo", "TensorDataset", "open_dataset"]
