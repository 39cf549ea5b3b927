#!/usr/bin/env bash
# Issue 20 in one call on a lent GPU machine: every check and measurement the issue lists, in order of
# value, each under its own time limit and all under one deadline, results and logs under $OUT.
#
# On this machine first:   bash benchmarks/gpu_bundle.sh        (wheels the GPU image lacks + MNIST -> .gpu/)
# Then one device call:    run(command="bash benchmarks/gpu_session.sh", carry=[".gpu"], timeout_s=600)
#   (about 9.5 minutes of a 15-minute lease, the machine's start included; what is left of the lease
#   fits a second call while the machine is warm: "STEPS=suite BUDGET_S=170 bash benchmarks/gpu_session.sh",
#   the whole test suite, whose CUDA tests the first call already ran as the step cuda_tests)
# Rehearsal on a CPU:      DEVICE=cpu BUDGET_S=900 OUT=/tmp/gpu_out bash benchmarks/gpu_session.sh
#
# The GPU image has its own python3 with torch (2.11 when last seen), but no Hydra: the wheels in
# .gpu/wheels go to /tmp/site. What comes back from $OUT is at most 8 files: session.log (every step's
# output), summary.md (one line per step: ok / FAILED / skipped, seconds), results_cuda.md,
# memory_cuda.md, tests.log and sweep.md. A step that fails does not stop the ones after it.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu_out}
BUDGET_S=${BUDGET_S:-570}            # the whole script; the device call's limit is 600 s
STEPS=${STEPS:-all}                  # or a comma list of step names: env,smoke,cuda_tests,...
PY=${PYTHON:-python3}
DATA=${DATA_ROOT:-$REPO/.gpu/datasets}   # the bundle's MNIST, or DATA_ROOT
RUNS=$(mktemp -d /tmp/aerun_gpu_runs.XXXXXX)
mkdir -p "$OUT"
LOG=$OUT/session.log
SUMMARY=$OUT/summary.md
START=$(date +%s)
DEADLINE=$(( START + BUDGET_S ))
export PYTHONUNBUFFERED=1 AERUN_DATA_ROOT=$DATA
echo "# GPU session $(date -u '+%Y-%m-%d %H:%M UTC'), DEVICE=$DEVICE, budget ${BUDGET_S} s" > "$SUMMARY"
echo "| step | result | s |" >> "$SUMMARY"
echo "| --- | --- | ---: |" >> "$SUMMARY"
: > "$LOG"

wanted() { [[ $STEPS == all || ,$STEPS, == *",$1,"* ]]; }

# step NAME LIMIT_S COMMAND...: run COMMAND with at most LIMIT_S seconds (less if the deadline is nearer),
# its output appended to session.log, its result to summary.md.
step() {
    local name=$1 limit=$2; shift 2
    wanted "$name" || return 0
    local left=$(( DEADLINE - $(date +%s) ))
    if (( left < 15 )); then
        echo "| $name | skipped: the session's budget was spent | 0 |" >> "$SUMMARY"
        return 0
    fi
    (( limit > left )) && limit=$left
    echo "===== $name (limit ${limit} s): $*" >> "$LOG"
    local t0=$(date +%s) rc
    # `timeout` runs programs, not shell functions: a child bash gets the functions exported below.
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >> "$LOG" 2>&1
    rc=$?
    local took=$(( $(date +%s) - t0 ))
    local result=ok
    (( rc == 124 || rc == 137 )) && result="FAILED: ran past ${limit} s"
    (( rc != 0 && rc != 124 && rc != 137 )) && result="FAILED: exit $rc"
    echo "===== $name: $result (${took} s)" >> "$LOG"
    echo "| $name | $result | $took |" >> "$SUMMARY"
    echo "$name: $result (${took} s)"
}

aerun() { "$PY" -m aerun "$@"; }
seconds_since() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); echo "$(( ms / 1000 )).$(( ms % 1000 / 100 ))"; }

# ---------------------------------------------------------------------------------------------- setup
setup() {
    if [[ -d .gpu/wheels ]] && ! "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .gpu/wheels/*.whl || return 1
    fi
    return 0
}
if ! setup >> "$LOG" 2>&1; then echo "| setup | FAILED: the wheels did not install | 0 |" >> "$SUMMARY"; fi
export PYTHONPATH=/tmp/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
[[ -d $DATA/MNIST/raw ]] || DATA=$REPO/../shared/datasets
export AERUN_DATA_ROOT=$DATA

