#!/bin/bash
# repeat.sh N P EXIT: N 2-rank jobs of held_process_group.py (HOLD=1: the process group outlives destroy_process_group, as under FSDP2), P at a time
N=$1; P=$2; EXIT=$3; OUT=${OUT:-/tmp/held-exit-$EXIT}; mkdir -p $OUT; rm -f $OUT/*
run() { HOLD=1 EXIT=$EXIT OMP_NUM_THREADS=1 timeout 300 ${PY:-build/envs/pristine/bin/python} -m torch.distributed.run --standalone --nproc-per-node=2 "$(dirname "$0")"/held_process_group.py > $OUT/$1.log 2>&1; echo $? > $OUT/$1.rc; }
for i in $(seq 1 $N); do run $i & if (( i % P == 0 )); then wait; fi; done; wait
echo "HOLD=1 EXIT=$EXIT runs=$(ls $OUT/*.rc | wc -l) failed=$(grep -L '^0$' $OUT/*.rc | wc -l) terminate=$(grep -l 'terminate called' $OUT/*.log | wc -l)"
