#!/bin/bash
# Issue 24 on a GPU machine, one call (about 8 minutes), the 44M Qwen2 (768x6): an allocation failure at forward
# (clCreateBuffer -4 at the 224th buffer: the first after load on this model), a persistent enqueue failure
# (clEnqueueNDRangeKernel -5 from the 3000th launch) and the long-context GPU ratchet (a clean multi-turn run),
# each a soak run and then `soak repro` of its first root cause (the three in parallel); then each standalone
# MNN reproducer (repro/<cause>/mnn-reproducer/run.sh: llm_demo, or the C++ program built against MNN's
# headers) run by hand with the environment it names.  Run folders with repro/ come back as $OUT/repro-runs.tgz.
#   run(command="bash benchmarks/gpu/repro.sh", carry=[".devcarry"])             (after stage.sh here)
#   SMOKE=1 bash benchmarks/gpu/repro.sh                                          (a dry run on PoCL)
set -u
source benchmarks/gpu/env.sh
M=$D/qwen2-768x6/config.json; [ -n "${SMOKE:-}" ] && M=$R/soak/models/qwen2-tiny/config.json
RB=${REPRO_BUDGET:-150s}; RUNS=${REPRO_RUNS:-5}
O=$OUT/repro-runs; mkdir -p $O
W="--model $M --seed 1 --quiet --out $O"
timeout 150 python3 -m soak run $E $CL $W --iterations 2 --max-new-tokens 8 --run-id warm > /dev/null 2>&1; say "warm rc=$?"
say "three soak runs"
timeout 120 python3 -m soak run $E $CL $W --iterations 12 --duration 25s --max-new-tokens 64 --max-turns 8 \
  --cl-fault 'clCreateBuffer=-4@nth:224' --run-id nv-alloc-forward > $O/alloc.log 2>&1 &
timeout 120 python3 -m soak run $E $CL $W --iterations 5 --duration 20s --max-new-tokens 32 \
  --cl-fault 'clEnqueueNDRangeKernel=-5@from:3000' --run-id nv-enqueue-persistent > $O/enqueue.log 2>&1 &
timeout 150 python3 -m soak run $E $CL $W --iterations 40 --duration 60s --max-new-tokens 64 --max-turns 8 \
  --run-id nv-longctx > $O/longctx.log 2>&1 &
wait
for r in nv-alloc-forward nv-enqueue-persistent nv-longctx; do
  say "classify $r"; python3 -m soak classify $O/$r 2>&1 | sed -n 1,8p
done
say "soak repro x3 (budget $RB, $RUNS reliability runs each)"
declare -A CAUSE=([nv-longctx]="--cause soak-memory-ratchet")   # the others: classify's first row
for r in nv-alloc-forward nv-enqueue-persistent nv-longctx; do
  ( t=$(date +%s); timeout 330 python3 -m soak repro $O/$r ${CAUSE[$r]:-} --budget $RB --runs $RUNS --plugin $D/mnn/libMNN_CL.so \
      --engine-lib $D/libsoak_mnn_shim.so --quiet > $O/$r.repro.txt 2>&1; echo "rc=$? wall $(( $(date +%s) - t )) s" >> $O/$r.repro.txt ) &
done
wait
for r in nv-alloc-forward nv-enqueue-persistent nv-longctx; do
  say "repro of $r"; cat $O/$r.repro.txt | tail -25
  for md in $O/$r/repro/*/repro.md; do [ -f "$md" ] && sed -n 1,60p "$md"; done
  for sh in $O/$r/repro/*/mnn-reproducer/run.sh; do
    [ -f "$sh" ] || continue
    say "standalone reproducer $sh:"; cat "$sh"
    ( cd "$(dirname "$sh")" && timeout 120 sh ./run.sh > run.out 2>&1; echo "run.sh rc=$?" >> run.out )
    grep -a -E "CL ERROR|ERROR|error|rc=|repro\]|Segmentation|Abort" "$(dirname "$sh")/run.out" | head -20
    tail -c 1500 "$(dirname "$sh")/run.out"
  done
done
cd $OUT && tar czf repro-runs.tgz repro-runs && rm -rf repro-runs
say done
