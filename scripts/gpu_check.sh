#!/usr/bin/env bash
# The check to run whenever a CUDA machine is lent: set up the CUDA build of torch, run the tests that
# need CUDA, the encode and training benchmarks against open_clip (bf16, flash attention,
# torch.compile off and on, channels-last ResNets), print ONE JSON summary on stdout, and exit
# non-zero if anything failed, was skipped or fell back to the CPU. Details: scripts/gpu_check.py.
#
#   scripts/gpu_check.sh                      # make setup TORCH_SPEC=torch into .venv-gpu (+ open_clip), then check
#   scripts/gpu_check.sh --python python3     # use an interpreter that already has CUDA torch: no set-up
#   scripts/gpu_check.sh --dry-run            # no GPU needed: check the plan and print it (CI does this)
#   scripts/gpu_check.sh --only tests         # a part: tests, encode, train (comma-separated)
#
# Other options (--out-dir DIR, --budget-s S) go to scripts/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."

python="" venv=".venv-gpu" dry=0 pass=()
while (($#)); do
  case "$1" in
    --python) python="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    --dry-run) dry=1; pass+=("$1"); shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done

setup="make setup TORCH_SPEC=torch VENV=$venv && $venv/bin/python -m pip install -q open_clip_torch"
if [[ -n "$python" ]]; then
  setup=""  # the interpreter given already has what it needs
elif ((dry)); then
  python="$(command -v python3)"
else
  echo "gpu_check: set-up: $setup" >&2
  bash -c "$setup" >&2
  python="$venv/bin/python"
fi
exec "$python" scripts/gpu_check.py --python "$python" --setup "$setup" "${pass[@]}"
