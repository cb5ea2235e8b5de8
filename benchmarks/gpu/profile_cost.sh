#!/bin/bash
# Issues 27 and 25 on a GPU machine, one call (about 9 minutes): what the interposer and --cl-profile cost
# against no interposer, on a model whose decode runs >= 1,000 tok/s (61M Qwen2, 896x4, GQA 14/2 heads) and on
# the 44M one (768x6, MHA), five interleaved runs per arm (benchmarks/bench_cl_profile.py), and with an
# every-launch arm in each round: sampled vs every-launch kernel totals and closure per phase.
#   run(command="bash benchmarks/gpu/profile_cost.sh", carry=[".devcarry"])      (after stage.sh here)
#   SMOKE=1 bash benchmarks/gpu/profile_cost.sh                                   (a dry run on PoCL)
set -u
source benchmarks/gpu/env.sh
unpack qwen2-896x4 $D/models/qwen2-896x4.tar.zst
REPEAT=${REPEAT:-5}; ITER=${ITER:-15}; NEW=${NEW:-64}; BOX=${BOX:-180}
M61=$MODELS/qwen2-896x4/config.json; M44=$D/qwen2-768x6/config.json
[ -n "${SMOKE:-}" ] && { M61=$R/soak/models/qwen2-tiny/config.json; M44=$M61; }
for m in $M61 $M44; do   # kernel builds and tuning into the shared cache, so every arm loads warm
  timeout 240 python3 -m soak run $E $CL --model $m --iterations 2 --max-new-tokens 8 --quiet --out /tmp/soak-warm \
    --run-id warm-$RANDOM > /dev/null 2>&1; say "warm $m rc=$?"
done
if [ -z "${SMOKE:-}" ]; then ARMS=direct,interposer,profile,profile-all
  BCL="--cl-real-lib $D/libOpenCL.so.1 --direct-lib-dir /tmp/soak-ocl --thread-num 68"
else ARMS=interposer,profile,profile-all; BCL="--cl-gpu-override --thread-num 65"; fi
for m in $M61 $M44; do
  say "bench $m ($(left) s left)"
  python3 benchmarks/bench_cl_profile.py --engine lib --engine-lib $D/libsoak_mnn_shim.so --plugin $D/mnn/libMNN_CL.so \
    --model $m $BCL --tmp-path $CLCACHE --iterations $ITER --max-new-tokens $NEW --repeat $REPEAT --time-box $BOX \
    --arms $ARMS 2>&1 | tee $OUT/bench-$(basename $(dirname $m)).txt
done
say done
