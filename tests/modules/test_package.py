"""Importing gapbridge leaves torch's cheap CUDA check in place on machines without a GPU."""

import os

import torch

import modules  # noqa: F401


def test_nvml_cuda_check_is_off_without_a_gpu():
    if torch.cuda.is_available():
        return  # on GPU machines Lightning's setting is kept; nothing to check here
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") is None
