"""The demo task: an embedded task whose demonstrations mix three ways to add two numbers, of different lengths and
error rates, so that token entropy and completion length vary within a group.

    python -m open_r1_egsw.experiments.demo_task               # build (or reuse) .cache/demo/{data,base-model}
    python -m open_r1_egsw.experiments.demo_task --warm-start  # ... then the SFT warm start (recipes/demo/sft)

Tokenizer, model and cache come from embedded.py (`build_assets(..., rows=make_demo_rows)`).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

from open_r1_egsw.experiments.embedded import EmbeddedSpec, build_assets, has_carry, run_cli

DEMO_VERSION = 3  # bump when the demo rows change (part of the cache fingerprint through `EmbeddedSpec.version`)
DEFAULT_DEMO_ROOT = Path(".cache/demo")
DEMO_SFT_RECIPE = Path("recipes/demo/sft/config.yaml")
PATHS = ("direct", "split", "chunks")


@dataclass(frozen=True)
class DemoSpec(EmbeddedSpec):
    """EmbeddedSpec plus the demonstration mix; `task` keeps its fingerprint apart from the default task's."""

    task: str = "demo"
    demo_version: int = DEMO_VERSION
    path_weights: tuple[float, float, float] = (1.0, 2.0, 2.0)  # direct, split, chunks
    direct_slip: float = 0.6  # share of direct-path demonstrations with a carry that drop it
    split_slip: float = 0.5  # the same for the split path (its last step, as in the default task)
    chunk_pieces: tuple[int, ...] = (2, 3)  # the chunks path cuts the second operand into one of these numbers of
    # random parts, drawn uniformly per demonstration (each >= 2: one cut or more)
    swap_operands: float = 0.5  # share of demonstrations that write `b + a`


def solution_text(
    a: int, b: int, path: str, rng: random.Random, slip: bool = False, pieces: int = 2
) -> tuple[str, int]:
    """(the think text, its final number) of one solution path; `direct` and `split` can `slip` (drop the carry:
    the final number is 10 too small)."""
    total = a + b
    answer = total - 10 * slip
    if path == "direct":
        return f"{a} + {b} = {answer}", answer
    if path == "split":
        return f"{a} + {b} = {10 * (a // 10 + b // 10)} + {a % 10 + b % 10} = {answer}", answer
    if slip:
        raise ValueError(f"only the direct and split paths slip, not {path!r}")
    if path == "chunks":  # b cut into `pieces` random parts (each >= 1), added to a one at a time
        cuts = sorted(rng.sample(range(1, b), pieces - 1))
        parts = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, b])]
        steps, partial = [f"{a} + {b}"], a
        for i in range(pieces):
            steps.append(" + ".join(map(str, [partial, *parts[i:]])))
            partial += parts[i]
        return " = ".join([*steps, str(total)]), total
    raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")


def completion_text(think: str, answer: int) -> str:
    return f"<think>\n{think}\n</think>\n<answer>\n\\boxed{{{answer}}}\n</answer>"


def make_demo_rows(spec: DemoSpec) -> dict[str, list[dict]]:
    """Train and test rows, disjoint in (a, b), deterministic in `spec.seed`; gold always right, demonstrations
    (train `completion_reference`) drawn from the path mix, the direct and split ones slipping on carries."""
    rng = random.Random(spec.seed)
    operands = range(spec.min_operand, spec.max_operand + 1)
    pairs = [(a, b) for a in operands for b in operands]
    rng.shuffle(pairs)
    needed = spec.num_train + spec.num_test
    if needed > len(pairs):
        raise ValueError(f"num_train + num_test = {needed} exceeds the {len(pairs)} distinct problems.")
    rows: dict[str, list[dict]] = {}
    for split, split_pairs in (("test", pairs[: spec.num_test]), ("train", pairs[spec.num_test : needed])):
        rows[split] = []
        for a, b in split_pairs:
            path = rng.choices(PATHS, weights=spec.path_weights)[0]
            slip_rate = {"direct": spec.direct_slip, "split": spec.split_slip}.get(path, 0.0)
            slip = has_carry(a, b) and rng.random() < slip_rate
            x, y = (b, a) if rng.random() < spec.swap_operands else (a, b)
            pieces = rng.choice(spec.chunk_pieces) if path == "chunks" else 2
            think, answer = solution_text(x, y, path, rng, slip, pieces)
            gold, _ = solution_text(a, b, "split", rng)
            rows[split].append(
                {
                    "problem": f"What is {a} + {b}?",
                    "solution": f"{gold}. The answer is $\\boxed{{{a + b}}}$.",
                    "answer": str(a + b),
                    "completion_reference": completion_text(think, answer),
                    "path": path,
                    "level": "Level 2" if has_carry(a, b) else "Level 1",
                    "type": "Arithmetic",
                }
            )
    return rows


def build_demo_assets(root: Path = DEFAULT_DEMO_ROOT, spec: DemoSpec | None = None, force: bool = False):
    """Data set + tokenizer + random base model of the demo task under `root` (cached by fingerprint)."""
    return build_assets(Path(root), spec or DemoSpec(), force=force, rows_fn=make_demo_rows)


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        argv,
        description=__doc__.split("\n\n")[0],
        root_env="DEMO_ROOT",
        default_root=DEFAULT_DEMO_ROOT,
        build=lambda root, seed, force: build_demo_assets(root, DemoSpec(seed=seed), force=force),
        recipe=DEMO_SFT_RECIPE,
    )


if __name__ == "__main__":
    sys.exit(main())
