"""Does ``--recipe finetune`` keep zero-shot ability? The regression check on the learning benchmark.

    PYTHONPATH=src python benchmarks/bench_finetune.py --init RUN/model.safetensors [--seeds 0,1]
    (here: RUN = the 1,200-budget small-data run of bench_learning.py, seed 0)

Start: a model trained on the learning benchmark's three training styles (e.g. its ``small-data``
run, ``bench_learning.py``). New domain: the held-out openmoji style, split by image into a
fine-tuning half (every other image, all five captions each) and a test half. Each seed fine-tunes
the start model twice for ``--steps`` steps: plainly (lr 1e-4, 10 % warm-up, weight decay 0.1,
sample-captions) and with ``--recipe finetune``. The training loop's own regression check
(``--eval-tasks``) reports zero-shot group top-1 on the *old* domain (twemoji, trained on by the
start model) and on the new one's test half against the start model, and ``--val-data`` the
retrieval R@5 on the test half. Results: a table on stdout and ``--out``/finetune.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from learning_data import PROMPTS, build  # noqa: E402  (the benchmark's data builder, beside this file)

ROOT = Path(__file__).parent.parent
CONFIGS = {
    "plain": ["--lr", "1e-4", "--warmup-steps", "{warmup}", "--weight-decay", "0.1", "--sample-captions"],
    "recipe-finetune": ["--recipe", "finetune"],
}
GROUP = re.compile(r" emoji from (.+)$")  # the fifth caption: "<name>, a <subgroup> emoji from <group>"


def split_data(data: Path, work: Path) -> dict[str, Path]:
    """The fine-tuning half (JSONL, caption lists), the test half (CSV) and the two zero-shot CSVs."""
    work.mkdir(parents=True, exist_ok=True)
    held = sorted((json.loads(line) for line in (data / "heldout.jsonl").open()), key=lambda r: r["filepath"])
    train, test = held[0::2], held[1::2]
    paths = {k: work / n for k, n in (("train", "ft_train.jsonl"), ("val", "ft_val.csv"),
                                      ("old", "twemoji_group.csv"), ("new", "openmoji_group.csv"))}  # fmt: skip
    with paths["train"].open("w") as f:
        for r in train:
            f.write(json.dumps({"filepath": str(data / r["filepath"]), "captions": r["captions"]}) + "\n")
    with paths["val"].open("w", newline="") as f:
        rows = [(str(data / r["filepath"]), r["captions"][0]) for r in test]  # one caption: retrieval ground truth
        csv.writer(f).writerows([("filepath", "captions"), *rows])
    old = [json.loads(line) for line in (data / "train.jsonl").open()]
    for key, rows in (("new", test), ("old", [r for r in old if r["filepath"].startswith("twemoji/")])):
        labelled = [(str(data / r["filepath"]), m.group(1)) for r in rows if (m := GROUP.search(r["captions"][-1]))]
        with paths[key].open("w", newline="") as f:
            csv.writer(f).writerows([("filepath", "label"), *labelled])
    return paths


def run(name: str, seed: int, flags: list[str], *, init: Path, paths: dict[str, Path], steps: int, work: Path) -> dict:
    cmd = [
        sys.executable, "-m", "clipforge", "train", "--data", str(paths["train"]), "--caption-key", "captions",
        "--init", str(init), "--steps", str(steps), "--batch-size", "128", "--precision", "fp32", "--workers", "1",
        "--seed", str(seed), "--val-data", str(paths["val"]), "--eval-tasks", f"{paths['old']},{paths['new']}",
        "--eval-templates", str(PROMPTS), "--eval-every", str(steps), "--save-every", "1000000",
        "--out", str(work / "runs"), "--name", f"{name}-s{seed}", "--no-progress",
        *[f.format(warmup=max(1, steps // 10)) for f in flags],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    log = work / f"{name}-s{seed}.log"
    with log.open("w") as f:
        if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode:
            sys.exit(f"bench_finetune: {name} seed {seed} failed, see {log}")
    rows = [json.loads(line) for line in (work / "runs" / f"{name}-s{seed}" / "metrics.jsonl").open()]
    final = [r for r in rows if "eval/regression/mean_top1_delta" in r][-1]  # after the EMA / WiSE-FT merge
    return {
        "config": name, "seed": seed,
        "old_delta": 100 * final["eval/regression/twemoji_group/top1_delta"],
        "new_zs": 100 * final["eval/zeroshot/openmoji_group/top1"],
        "new_t2i_R@5": 100 * final["eval/retrieval/text_to_image_R@5"],
        "start_old": 100 * rows[0]["start/zeroshot/twemoji_group/top1"],
        "start_new": 100 * rows[0]["start/zeroshot/openmoji_group/top1"],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", type=Path, required=True, help="the start model (trained on the three training styles)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--work", type=Path, default=Path("/tmp/clipforge-finetune"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    args = ap.parse_args()
    paths = split_data(build(), args.work)
    jobs = [(n, int(s)) for s in args.seeds.split(",") for n in CONFIGS]
    with ThreadPoolExecutor(2) as pool:
        records = list(
            pool.map(
                lambda j: run(*j, CONFIGS[j[0]], init=args.init, paths=paths, steps=args.steps, work=args.work), jobs
            )
        )
    print(f"start model: old-domain zero-shot {records[0]['start_old']:.2f}, new-domain {records[0]['start_new']:.2f}")
    print("| configuration | old-domain zero-shot delta | new-domain zero-shot | new-domain t2i R@5 |")
    print("|---|---|---|---|")
    for name in CONFIGS:
        mine = [r for r in records if r["config"] == name]
        cells = []
        for key in ("old_delta", "new_zs", "new_t2i_R@5"):
            vals = [r[key] for r in mine]
            sign = "+" if key == "old_delta" else ""
            cells.append(f"{statistics.fmean(vals):{sign}.2f} ± {(max(vals) - min(vals)) / 2:.2f}")
        print(f"| {name} | {' | '.join(cells)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "finetune.json").write_text(json.dumps({"steps": args.steps, "runs": records}, indent=1))


if __name__ == "__main__":
    main()
