"""Test harness only: replaces TRL's NCCL weight sync to a vLLM server, the one piece that cannot run on a CPU.

TRL 1.16 pushes the trainer's weights into a vLLM *server* through vLLM's NCCL weight-transfer engine
(`VLLMClient.init_communicator` / `VLLMClient.update_named_params`), which needs a CUDA device. Tests that run server
mode on this CPU-only machine put this directory on PYTHONPATH and set EGSW_TEST_REPLACE_NCCL_SYNC=1; Python then
imports this file at start-up, and when `trl.generation.vllm_client` is first imported its two sync methods become
no-ops that walk the parameters (as the real one does) and append one line per sync to $EGSW_TEST_SYNC_LOG; with
$EGSW_TEST_COMM_LOG, the connecting trainer also records there the group address and port the real one would send
(vLLM's get_ip(), vllm_group_port) and its VLLM_HOST_IP.
Everything else (the server, generation over HTTP, prefix-cache reset, the trainer) is the real code path. Nothing
in the product imports or installs this file.
"""

import importlib.abc
import importlib.util
import os
import sys

TARGET = "trl.generation.vllm_client"


def _note(text: str) -> None:
    path = os.environ.get("EGSW_TEST_SYNC_LOG")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def _patch(module) -> None:
    def init_communicator(self, device=0):
        _note(f"init {self.base_url}")
        path = os.environ.get("EGSW_TEST_COMM_LOG")
        if path:  # what the real one would send the server: its group's address (vLLM's get_ip()) and port
            import json

            with open(path, "a") as f:
                f.write(json.dumps({"master_address": module.get_ip(), "master_port": self.group_port,
                                    "VLLM_HOST_IP": os.environ.get("VLLM_HOST_IP"),
                                    "node": os.environ.get("SLURMD_NODENAME"), "rank": os.environ.get("RANK")}) + "\n")  # fmt: skip

    def update_named_params(self, metadata, params):
        count = sum(1 for _ in params)
        _note(f"sync {count}")

    module.VLLMClient.init_communicator = init_communicator
    module.VLLMClient.update_named_params = update_named_params


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if os.environ.get("EGSW_TEST_REPLACE_NCCL_SYNC") == "1":
    sys.meta_path.insert(0, _PatchOnImport())