env_info() {
    date -u; uname -a; nproc; free -g | head -2
    command -v nvidia-smi >/dev/null && nvidia-smi
    "$PY" - <<'EOF'
import platform, torch, torchvision, hydra, omegaconf
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "hydra", hydra.__version__, "omegaconf", omegaconf.__version__)
print("cuda available", torch.cuda.is_available(), "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(torch.cuda.get_device_name(0), f"{p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs,",
          "bf16", torch.cuda.is_bf16_supported())
EOF
}

# One smoke training per precision / compile setting the issue names, each checked for a finite test loss.
smoke() {
    local name=$1; shift
    aerun train debug=smoke data.root="$DATA" trainer.device="$DEVICE" hydra.run.dir="$RUNS/smoke_$name" "$@" || return 1
    "$PY" - "$RUNS/smoke_$name/metrics.json" <<'EOF'
import json, math, sys
m = json.load(open(sys.argv[1]))
test = {k: v for k, v in m["test"].items() if isinstance(v, (int, float))}
print("device", m["device"], "precision", m["precision"], "images/s", m["images_per_s"],
      "test", {k: round(v, 5) for k, v in test.items()})
assert test and all(math.isfinite(v) for v in test.values()), "a test metric is missing or not finite"
EOF
}

# `aerun evaluate` of RUN (in EVAL_DIR) measured the test MSE the training run recorded, within 2%.
same_test_mse() {
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
from pathlib import Path
run, evaluation = (Path(a) for a in sys.argv[1:])
trained = json.loads((run / "metrics.json").read_text())
evaluated = json.loads((evaluation / "evaluation.json").read_text())
a, b = trained["test"]["mse"], evaluated["reconstruction"]["mse"]
print(f"{run.name}: trained on {trained['device']}, test MSE {a:.6f}; evaluated on {evaluated['device']}: {b:.6f}")
assert abs(a - b) <= 0.02 * a, "the evaluation on the other device disagrees with the training run"
EOF
}

# A run trained on one device evaluates and resumes on the other; the GPU is hidden from the CPU side.
cross_device() {
    local on_gpu=$RUNS/trained_on_device on_cpu=$RUNS/trained_on_cpu  # distinct when DEVICE=cpu too
    aerun train debug=smoke data.root="$DATA" trainer.device="$DEVICE" hydra.run.dir="$on_gpu" || return 1
    CUDA_VISIBLE_DEVICES= aerun evaluate run="$on_gpu" device=cpu hydra.run.dir="$RUNS/eval_gpu_run_on_cpu" || return 1
    same_test_mse "$on_gpu" "$RUNS/eval_gpu_run_on_cpu" || return 1
    CUDA_VISIBLE_DEVICES= aerun train resume="$on_gpu" trainer.max_epochs=2 trainer.device=cpu || return 1
    CUDA_VISIBLE_DEVICES= aerun train debug=smoke data.root="$DATA" trainer.device=cpu hydra.run.dir="$on_cpu" || return 1
    aerun evaluate run="$on_cpu" device="$DEVICE" hydra.run.dir="$RUNS/eval_cpu_run_on_gpu" || return 1
    same_test_mse "$on_cpu" "$RUNS/eval_cpu_run_on_gpu" || return 1
    aerun train resume="$on_cpu" trainer.max_epochs=2 trainer.device="$DEVICE" || return 1
    "$PY" -c "import json, sys; [print(p, 'after resume: epochs', json.load(open(p + '/metrics.json'))['epochs'])
for p in sys.argv[1:]]" "$on_gpu" "$on_cpu"
}

