"""vLLM's CPU GEMM dispatch for each CPU capability, with and without the project's colocate accommodation.

Usage: vllm_cpu_dispatch.py REPORT.json   (run by tests/test_vllm.py in its own process: it starts a 1-process gloo
group for vLLM's layers and patches vLLM module attributes, which must not leak into the test session)

Real vLLM layers (`ReplicatedLinear`, a linear layer: remove_weight=True; `ParallelLMHead`, the LM head:
remove_weight=False) are loaded through their own weight loaders and finished with vLLM's own
`process_weights_after_loading`, which calls `dispatch_cpu_unquantized_gemm`. What is FAKED, per capability, is only
what tells vLLM which CPU it runs on, plus a kernel library this CPU does not have:
- "onednn": the AMX probe `torch.cpu._is_amx_tile_supported` answers False and `is_zen_cpu` False (so that an AMX or
  Zen test machine also takes the oneDNN path); oneDNN itself is real;
- "amx": the AMX probe answers True (the CPU this runs on need not have AMX); sgl-kernel's `convert_weight_packed` and
  `weight_packed_linear` are vLLM's real ops where the loaded kernel build has them (AVX512-BF16 and AMX CPUs), and
  faked (a packed copy / a linear on it) only where it lacks them: the record says which;
- "zen": `current_platform.is_zen_cpu` answers True and zentorch's two ops are faked (zentorch is not installed):
  the prepack returns a copy, the linear computes on that copy.
For each layer it records the kernel vLLM chose (read from the code of `layer.cpu_linear`), whether the weight
parameter still has vLLM's weight loader, and, after loading NEW weights through that loader (what TRL's colocate sync
does), whether the layer's output equals F.linear with the new weights.
"""

import contextlib
import json
import socket
import sys

import torch

KERNELS = ("onednn_mm", "weight_packed_linear_cpu", "zentorch_linear_unary", "_torch_linear", "linear")


def kernel_of(layer) -> str:
    """The kernel `layer.cpu_linear` calls (its code's names), e.g. 'onednn_mm'."""
    names = layer.cpu_linear.__code__.co_names + (layer.cpu_linear.__code__.co_name,)
    return next(k for k in KERNELS if k in names)


@contextlib.contextmanager
def patched(obj, name, value):
    missing = object()
    old = getattr(obj, name, missing)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if old is missing:
            delattr(obj, name)
        else:
            setattr(obj, name, old)


@contextlib.contextmanager
def capability(name: str, record: dict):
    from vllm.platforms import current_platform

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(torch.cpu, "_is_amx_tile_supported", lambda: name == "amx"))
        stack.enter_context(patched(current_platform, "is_zen_cpu", lambda: name == "zen"))
        if name == "amx" and not hasattr(torch.ops._C, "convert_weight_packed"):
            record["faked_sgl_kernel"] = True
            import vllm._custom_ops as ops

            stack.enter_context(patched(torch.ops._C, "convert_weight_packed", lambda w: w.detach().clone()))
            stack.enter_context(patched(ops, "weight_packed_linear_cpu",
                                        lambda x, w, n, b: torch.nn.functional.linear(x, w.to(x.dtype), b)))  # fmt: skip
        if name == "zen" and not hasattr(torch.ops.zentorch, "zentorch_linear_unary"):
            record["faked_zentorch"] = True
            stack.enter_context(patched(torch.ops.zentorch, "zentorch_weight_prepack_for_linear",
                                        lambda w: w.detach().clone()))  # fmt: skip
            stack.enter_context(patched(torch.ops.zentorch, "zentorch_linear_unary",
                                        lambda x, w, b, is_weight_prepacked: torch.nn.functional.linear(x, w, b)))  # fmt: skip
        yield


def layers():
    """A linear layer and an LM head, vLLM's own classes, bf16, sizes every path accepts (N % 16 == 0, K % 32 == 0)."""
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    linear = ReplicatedLinear(64, 32, bias=False, params_dtype=torch.bfloat16, disable_tp=True, return_bias=False)
    head = ParallelLMHead(64, 64, params_dtype=torch.bfloat16)
    return {"linear": linear, "lm_head": head}


def check_layer(layer, generator) -> dict:
    n, k = layer.weight.shape
    first = torch.randn(n, k, generator=generator).to(torch.bfloat16)
    layer.weight.weight_loader(layer.weight, first)  # the model's load at engine start
    layer.quant_method.process_weights_after_loading(layer)  # -> dispatch_cpu_unquantized_gemm
    result = {"kernel": kernel_of(layer), "weight_numel": layer.weight.numel(),
              "has_weight_loader": hasattr(layer.weight, "weight_loader")}  # fmt: skip
    x = torch.randn(3, k, generator=generator).to(torch.bfloat16)
    if result["has_weight_loader"]:  # a sync: new weights through the loader, as vLLM's load_weights does
        new = torch.randn(n, k, generator=generator).to(torch.bfloat16)
        layer.weight.weight_loader(layer.weight, new)
        out, want = layer.quant_method.apply(layer, x), torch.nn.functional.linear(x, new)
        result["output_follows_sync"] = torch.equal(out, want)
        result["output_max_abs_diff_after_sync"] = (out.float() - want.float()).abs().max().item()
    return result


def main() -> int:
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    import open_r1_egsw.training.vllm_cpu as accommodation

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = {"accommodation_off": {}, "accommodation_on": {}}
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method=f"tcp://127.0.0.1:{port}")  # fmt: skip
        initialize_model_parallel(1)
        from types import SimpleNamespace

        report["applies"] = {
            mode: accommodation.keep_colocated_weights_loadable(SimpleNamespace(use_vllm=use, vllm_mode=mode))
            for mode, use in (("server", True), ("none", False))
        }
        for key, apply in (("accommodation_off", False), ("accommodation_on", True)):
            if apply:
                report["applies"]["colocate"] = accommodation.keep_colocated_weights_loadable(
                    SimpleNamespace(use_vllm=True, vllm_mode="colocate")
                )
            for name in ("onednn", "amx", "zen"):
                record = report[key][name] = {}
                with capability(name, record):
                    generator = torch.Generator().manual_seed(0)
                    for kind, layer in layers().items():
                        record[kind] = check_layer(layer, generator)
    with open(sys.argv[1], "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
