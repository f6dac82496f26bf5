"""The embedded default task, built locally from a seed: a synthetic math data set, a tokenizer and a tiny Qwen2.

    python -m open_r1_egsw.experiments.embedded               # build (or reuse) .cache/embedded/{data,base-model}
    python -m open_r1_egsw.experiments.embedded --warm-start  # ... then the SFT warm start (recipes/tiny/sft)

The problems are two-number additions ("What is 37 + 48?") with a `\\boxed{}` gold in the MATH schema. The SFT
demonstrations drop the carry on most problems that have one, an error GRPO can correct.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from open_r1_egsw.training.data import SYSTEM_PROMPT

logger = logging.getLogger(__name__)

ASSET_VERSION = 5  # bump when the data, tokenizer or model construction changes
DEFAULT_ROOT = Path(".cache/embedded")
SFT_RECIPE = Path("recipes/tiny/sft/config.yaml")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class EmbeddedSpec:
    """What the embedded assets are built from; its hash is the cache fingerprint."""

    seed: int = 0
    num_train: int = 4000
    num_test: int = 200
    min_operand: int = 10  # operands in [min_operand, max_operand]
    max_operand: int = 99
    carry_slip: float = 0.7  # share of train references with a carry whose last step drops it (make_rows)
    vocab_size: int = 400
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    version: int = ASSET_VERSION

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EmbeddedPaths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def base_model(self) -> Path:
        return self.root / "base-model"

    @property
    def sft_model(self) -> Path:
        return self.root / "sft-model"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


# ---------------------------------------------------------------------------------------------------------------
# Data set
# ---------------------------------------------------------------------------------------------------------------


def has_carry(a: int, b: int) -> bool:
    return a % 10 + b % 10 >= 10


def reasoning(a: int, b: int, slip: bool = False) -> str:
    """`37 + 48 = 70 + 15 = 85`: tens and units added separately, then combined (one-digit facts at each step).

    With `slip` (only for a problem with a carry) the last step drops the carry: `37 + 48 = 70 + 15 = 75`.
    """
    if slip and not has_carry(a, b):
        raise ValueError(f"{a} + {b} has no carry to drop")
    return f"{a} + {b} = {10 * (a // 10 + b // 10)} + {a % 10 + b % 10} = {a + b - 10 * slip}"


def reference_completion(a: int, b: int, slip: bool = False) -> str:
    """The completion the SFT warm start imitates, with the think/answer tags of the `format` reward."""
    return f"<think>\n{reasoning(a, b, slip)}\n</think>\n<answer>\n\\boxed{{{a + b - 10 * slip}}}\n</answer>"


def make_rows(spec: EmbeddedSpec) -> dict[str, list[dict]]:
    """Train and test rows, disjoint in (a, b), deterministic in `spec.seed`.

    The gold (`solution`, `answer`) is always right. The SFT demonstrations (`completion_reference`) of the train
    split are imperfect on purpose: on a share `spec.carry_slip` of the problems with a carry they drop the carry
    at the last step (`70 + 15 = 75`). The warm start copies that habit, so it is right on problems without a
    carry and mostly wrong on the others; it still samples the right last step now and then, which is what the
    accuracy reward can reinforce. This is the situation RL with verifiable rewards is meant for (imperfect
    demonstrations, a checker that is right), small enough to see on a laptop.
    """
    rng = random.Random(spec.seed)
    operands = range(spec.min_operand, spec.max_operand + 1)
    pairs = [(a, b) for a in operands for b in operands]
    rng.shuffle(pairs)
    needed = spec.num_train + spec.num_test
    if needed > len(pairs):
        raise ValueError(f"num_train + num_test = {needed} exceeds the {len(pairs)} distinct problems.")
    splits = {"test": pairs[: spec.num_test], "train": pairs[spec.num_test : needed]}
    rows = {}
    for split, split_pairs in splits.items():
        rows[split] = []
        for a, b in split_pairs:
            slip = split == "train" and has_carry(a, b) and rng.random() < spec.carry_slip
            rows[split].append(
                {
                    "problem": f"What is {a} + {b}?",
                    "solution": f"{reasoning(a, b)}. The answer is $\\boxed{{{a + b}}}$.",
                    "answer": str(a + b),
                    "completion_reference": reference_completion(a, b, slip),
                    "level": "Level 2" if has_carry(a, b) else "Level 1",
                    "type": "Arithmetic",
                }
            )
    return rows


def write_dataset(spec: EmbeddedSpec, out_dir: Path, rows_fn: Callable = make_rows) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_fn(spec).items():
        with open(out_dir / f"{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and model
# ---------------------------------------------------------------------------------------------------------------


def _training_corpus(spec: EmbeddedSpec, rows_fn: Callable = make_rows) -> list[str]:
    texts = [SYSTEM_PROMPT, "system\nuser\nassistant\n"]
    for rows in rows_fn(spec).values():
        for row in rows:
            texts += [row["problem"], row["solution"], row["completion_reference"]]
    return texts


def build_tokenizer(spec: EmbeddedSpec, out_dir: Path, rows_fn: Callable = make_rows):
    """A byte-level BPE trained with Qwen2's own normaliser and pre-tokeniser.

    transformers 5 loads a `model_type: qwen2` checkpoint with `Qwen2Tokenizer`, which re-imposes Qwen2's
    pre-tokeniser: training with that same pre-tokeniser keeps encode/decode identical after `from_pretrained`.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    backend = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_training_corpus(spec, rows_fn), trainer=trainer)
    model_state = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model_state["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = spec.max_position_embeddings
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_model(spec: EmbeddedSpec, tokenizer, out_dir: Path) -> None:
    """A randomly initialised Qwen2 (same architecture as Qwen2.5-Math), saved with `save_pretrained`."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(spec.seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# ---------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------


def build_assets(
    root: Path = DEFAULT_ROOT, spec: EmbeddedSpec | None = None, force: bool = False, rows_fn: Callable = make_rows
) -> EmbeddedPaths:
    """Build (or reuse, when the fingerprint matches) the data set, tokenizer and base model under `root`.

    `rows_fn(spec)` makes the rows (default: this task's `make_rows`; demo_task.py passes its own)."""
    spec = spec or EmbeddedSpec()
    paths = EmbeddedPaths(Path(root))
    if not force and paths.manifest.exists():
        manifest = json.loads(paths.manifest.read_text())
        if manifest.get("fingerprint") == spec.fingerprint() and (paths.base_model / "config.json").exists():
            return paths
    logger.info("Building the embedded assets under %s (seed %d)", paths.root, spec.seed)
    for stale in (paths.data, paths.base_model, paths.sft_model):
        if stale.exists():
            shutil.rmtree(stale)
    write_dataset(spec, paths.data, rows_fn)
    tokenizer = build_tokenizer(spec, paths.base_model, rows_fn)
    build_model(spec, tokenizer, paths.base_model)
    paths.manifest.write_text(json.dumps({"fingerprint": spec.fingerprint(), "spec": asdict(spec)}, indent=2))
    return paths


def warm_start(paths: EmbeddedPaths, recipe: Path = SFT_RECIPE, extra_args: list[str] | None = None) -> Path:
    """Run the SFT warm start (sft.py with `recipe`) unless its output matches the current assets and recipe."""
    stamp = paths.sft_model / "warm_start.json"
    key = {
        "assets": json.loads(paths.manifest.read_text())["fingerprint"],
        "recipe": hashlib.sha256(Path(recipe).read_bytes()).hexdigest()[:16],
        "args": extra_args or [],
    }
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        logger.info("SFT warm start up to date: %s", paths.sft_model)
        return paths.sft_model
    from open_r1_egsw import sft

    args = [
        "--config",
        str(recipe),
        "--model_name_or_path",
        str(paths.base_model),
        "--dataset_name",
        str(paths.data),
        "--output_dir",
        str(paths.sft_model),
        "--overwrite_output_dir",
        "true",
    ]
    sft.cli_main(args + list(extra_args or []))
    stamp.write_text(json.dumps(key))
    return paths.sft_model


def run_cli(
    argv: list[str] | None,
    *,
    description: str,
    root_env: str,
    default_root: Path,
    build: Callable[[Path, int, bool], EmbeddedPaths],
    recipe: Path,
) -> int:
    """The command line shared by this module and demo_task.py: build (cached) assets, optionally warm-start,
    print their paths as one JSON line. `build(root, seed, force)` builds one task's assets."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", default=os.environ.get(root_env, str(default_root)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache fingerprint matches")
    parser.add_argument("--warm-start", action="store_true", help="also run the SFT warm start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = build(Path(args.root), args.seed, args.force)
    if args.warm_start:
        warm_start(paths, recipe)
    paths_json = {"data": str(paths.data), "base_model": str(paths.base_model), "sft_model": str(paths.sft_model)}
    sys.stdout.write(json.dumps(paths_json) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        argv,
        description=__doc__.split("\n\n")[0],
        root_env="EMBEDDED_ROOT",
        default_root=DEFAULT_ROOT,
        build=lambda root, seed, force: build_assets(root, EmbeddedSpec(seed=seed), force=force),
        recipe=SFT_RECIPE,
    )


if __name__ == "__main__":
    sys.exit(main())
