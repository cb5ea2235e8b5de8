#!/bin/bash
# Does timing a launch change the kernel's own device time?  The 61M model (issue 27), one seeded workload
# three ways: the cost budget (few launches timed), 1 in 4 fixed, every launch; run folders back as
# $OUT/intrusion.tgz (compare each shape's p50 between them: benchmarks/gpu/intrusion.py).  Then issue 27's
# table on the tiny model (decode well above 1,000 tok/s: the launch-bound extreme).
set -u
source benchmarks/gpu/env.sh
unpack qwen2-896x4 $D/models/qwen2-896x4.tar.zst
M61=$MODELS/qwen2-896x4/config.json; TINY=$R/soak/models/qwen2-tiny/config.json
timeout 90 python3 -m soak run $E $CL --model $M61 --iterations 2 --max-new-tokens 8 --quiet --out /tmp/soak-warm > /dev/null 2>&1
for a in "budget:" "fixed4:--cl-profile-sample 4 --cl-profile-budget 0" "all:--cl-profile-sample 1"; do
  timeout 120 python3 -m soak run $E $CL --model $M61 --seed 1 --iterations 15 --max-new-tokens 64 --quiet \
    --out $OUT/intrusion --run-id ${a%%:*} --intercept --cl-profile ${a#*:} > /dev/null 2>&1; say "${a%%:*} rc=$?"
done
# what profiling costs besides its events (the profiling queue itself): profile-min times only each kernel's
# first launch per window
python3 benchmarks/bench_cl_profile.py --engine lib --engine-lib $D/libsoak_mnn_shim.so --plugin $D/mnn/libMNN_CL.so \
  --model $M61 --cl-real-lib $D/libOpenCL.so.1 --direct-lib-dir /tmp/soak-ocl --thread-num 68 --tmp-path $CLCACHE \
  --iterations 15 --max-new-tokens 64 --repeat 3 --time-box ${BOX61:-90} --arms direct,interposer,profile-min,profile 2>&1 \
  | tee $OUT/bench-61m-min.txt
timeout 60 python3 -m soak run $E $CL --model $TINY --iterations 2 --max-new-tokens 8 --quiet --out /tmp/soak-warm > /dev/null 2>&1
python3 benchmarks/bench_cl_profile.py --engine lib --engine-lib $D/libsoak_mnn_shim.so --plugin $D/mnn/libMNN_CL.so \
  --model $TINY --cl-real-lib $D/libOpenCL.so.1 --direct-lib-dir /tmp/soak-ocl --thread-num 68 --tmp-path $CLCACHE \
  --iterations 15 --max-new-tokens 64 --repeat 5 --time-box ${BOX:-150} --arms direct,interposer,profile 2>&1 | tee $OUT/bench-tiny.txt
python3 benchmarks/gpu/intrusion.py $OUT/intrusion/budget $OUT/intrusion/fixed4 $OUT/intrusion/all
cd $OUT && tar czf intrusion.tgz intrusion && rm -rf intrusion
say done
