"""Learning benchmark: how much a training recipe learns from a few thousand real image-text pairs.

    PYTHONPATH=src python benchmarks/bench_learning.py --budget-steps 150 \
        [--configs default,sample-captions,...] [--seeds 0,1] [--open-clip] [--calibrate]

Data: emoji in three art styles for training, a fourth style (openmoji) held out entirely
(``learning_data.py``; packages only). Model: ``learning_model.json`` (ViT 32 px / patch 8, three
layers per tower, width 128). Every configuration of ``learning_configs.json`` is trained through
``clipforge train`` (its CLI flags; the commands are recorded) with each pinned seed, then evaluated
on the held-out style with clipforge's own eval code: text->image and image->text R@1/R@5 over all
its captions (:func:`clipforge.eval.dataset_eval.retrieval_dataset`) and zero-shot top-1 on the emoji
group (9 classes) and subgroup (~100) with the prompts of ``learning_prompts.txt``
(:func:`~clipforge.eval.dataset_eval.zeroshot_dataset`).

Equal wall-clock without trusting the clock of a shared machine: ``--budget-steps`` is the step
count of the default configuration; ``--calibrate`` times a few steps of each configuration whose
step cost differs from the default's (augmentation, SimCLR, patch dropout, EMA): each round trains
it and the default **side by side** (same moment, same outside load, one thread each) for
``CALIBRATE_STEPS`` steps and compares their median steps/s after warm-up; each configuration
then trains ``budget * t_default / t_config`` steps (median over rounds; the ratios are saved in
the results and reused). Configurations that only change which
caption or target a step sees cost the same per step by construction and get the budget as is.
``--open-clip`` trains open_clip's own trainer (``open_clip_train``, reference environment
``--ref-python``) on the same rows, architecture and step count as the default.

Results accumulate in ``docs/bench/learning.json`` (one record per run; a rerun replaces its
record); ``docs/bench/learning.md`` (mean +- spread over seeds, spread = half the range) and
``learning.png`` are rewritten from it after every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from clipforge.api import load
from clipforge.convert.sources import import_model
from clipforge.data.transforms import image_transform
from clipforge.eval.dataset_eval import retrieval_dataset, zeroshot_dataset
from clipforge.eval.datasets import labelled_csv
from clipforge.eval.prompts import load_templates
from clipforge.tokenizer import get_tokenizer
from clipforge.train.config import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from learning_data import PROMPTS, build  # noqa: E402  (the benchmark's data builder, beside this file)

HERE = Path(__file__).parent
ROOT = HERE.parent
MODEL = HERE / "learning_model.json"
CONFIGS = HERE / "learning_configs.json"
OUT = ROOT / "docs" / "bench"
OPEN_CLIP_NAME = "learnbench-tiny"
METRICS = (
    ("t2i_R@1", "text_to_image_R@1"),
    ("t2i_R@5", "text_to_image_R@5"),
    ("i2t_R@1", "image_to_text_R@1"),
    ("i2t_R@5", "image_to_text_R@5"),
)


def open_clip_config() -> dict:
    """``learning_model.json`` in open_clip's config schema (same architecture)."""
    cfg = json.loads(MODEL.read_text())
    v, t = cfg["vision"], cfg["text"]
    return {
        "embed_dim": cfg["embed_dim"],
        "vision_cfg": {
            "image_size": v["image_size"],
            "layers": v["layers"],
            "width": v["width"],
            "patch_size": v["patch_size"],
            "head_width": v["head_width"],
        },
        "text_cfg": {
            "context_length": t["context_length"],
            "vocab_size": t["vocab_size"],
            "width": t["width"],
            "heads": t["width"] // t["head_width"],
            "layers": t["layers"],
        },
    }


