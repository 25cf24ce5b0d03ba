#!/usr/bin/env bash
# The GPU checks in one command, for a machine with one CUDA GPU and no network:
#   1. env        what ran: python, torch, CUDA device, inductor/triton, git commit, nvidia-smi
#   2. rules      every rule's forward/backward on CUDA under bf16 autocast and under
#                 torch.compile(backend="inductor"), gradients against eager fp32 (rules.md/json)
#   3. precision  pytest tests/test_precision.py (its CUDA case runs when CUDA is there)
#   4. contract   pytest tests/test_contract.py -k "compile or bf16" (CPU checks: aot_eager, CPU bf16)
#   5. speed      benchmarks/speed.py, every rule, ResNet-20 and the ViT, batch 256, synthetic
#                 inputs, on CUDA: time ratio, MAC ratio (arithmetic limit), peak memory
# Every step runs under its own time limit (the limits add up to under 8 minutes), writes its
# log into the output folder, and a failing step does not stop the others; summary.md lists
# each step's PASS/FAIL. Exit status: 0 all passed, 1 a step failed, 2 bad arguments / no CUDA.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--rules fa,dfa,...] [--backend inductor] [--python PY]
#   bash benchmarks/gpu_check.sh --dry-run [--out DIR]   # CPU, tiny sizes, 1 round: what CI runs
#
# --python (or $PYTHON): the interpreter (default .venv/bin/python, else python3); speed.py
# writes its results after each net, so a run cut short by its limit keeps ResNet-20's.
#
# --dry-run needs no CUDA: the rule checks run on the CPU with aot_eager (--backend inductor to
# try inductor there) for fa only, the contract selection for fa only, and speed.py --quick
# (tiny ResNet-20 and ViT, batch 8, 1 round, every rule, no memory subprocesses), one torch
# thread per process (OMP_NUM_THREADS=1 unless set).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
OUT=""
RULES=""
BACKEND=""
PY="${PYTHON:-}"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "gpu_check.sh: error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT="$2"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        --rules) [ $# -ge 2 ] || die "--rules needs a list"; RULES="$2"; shift ;;
        --rules=*) RULES="${1#--rules=}" ;;
        --backend) [ $# -ge 2 ] || die "--backend needs a name"; BACKEND="$2"; shift ;;
        --backend=*) BACKEND="${1#--backend=}" ;;
        --python) [ $# -ge 2 ] || die "--python needs a path"; PY="$2"; shift ;;
        --python=*) PY="${1#--python=}" ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

cd "$ROOT"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
command -v "$PY" >/dev/null 2>&1 || [ -x "$PY" ] || die "no python at '$PY' (set --python or PYTHON)"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

STAMP="$(date -u +%Y-%m-%d-%H%M)"
if [ "$DRY" = 1 ]; then
    MODE="dry-run (CPU, tiny sizes)"
    DEVICE=cpu
    BACKEND="${BACKEND:-aot_eager}"
    OUT="${OUT:-benchmarks/results/gpu/dry-run-$STAMP}"
    CHECK_RULES="${RULES:-fa}"
    SPEED_RULES="$RULES"
    CONTRACT_SEL=("tests/test_contract.py::test_contract[fa-compile]" "tests/test_contract.py::test_contract[fa-bf16_autocast]")
    SPEED_ARGS=(--quick --rounds 1 --warmup 1 --batch 8 --no-memory --device cpu)
    # one thread per process: on a shared CPU, torch's threads wait on each other when another
    # job is busy (steps 20× slower), which would break the time limits below
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    LIMIT_ENV=30; LIMIT_RULES=60; LIMIT_PRECISION=60; LIMIT_CONTRACT=60; LIMIT_SPEED=90
else
    MODE="full (CUDA)"
    DEVICE=cuda
    BACKEND="${BACKEND:-inductor}"
    OUT="${OUT:-benchmarks/results/gpu/$STAMP}"
    CHECK_RULES="$RULES"
    SPEED_RULES="$RULES"
    CONTRACT_SEL=(tests/test_contract.py -k "compile or bf16")
    SPEED_ARGS=(--batch 256 --rounds 10 --memory-jobs 4 --device cuda)
    # 20 + 190 + 40 + 60 + 160 = 470 s at most: under 8 minutes even if every step runs to its limit
    LIMIT_ENV=20; LIMIT_RULES=190; LIMIT_PRECISION=40; LIMIT_CONTRACT=60; LIMIT_SPEED=160
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || die "no CUDA device visible to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?')); on a CPU run --dry-run"
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.md"
ROWS=()
FAILED=0
STARTED=$SECONDS

