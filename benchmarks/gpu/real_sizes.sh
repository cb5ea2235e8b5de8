#!/bin/bash
# Issue 25 on a GPU machine, one call (about 9 minutes): the Qwen2-0.5B and Qwen2.5-1.5B shapes (tools/models,
# unpacked and hash-checked there) on OpenCL and on the CPU: soak's decode/prefill tok/s next to llm_bench's on
# the same files, GPU bytes after load and per context token against the KV theory, one --cl-mem-limit run per
# size at a phone-like budget, and sampled vs every-launch kernel totals with closure per phase.
#   run(command="bash benchmarks/gpu/real_sizes.sh", carry=[".devcarry"])        (after stage.sh here)
#   SMOKE=1 bash benchmarks/gpu/real_sizes.sh                                     (a dry run on PoCL)
#   CLOSURE_ONLY=1 CLOSURE_REPEAT=2: only the sampled vs every-launch rounds (a profiler change re-measured);
#   CLOSURE_ARMS (default profile,profile-all; e.g. profile-twin,profile,profile-all: both queue modes sampled)
#   SIZES may also name a model staged in .devcarry (qwen2-768x6: the 44M MHA one; qwen2-896x4: the 61M GQA one, packed)
set -u
source benchmarks/gpu/env.sh
SIZES=${SIZES:-"qwen2-0.5b qwen2.5-1.5b"}
# a phone-like budget just above what load takes (280 MB / 872 MB of buffers on PoCL), below the first turns' peak
declare -A LIMIT=([qwen2-0.5b]=295M [qwen2.5-1.5b]=890M)
ITER=${ITER:-16}; NEW=${NEW:-64}; CPU_ITER=${CPU_ITER:-6}
W="--seed 1 --max-new-tokens $NEW --max-turns 4 --quiet --out $OUT/runs"
mpath() { [ -f $D/$1/config.json ] && echo $D/$1/config.json || echo $MODELS/$1/config.json; }  # staged, or unpacked
for M in $SIZES; do for P in tools/models/$M.tar.zst $D/models/$M.tar.zst; do [ -f $P ] && unpack $M $P; done; done
for M in $SIZES; do
  [ -n "${CLOSURE_ONLY:-}" ] && break   # CLOSURE_ONLY=1: only the sampled vs every-launch rounds below
  C=$MODELS/$M/config.json
  python3 - "$C" "$CLCACHE" <<'PY'   # llm_bench's config: the same files, the same kernel cache as soak's runs
import json, sys
c = json.load(open(sys.argv[1])); c["tmp_path"] = sys.argv[2]
json.dump(c, open(sys.argv[1].replace("config.json", "bench_config.json"), "w"))
PY
  say "$M: soak OpenCL ($(left) s left)"
  timeout 200 python3 -m soak run $E $CL --model $C $W --iterations $ITER --run-id nv-$M
  say "$M: soak CPU"
  timeout 150 python3 -m soak run $E --backend cpu --thread-num 8 --model $C $W --iterations $CPU_ITER --run-id nv-cpu-$M
  say "$M: soak OpenCL under --cl-mem-limit ${LIMIT[$M]}"
  timeout 120 python3 -m soak run $E $CL --model $C --seed 1 --max-new-tokens 128 --max-turns 20 --iterations 6 \
    --duration 60s --quiet --out $OUT/runs --cl-mem-limit ${LIMIT[$M]} --run-id nv-memlimit-$M
  python3 benchmarks/gpu/figures.py $OUT/runs/nv-$M $OUT/runs/nv-cpu-$M $OUT/runs/nv-memlimit-$M 2>&1 | tee -a $OUT/figures.txt
  if [ -z "${SMOKE:-}" ]; then
    say "$M: llm_bench OpenCL / CPU"
    LD_PRELOAD=$D/mnn/libMNN_CL.so timeout 120 llm_bench -m $MODELS/$M/bench_config.json -a opencl -t 68 -p 512 -n 128 \
      -rep ${REP:-2} -fp $OUT/llm_bench-opencl-$M.txt > /dev/null 2>&1; say "rc=$?"; cat $OUT/llm_bench-opencl-$M.txt
    timeout 150 llm_bench -m $MODELS/$M/bench_config.json -a cpu -t 8 -p 512 -n 128 -rep ${REP:-2} \
      -fp $OUT/llm_bench-cpu-$M.txt > /dev/null 2>&1; say "rc=$?"; cat $OUT/llm_bench-cpu-$M.txt
  fi
done
for M in $SIZES; do
  [ $(left) -lt 60 ] && { say "no time left for $M's closure"; continue; }
  say "$M: sampled vs every-launch profile ($(left) s left)"
  BCL="--cl-real-lib $D/libOpenCL.so.1 --thread-num 68"; [ -n "${SMOKE:-}" ] && BCL="--cl-gpu-override --thread-num 65"
  # the same workload once first: MNN tunes each new shape at its first run (prefill's follow the prompt) and
  # caches it; an arm that met them cold would be compared with one that met them warm
  timeout 120 python3 -m soak run $E $CL --model $(mpath $M) --seed 1 --iterations 6 --max-new-tokens 32 --quiet \
    --out /tmp/soak-warm --run-id warm-$M-$RANDOM > /dev/null 2>&1; say "warm $M rc=$?"
  timeout $(( $(left) - 20 )) python3 benchmarks/bench_cl_profile.py --engine lib --engine-lib $D/libsoak_mnn_shim.so \
    --plugin $D/mnn/libMNN_CL.so --model $(mpath $M) $BCL --tmp-path $CLCACHE --iterations 6 \
    --max-new-tokens 32 --repeat ${CLOSURE_REPEAT:-1} --arms ${CLOSURE_ARMS:-profile,profile-all} 2>&1 | tee $OUT/closure-$M.txt
done
mkdir -p $OUT/runs; cd $OUT && tar czf sizes.tgz runs *.txt && rm -rf runs *.txt   # one file back (the device returns 8 at most)
say done