# A 1-process torchrun with trainer.strategy=ddp: NCCL on a GPU (gloo on a CPU rehearsal).
ddp() {
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m aerun train debug=smoke trainer.strategy=ddp \
        data.root="$DATA" trainer.device="$DEVICE" hydra.run.dir="$RUNS/ddp" || return 1
    grep -h -i -E "nccl|gloo|backend" "$RUNS/ddp"/*.log 2>/dev/null | head -3
    test -f "$RUNS/ddp/metrics.json"
}

# 16 debug=smoke jobs on the one device: Hydra's basic launcher (one after another, one process) against
# joblib (8 worker processes sharing the GPU). Wall time of each whole sweep command.
sweep() {
    local report=$OUT/sweep.md t0 t1
    echo "| launcher | 16 debug=smoke jobs, whole command (s) |" > "$report"
    echo "| --- | ---: |" >> "$report"
    t0=$(date +%s%N)
    aerun train -m debug=smoke data.root="$DATA" trainer.device="$DEVICE" 'seed=range(16)' \
        hydra.sweep.dir="$RUNS/sweep_basic" || return 1
    echo "| basic | $(seconds_since "$t0") |" >> "$report"
    t0=$(date +%s%N)
    aerun train -m debug=smoke data.root="$DATA" trainer.device="$DEVICE" 'seed=range(16)' hydra/launcher=joblib \
        hydra.launcher.n_jobs=8 trainer.num_threads=2 hydra.sweep.dir="$RUNS/sweep_joblib" || return 1
    echo "| joblib, n_jobs=8, 2 threads each | $(seconds_since "$t0") |" >> "$report"
    cat "$report"
}

# Rows are set up in this order until the budget is spent: fp32 of every model first, compile last.
throughput() {
    local rows=(cnn_ae/fp32 linear_ae/fp32 vae/fp32 conv_vae/fp32 cnn_ae/channels_last
                cnn_ae/fp16 cnn_ae/bf16 linear_ae/fp16 linear_ae/bf16 vae/fp16 vae/bf16 conv_vae/fp16 conv_vae/bf16
                cnn_ae/compile linear_ae/compile vae/compile conv_vae/compile cnn_ae/bf16+compile
                process/aerun_1epoch process/tutorial_1epoch)
    [[ $DEVICE == cpu ]] && rows=(cnn_ae/fp32 vae/fp32 linear_ae/compile/b linear_ae/fp32/b process/aerun_help)
    "$PY" benchmarks/train_throughput.py --device "$DEVICE" --root "$DATA" --cache "$RUNS/tv_cache" \
        --rows "${rows[@]}" --steps "${THROUGHPUT_STEPS:-50}" --warmup 10 --repeats 3 --process-repeats 1 \
        --max-wait 0 --budget-s "$1" --output "$OUT/results_$DEVICE.md"
}

memory() {
    local max=$(( 2 ** 20 )); [[ $DEVICE == cpu ]] && max=1024
    "$PY" benchmarks/gpu_memory.py --device "$DEVICE" --root "$DATA" --max-batch "$max" --budget-s "$1" \
        --output "$OUT/memory_$DEVICE.md"
}

# The whole suite on this machine, CUDA tests included (they skip without a GPU).
suite() {
    local workers=$(( $(nproc) > 8 ? 8 : $(nproc) ))
    "$PY" -m pytest -q -n "$workers" -m "slow or not slow" -p no:cacheprovider -o cache_dir=/tmp/pytest_cache "$@" \
        2>&1 | tee "$OUT/tests.log" | tail -25
    return "${PIPESTATUS[0]}"
}

# ---------------------------------------------------------------------------------------------- steps
export REPO DEVICE OUT PY DATA RUNS
export -f aerun seconds_since env_info smoke same_test_mse cross_device ddp sweep throughput memory suite
# In order of value per second: an early failure must not cost the measurements after it.
step env 30 env_info
step smoke_fp32 60 smoke fp32
step cuda_tests 180 "$PY" -m pytest -q -n 8 -p no:cacheprovider -m "slow or not slow" -rs \
    tests/test_cuda.py tests/test_engine_sync.py tests/test_data.py tests/test_device_hygiene.py -k "cuda or sync or device"
if [[ $DEVICE == cuda ]]; then
    step smoke_16mixed 60 smoke 16mixed trainer.precision=16-mixed
    step smoke_bf16 60 smoke bf16 trainer.precision=bf16
    step smoke_compile 120 smoke compile trainer.compile=true
fi
step cross_device 120 cross_device
step ddp 90 ddp
step throughput 170 throughput 120
step memory 70 memory 50
step sweep 90 sweep
step suite 600 suite          # what is left of the budget; else a second call: STEPS=suite BUDGET_S=170

echo "| total | $(( $(date +%s) - START )) s | |" >> "$SUMMARY"
cat "$SUMMARY"
rm -rf "$RUNS" 2>/dev/null || true