# run_step NAME LIMIT_S OUTPUTS COMMAND...: COMMAND's output into NAME.log, its verdict into ROWS
run_step() {
    local name="$1" limit="$2" outputs="$3" rc=0 t0=$SECONDS verdict
    shift 3
    echo "== $name (limit ${limit} s): $*"
    { printf '$'; printf ' %q' "$@"; printf '\n'; } >"$OUT/$name.log"
    timeout --kill-after=10 "$limit" "$@" >>"$OUT/$name.log" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then
        verdict=PASS
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        verdict="FAIL (over its ${limit} s limit)"; FAILED=$((FAILED + 1))
    else
        verdict="FAIL (exit $rc)"; FAILED=$((FAILED + 1))
    fi
    ROWS+=("| $name | $verdict | $((SECONDS - t0)) | $limit | \`$name.log\`${outputs:+, $outputs} |")
    echo "   $verdict ($((SECONDS - t0)) s)"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
}

# ---------------------------------------------------------------------------- 1. environment
cat >"$OUT/env.py" <<'PY'
import os, platform, sys
import torch
print("python", sys.version.split()[0], sys.executable)
print("platform", platform.platform())
print("torch", torch.__version__, "cuda build", torch.version.cuda)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(),
          "count", torch.cuda.device_count())
    print("bf16 supported", torch.cuda.is_bf16_supported())
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton not installed (inductor cannot compile for CUDA)")
try:
    import torch._inductor  # noqa: F401
    print("inductor importable")
except Exception as exc:
    print("inductor not importable:", type(exc).__name__, exc)
import alignlab
print("alignlab", getattr(alignlab, "__version__", "?"), os.path.dirname(alignlab.__file__))
print("rules", ",".join(alignlab.rules.available()))
print("cpu count", os.cpu_count(), "torch threads", torch.get_num_threads())
import shutil, subprocess
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
commit = run("git", "rev-parse", "HEAD") or "unknown (no git)"
changed = len(run("git", "status", "--porcelain").splitlines()) if commit[0] != "u" else "?"
print("git commit", commit, f"({changed} changed files)")
print(run("nvidia-smi") if shutil.which("nvidia-smi") else "no nvidia-smi")
PY
run_step env "$LIMIT_ENV" "" "$PY" "$OUT/env.py"

# ---------------------------------------------------------------------------- 2. rules on the device
run_step rules "$LIMIT_RULES" "\`rules.md\`, \`rules.json\`" \
    "$PY" benchmarks/gpu_rules.py --device "$DEVICE" --backend "$BACKEND" --rules "$CHECK_RULES" --out "$OUT"

# ---------------------------------------------------------------------------- 3-4. pytest selections
run_step precision "$LIMIT_PRECISION" "\`precision.xml\`" \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_precision.py -rA --junitxml "$OUT/precision.xml"
run_step contract "$LIMIT_CONTRACT" "\`contract.xml\`" \
    "$PY" -m pytest -q -p no:cacheprovider "${CONTRACT_SEL[@]}" -rA --junitxml "$OUT/contract.xml"

# ---------------------------------------------------------------------------- 5. speed
SPEED_CMD=("$PY" benchmarks/speed.py --nets resnet20,vit "${SPEED_ARGS[@]}" --out-dir "$OUT/speed")
if [ -n "$SPEED_RULES" ]; then SPEED_CMD+=(--rules "$SPEED_RULES"); fi
run_step speed "$LIMIT_SPEED" "\`speed/\`" "${SPEED_CMD[@]}"

# ---------------------------------------------------------------------------- summary
TOTAL=$((SECONDS - STARTED))
{
    echo "# gpu_check.sh: $([ "$FAILED" = 0 ] && echo PASS || echo FAIL)"
    echo
    echo "Mode: $MODE; device $DEVICE; compile backend $BACKEND; $(date -u '+%Y-%m-%d %H:%M UTC'); $(hostname); ${TOTAL} s in all."
    echo "Environment: \`env.log\` ($(grep -m1 '^torch ' "$OUT/env.log" 2>/dev/null || echo 'torch ?')$(grep -m1 '^device ' "$OUT/env.log" 2>/dev/null | sed 's/^/; /' || true))."
    echo
    echo "| step | result | seconds | limit s | output |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    if [ "$FAILED" = 0 ]; then
        echo "Overall: PASS (${#ROWS[@]} of ${#ROWS[@]} steps passed)"
    else
        echo "Overall: FAIL ($FAILED of ${#ROWS[@]} steps failed)"
    fi
    if [ -f "$OUT/rules.md" ]; then
        echo
        echo "## Rule checks (rules.md)"
        echo
        cat "$OUT/rules.md"
    fi
    for md in "$OUT"/speed/speed*.md; do
        [ -f "$md" ] || continue
        echo
        echo "## Speed ($(basename "$md"): time ratio, MAC ratio = arithmetic limit)"
        echo
        sed -n '/^### /,$p' "$md"
    done
} >"$SUMMARY"
echo "wrote $SUMMARY (${TOTAL} s): $([ "$FAILED" = 0 ] && echo "all ${#ROWS[@]} steps passed" || echo "$FAILED of ${#ROWS[@]} steps failed")"
[ "$FAILED" = 0 ]
