#!/bin/bash
# Issues 27 and 25 on a GPU machine, one call (about 9 minutes): what a timed launch costs on this driver, each
# way (native/interposer/testprog/queue_cost.c: plain queue, profiling queue, events, twin queue), then what the
# interposer and --cl-profile cost against no interposer on real MNN, five interleaved runs per arm
# (benchmarks/bench_cl_profile.py), on a model whose decode runs >= 1,000 tok/s (the committed tiny Qwen2 on an
# H100; MODELS=61m adds the 61M 896x4 GQA one) and on the 44M one (768x6, MHA); with an every-launch arm in each
# round: sampled vs every-launch kernel totals and closure per phase.
#   run(command="bash benchmarks/gpu/profile_cost.sh", carry=[".devcarry"])      (after stage.sh here)
#   SMOKE=1 bash benchmarks/gpu/profile_cost.sh                                   (a dry run on PoCL)
#   KEEP=1: each run's events.jsonl back in runs-<models>.tgz (cl_profile records: host time per entry point)
set -u
source benchmarks/gpu/env.sh
REPEAT=${REPEAT:-5}; ITER=${ITER:-15}; NEW=${NEW:-64}; BOX=${BOX:-180}
ARMS=${ARMS:-direct,interposer,profile,profile-twin,profile-all}
declare -A PATHS=([tiny]=$R/soak/models/qwen2-tiny/config.json [44m]=$D/qwen2-768x6/config.json
                  [61m]=$MODELS/qwen2-896x4/config.json)
LIST=${MODELS_RUN:-tiny 44m}
if [ -z "${SMOKE:-}" ] && [ "${QUEUE_COST:-1}" = 1 ]; then
  say "queue_cost (no soak): the driver's own cost of each way to time a launch"
  for sz in 1024 65536; do
    CL_WORKLOAD_LIB=$D/libOpenCL.so.1 timeout 60 $D/bin/queue_cost --launches 4000 --steps 5 --rounds 5 --every 32 \
      --size $sz 2>&1 | tee -a $OUT/queue_cost.txt
  done
fi
if [ -z "${SMOKE:-}" ]; then
  BCL="--cl-real-lib $D/libOpenCL.so.1 --direct-lib-dir /tmp/soak-ocl --thread-num 68"
else
  ARMS=$(echo $ARMS | sed 's/direct,//'); BCL="--cl-gpu-override --thread-num 65"
  for m in $LIST; do PATHS[$m]=$R/soak/models/qwen2-tiny/config.json; done
fi
case " $LIST " in *" 61m "*) unpack qwen2-896x4 $D/models/qwen2-896x4.tar.zst;; esac
for m in $LIST; do   # kernel builds and tuning into the shared cache, so every arm loads warm
  timeout 240 python3 -m soak run $E $CL --model ${PATHS[$m]} --iterations 2 --max-new-tokens 8 --quiet \
    --out /tmp/soak-warm --run-id warm-$RANDOM > /dev/null 2>&1; say "warm $m rc=$?"
done
for m in $LIST; do
  say "bench $m ($(left) s left)"
  python3 benchmarks/bench_cl_profile.py --engine lib --engine-lib $D/libsoak_mnn_shim.so --plugin $D/mnn/libMNN_CL.so \
    --model ${PATHS[$m]} $BCL --tmp-path $CLCACHE --iterations $ITER --max-new-tokens $NEW --repeat $REPEAT \
    --time-box $BOX --arms $ARMS ${KEEP:+--keep-runs /tmp/soak-keep/$m} 2>&1 | tee $OUT/bench-$m.txt
done
[ -n "${KEEP:-}" ] && tar czf $OUT/runs-${LIST// /-}.tgz -C /tmp/soak-keep .   # KEEP=1: each run's events.jsonl
say done