# ---- training ----------------------------------------------------------------------------------
def clipforge_command(data: Path, work: Path, flags: list[str], *, name: str, seed: int, steps: int) -> list[str]:
    """The ``clipforge train`` command of one run. Each configuration has its own uint8 cache folder
    (a folder holds one cache; concurrent runs of other configurations would replace it)."""
    spec = json.loads(CONFIGS.read_text())
    warmup = max(1, round(steps * spec["warmup_share"]))
    return [
        sys.executable, "-m", "clipforge", "train",
        "--data", str(data / "train_flat.csv"), "--model", str(MODEL),
        "--steps", str(steps), "--warmup-steps", str(warmup), "--seed", str(seed),
        *spec["common"],
        "--cache", str(work / "cache" / name.rsplit("-", 1)[0].removeprefix("cal-")),
        "--out", str(work / "runs"), "--name", name,
        "--save-every", "1000000", "--log-every", "5", "--no-progress",
        *flags,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    """The runs' environment: clipforge from this checkout, and ONE intra-op thread per run (on a
    shared, oversubscribed 2-core machine two OpenMP threads per process were measured 4.5x slower
    than one: 5.3 vs 1.2 s per step of this benchmark's model at a load average of 9)."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_logged(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output in ``log``; returns the wall-clock seconds. Fails loudly."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(), cwd=log.parent)
    if done.returncode:
        tail = log.read_text(errors="replace")[-1500:]
        sys.exit(f"bench_learning: command failed ({done.returncode}), see {log}:\n{tail}")
    return time.perf_counter() - t0


CALIBRATE_STEPS = 80  # per calibration run; steps after the first 15 are timed


def step_rate(run: Path, *, after: int = 15) -> float:
    """Median steps/s of a clipforge run's logged intervals after step ``after`` (its metrics.jsonl)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r and r["step"] > after]
    batch = TrainConfig.from_json(run / "run.json").schedule.batch_size  # run.json: nested, or flat (older runs)
    return statistics.median(rates) / batch


def calibrate(data: Path, work: Path, names: list[str], configs: dict[str, list[str]], *, rounds: int = 2) -> dict:
    """Steps/s of each configuration over the default's, the two trained side by side so that both
    see the same load (a shared machine's pace drifts 2-4x within minutes); median of ``rounds``."""
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names:
            with ThreadPoolExecutor(2) as pool:
                base, rate = pool.map(
                    lambda job: _time_config(data, work, *job), [([], f"cal-default-{r}"), (configs[n], f"cal-{n}-{r}")]
                )
            ratios[n].append(rate / base)
            print(f"calibrate {n}: round {r}: {ratios[n][-1]:.3f} x the default's steps/s", flush=True)
    return {n: statistics.median(v) for n, v in ratios.items()}


def _time_config(data: Path, work: Path, flags: list[str], name: str) -> float:
    """Median steps/s of a ``CALIBRATE_STEPS``-step run after its first 15 steps."""
    cmd = clipforge_command(data, work, flags, name=name, seed=0, steps=CALIBRATE_STEPS)
    shutil.rmtree(work / "runs" / name, ignore_errors=True)
    run_logged(cmd, work / "logs" / f"{name}.log")
    return step_rate(work / "runs" / name)


def open_clip_run(data: Path, work: Path, *, ref_python: str, seed: int, steps: int) -> tuple[Path, float, list[str]]:
    """open_clip_train on the same rows (train_flat.csv, reshuffled and wrapped to ``steps`` full
    batches, one epoch), same architecture and optimiser settings; returns its checkpoint."""
    spec = json.loads(CONFIGS.read_text())
    common = dict(zip(spec["common"][::2], spec["common"][1::2], strict=True))
    batch = int(common["--batch-size"])
    with open(data / "train_flat.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rng, order = random.Random(seed), []
    while len(order) < steps * batch:
        shuffled = list(range(len(rows)))
        rng.shuffle(shuffled)
        order += shuffled
    name = f"open_clip-s{seed}"
    work.mkdir(parents=True, exist_ok=True)
    rows_csv = work / f"{name}.csv"
    with open(rows_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        w.writerows([str(data / rows[i]["filepath"]), rows[i]["title"]] for i in order[: steps * batch])
    cfg_dir = work / "open_clip_configs"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / f"{OPEN_CLIP_NAME}.json").write_text(json.dumps(open_clip_config()))
    launcher = (
        "import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
        "from open_clip_train.main import main; main(sys.argv[2:])"
    )
    logs = work / "open_clip_logs"
    warmup = max(1, round(steps * spec["warmup_share"]))
    cmd = [
        ref_python, "-c", launcher, str(cfg_dir),
        "--train-data", str(rows_csv), "--dataset-type", "csv", "--csv-separator", ",",
        "--csv-img-key", "filepath", "--csv-caption-key", "title",
        "--model", OPEN_CLIP_NAME, "--batch-size", str(batch), "--epochs", "1",
        "--lr", common["--lr"], "--wd", common["--weight-decay"], "--warmup", str(warmup),
        "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--grad-clip-norm", "1.0",
        "--precision", common["--precision"], "--workers", common["--workers"], "--device", "cpu",
        "--seed", str(seed), "--logs", str(logs), "--name", name, "--save-frequency", "1", "--log-every-n-steps", "5",
    ]  # fmt: skip
    shutil.rmtree(logs / name, ignore_errors=True)
    wall = run_logged(cmd, work / "logs" / f"{name}.log")
    return logs / name / "checkpoints" / "epoch_1.pt", wall, cmd


# ---- evaluation --------------------------------------------------------------------------------
def evaluate(model, tokenizer, transform, data: Path) -> dict[str, float]:
    """Held-out (openmoji) retrieval and zero-shot, in percent."""
    model = model.float().eval()
    with torch.inference_mode():
        ret = retrieval_dataset(
            model, tokenizer, transform, data / "heldout.jsonl", caption_key="captions", progress=False
        )
        out = {short: 100 * ret.metrics[key] for short, key in METRICS}
        templates = load_templates(PROMPTS)
        for task in ("group", "subgroup"):
            rep = zeroshot_dataset(
                model, tokenizer, transform, labelled_csv(data / f"heldout_{task}.csv"), templates, progress=False
            )
            out[f"zs_{task}_top1"] = 100 * rep.accuracy["top1"]
    return out


def evaluate_clipforge(run: Path, data: Path) -> dict[str, float]:
    loaded = load(run / "model.safetensors", device="cpu", precision="fp32", progress=False)
    return evaluate(loaded.model, loaded.tokenizer, loaded.transform, data)


def evaluate_open_clip(checkpoint: Path, data: Path, work: Path) -> dict[str, float]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    plain = checkpoint.with_name("plain.pt")
    torch.save(state, plain)
    imported = import_model(plain, format="open_clip", model=MODEL)
    cfg = imported.model.config
    context = cfg.text.context_length
    transform = image_transform(cfg.preprocess, cfg.vision.image_size, train=False)
    return evaluate(imported.model, get_tokenizer("openai", context_length=context), transform, data)


# ---- reporting ---------------------------------------------------------------------------------
def summarise(records: list[dict]) -> list[dict]:
    """One row per configuration: mean and spread (half the range) of each metric over its seeds."""
    keys = [k for k, _ in METRICS] + ["zs_group_top1", "zs_subgroup_top1", "train_s"]
    rows = []
    for config in dict.fromkeys(r["config"] for r in records):
        runs = sorted((r for r in records if r["config"] == config), key=lambda r: r["seed"])
        row = {"config": config, "seeds": [r["seed"] for r in runs], "steps": runs[0]["steps"]}
        for k in keys:
            vals = [r["metrics"][k] if k in r["metrics"] else r[k] for r in runs]
            row[k] = (statistics.fmean(vals), (max(vals) - min(vals)) / 2)
        row["command"] = runs[0]["command"]
        rows.append(row)
    return rows


def write_report(results: dict, out: Path) -> None:
    rows = summarise(results["runs"])
    lines = [
        "# Learning benchmark (held-out openmoji style)",
        "",
        f"Generated by `benchmarks/bench_learning.py`; {results['machine']}. Mean +- spread (half the",
        "range) over the seeds; all metrics in percent on the held-out style (never trained on):",
        "retrieval over all its captions, zero-shot top-1 on emoji group (9) and subgroup classes.",
        f"Budget: {results['budget_steps']} steps of the default configuration; equal wall-clock",
        "via measured step-time ratios (`calibration`). Chance: t2i R@5 0.26 % (5 of 1,914 images);",
        "zero-shot group 11.1 % uniform / 20.3 % majority class, subgroup 1.0 % / 13.5 %. The wall-clock",
        "column is each run's own time on a machine shared with other jobs (1-5 of these runs at once",
        "and a varying outside load): it is not what equalises the rows, the step counts are.",
        "",
        "| configuration | steps | t2i R@1 | t2i R@5 | i2t R@1 | i2t R@5 | zero-shot group | zero-shot subgroup "
        "| train wall-clock s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{r[k][0]:.1f} ± {r[k][1]:.1f}" for k in [k for k, _ in METRICS] + ["zs_group_top1", "zs_subgroup_top1"]
        ]
        lines.append(
            f"| {r['config']} (seeds {','.join(map(str, r['seeds']))}) | {r['steps']} | {' | '.join(cells)} "
            f"| {r['train_s'][0]:.0f} |"
        )
    lines += ["", "Commands (seed 0; the other seeds change `--seed`/`--name`):", ""]
    lines += [f"- {r['config']}: `{r['command']}`" for r in rows]
    if results.get("calibration"):
        lines += ["", "Calibration (steps/s relative to the default, median of rounds): "]
        lines += [f"- {k}: {v:.3f}" for k, v in results["calibration"].items()]
    (out / "learning.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "learning.png")


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench_learning: matplotlib not installed (pip install 'clipforge[plot]'); no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    names = [r["config"] for r in rows]
    means = [r["t2i_R@5"][0] for r in rows]
    errs = [r["t2i_R@5"][1] for r in rows]
    ax.barh(names, means, xerr=errs, color="#4c78a8")
    ax.invert_yaxis()
    ax.set_xlabel("held-out text->image R@5 (%)  (mean, error bar = half range over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(cmd: list[str], work: Path) -> str:
    text = " ".join(cmd).replace(sys.executable, "python").replace(str(work), "$WORK").replace(str(ROOT) + "/", "")
    return text.replace(str(Path.home() / ".cache/clipforge/learning-data"), "$DATA")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-steps", type=int, required=True, help="steps of the default configuration")
    ap.add_argument("--configs", default="default", help="comma-separated names from learning_configs.json")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the file's)")
    ap.add_argument("--open-clip", action="store_true", help="also train open_clip_train (the default's steps)")
    ap.add_argument("--ref-python", default="/work/venv-ref/bin/python", help="the reference env's python")
    ap.add_argument("--calibrate", action="store_true", help="(re)measure step-time ratios first")
    ap.add_argument("--calibrate-rounds", type=int, default=2, help="alternating rounds (median ratio)")
    ap.add_argument("--calibrate-only", action="store_true", help="with --calibrate: stop after it")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each uses one thread)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/clipforge-learnbench"), help="runs and logs")
    ap.add_argument("--out", type=Path, default=OUT, help="where learning.json/.md/.png go")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the evaluations, like the runs (see _env)

    spec = json.loads(CONFIGS.read_text())
    configs = spec["configs"]
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in configs]
    if unknown:
        sys.exit(f"bench_learning: --configs: unknown {unknown}; {CONFIGS} has {', '.join(configs)}")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else spec["seeds"]
    data = build()
    results_path = args.out / "learning.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": [], "calibration": {}}
    results["budget_steps"] = args.budget_steps
    results["machine"] = f"{os.cpu_count()} CPU cores (shared), torch {torch.__version__}, fp32"
    calibration_path = args.out / "learning_calibration.json"
    if args.calibrate:
        costly = [n for n in names if n != "default" and spec.get("cost_changing", {}).get(n)]
        measured = calibrate(data, args.work, costly, configs, rounds=args.calibrate_rounds)
        known = json.loads(calibration_path.read_text()) if calibration_path.is_file() else {}
        args.out.mkdir(parents=True, exist_ok=True)
        calibration_path.write_text(json.dumps({**known, **measured}, indent=1))
        if args.calibrate_only:
            return
    results["calibration"] = json.loads(calibration_path.read_text()) if calibration_path.is_file() else {}
    todo = [(n, s) for n in names for s in seeds] + ([("open_clip", s) for s in seeds] if args.open_clip else [])
    lock = threading.Lock()
    mine: dict[tuple[str, int], dict] = {}

    def one(job: tuple[str, int]) -> None:
        name, seed = job
        steps = round(args.budget_steps * results["calibration"].get(name, 1.0))
        if name == "open_clip":
            ckpt, wall, cmd = open_clip_run(data, args.work, ref_python=args.ref_python, seed=seed, steps=steps)
            metrics = evaluate_open_clip(ckpt, data, args.work)
        else:
            run = f"{name}-s{seed}"
            cmd = clipforge_command(data, args.work, configs[name], name=run, seed=seed, steps=steps)
            shutil.rmtree(args.work / "runs" / run, ignore_errors=True)
            wall = run_logged(cmd, args.work / "logs" / f"{run}.log")
            metrics = evaluate_clipforge(args.work / "runs" / run, data)
        record = {
            "config": name, "seed": seed, "steps": steps, "train_s": wall,
            "metrics": metrics, "command": _short(cmd, args.work),
        }  # fmt: skip
        print(json.dumps(record), flush=True)
        with lock:  # merge with what other invocations wrote meanwhile: this one's records win
            mine[(name, seed)] = record
            on_disk = json.loads(results_path.read_text())["runs"] if results_path.is_file() else []
            results["runs"] = [r for r in on_disk if (r["config"], r["seed"]) not in mine] + list(mine.values())
            args.out.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=1))
            write_report(results, args.out)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, todo))


if __name__ == "__main__":
    main()
