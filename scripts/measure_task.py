"""Command line of open_r1_egsw.experiments.task_stats: what a warm start gives EGSW to work with (entropy, length and entropy
spread within groups, EGSW weights at alpha 0.8 vs 0), printed and written as JSON. CPU, one process.

    python scripts/measure_task.py --model .cache/demo/sft-model --data .cache/demo/data --out demo_task.json
    python scripts/measure_task.py --model .cache/embedded/sft-model --data .cache/embedded/data   # default task

The definitions are in task_stats.py's docstring.
"""

import argparse
import json
import sys
from pathlib import Path

from open_r1_egsw.experiments.task_stats import measure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path(".cache/demo/sft-model"))
    parser.add_argument("--data", type=Path, default=Path(".cache/demo/data"))
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=80)  # the demo recipes' max_completion_length
    parser.add_argument("--eval_rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON output (default: print only)")
    args = parser.parse_args(argv)
    for path in (args.model, args.data):
        if not path.exists():
            sys.stderr.write(
                f"error: {path} does not exist (build it: python -m open_r1_egsw.experiments.demo_task --warm-start)\n"
            )
            return 2
    result = measure(args.model, args.data, args.prompts, args.num_generations, args.max_new_tokens,
                     args.eval_rows, args.seed)  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
