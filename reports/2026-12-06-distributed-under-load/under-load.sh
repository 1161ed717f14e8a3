#!/usr/bin/env bash
# The 2-rank FSDP2 tests, repeated under load: does `make test` hold on a machine that runs other jobs?
#
#   reports/2026-12-06-distributed-under-load/under-load.sh [N] [ENV]     # N repetitions (default 5) in build/envs/ENV (default patched)
#
# Load, for the whole run: two CPU hogs (`yes > /dev/null`) and a concurrent torchrun job (2 gloo ranks doing
# all-reduces, started again as soon as it ends). Each repetition runs transformers/0002's
# test_fsdp2_training_matches_single_process (vendor/transformers, as `make apply` left it) and the accelerate guard
# test_meta_parameters_train_like_one_process, each one pytest process starting one torchrun job. It prints one line per
# test and run, then the totals; exit 1 when any run failed or aborted (a rank's `terminate called without an active
# exception`, SIGABRT). Needs `make apply` and the test environments of `make test`. Minutes per repetition on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/../.."
N=${1:-5}
ENV=${2:-patched}
PY=$PWD/build/envs/$ENV/bin/python
TEST=vendor/transformers/tests/fsdp/test_fsdp_cpu_ram_efficient_loading.py
GUARD=tools/headroom/proof/upstream_data/guards/accelerate/test_headroom_fsdp2_meta_parameters.py
for f in "$PY" "$TEST" "$GUARD"; do
  [ -e "$f" ] || { echo "missing $f: run make apply build test first" >&2; exit 2; }
done
WORK=$(mktemp -d)
echo "[pytest]" > "$WORK/pytest.ini"
mkdir -p "$WORK/src" "$WORK/tests/fsdp"  # TestCasePlus finds the repository root by its src/ and tests/
cp "$TEST" "$WORK/tests/fsdp/"
cp "$GUARD" "$WORK/"
cat > "$WORK/concurrent_job.py" <<'EOF'
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1 << 18)
for _ in range(200):
    dist.all_reduce(t)
    torch.randn(256, 256) @ torch.randn(256, 256)
dist.barrier()
dist.destroy_process_group()
EOF

# The load, in a process group of its own: stopped as a whole at the end
setsid bash -c "yes > /dev/null & yes > /dev/null &
  while true; do OMP_NUM_THREADS=1 '$PY' -m torch.distributed.run --standalone --nproc-per-node=2 '$WORK/concurrent_job.py' >/dev/null 2>&1; done" &
LOAD=$!
trap 'kill -- -$LOAD 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 2

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_ENDPOINT=http://127.0.0.1:9 USE_HUB_KERNELS=NO PYTHONPATH= \
  TOKENIZERS_PARALLELISM=false
runs=0 bad=0 aborts=0
for i in $(seq 1 "$N"); do
  for t in "tests/fsdp/$(basename "$TEST")::FSDPCpuRamEfficientLoadingTest::test_fsdp2_training_matches_single_process" \
           "$(basename "$GUARD")::FSDP2MetaParametersTrainingTest::test_meta_parameters_train_like_one_process"; do
    log="$WORK/run-$i-$(basename "${t%%.py*}").log"
    start=$SECONDS
    (cd "$WORK" && "$PY" -m pytest -p no:cacheprovider -c pytest.ini -q "$t") > "$log" 2>&1
    rc=$?
    abort=$(grep -c "terminate called\|SIGABRT" "$log")
    runs=$((runs + 1)); [ "$rc" -ne 0 ] && bad=$((bad + 1)); [ "$abort" -ne 0 ] && aborts=$((aborts + 1))
    echo "run $i ${t##*::}: exit $rc, $((SECONDS - start)) s, abort lines $abort, load average $(cut -d' ' -f1 /proc/loadavg)"
    [ "$rc" -ne 0 ] && tail -40 "$log"
  done
done
echo "$runs runs: $bad failed, $aborts with an abort"
[ "$bad" -eq 0 ]
