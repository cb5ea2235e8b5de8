#!/bin/bash
# Issue 23 on a GPU machine (the device tool), one call: a CPU reference of the 44M Qwen2, clean OpenCL runs
# against it at precision normal and low, a free run for the teacher-forced/free tok/s ratio, then injected
# silent faults (skip, corrupt) and clSetKernelArg -49.  Prints the figures; the run folders come back as
# $OUT/runs.tgz.
#
# Stage .devcarry first (benchmarks/gpu/stage.sh), then: run(command="ITER=110 bash benchmarks/gpu/oracle.sh",
# carry=[".devcarry"]).
set -u
source benchmarks/gpu/env.sh
E="$E --model $D/qwen2-768x6/config.json"
W="--seed 5 --max-new-tokens 48 --out $OUT/runs --quiet"
CL="--backend opencl --thread-num 68 --cl-real-lib $D/libOpenCL.so.1"
N=${ITER:-110}
t=$(date +%s); python3 -m soak reference $E --backend cpu --thread-num 8 $W --iterations $N --run-id ref; echo "ref rc=$? $(( $(date +%s)-t ))s"
if [ -z "${FAULTS_ONLY:-}" ]; then
for p in normal low; do t=$(date +%s); python3 -m soak run $E $CL --precision $p $W --iterations $N --run-id checked-$p --reference $OUT/runs/ref; echo "cl-$p rc=$? $(( $(date +%s)-t ))s"; done
t=$(date +%s); python3 -m soak run $E $CL --precision normal $W --iterations $N --run-id free-normal; echo "free rc=$? $(( $(date +%s)-t ))s"
python3 benchmarks/bench_oracle.py --out $OUT/runs --reference $OUT/runs/ref --runs free,checked --tag normal --skip-runs 2>&1 | tail -8
fi
run() { local id=$1; shift; t=$(date +%s); python3 -m soak run $E $CL --precision normal $W --iterations 24 --run-id $id --reference $OUT/runs/ref "$@"; echo "$id rc=$? $(( $(date +%s)-t ))s";
  python3 - $OUT/runs/$id <<'PY'
import sys, json
from soak.run_folder import read_events
run = sys.argv[1]
for e in read_events(run, kinds={"cl_call_error", "fault"}):
    if e["event"] == "cl_call_error" and not e.get("injected"): continue
    print(" ", e["event"], "it", e.get("iteration"), e.get("kind") or e.get("api"), e.get("action") or e.get("code"),
          e.get("kernel") or e.get("info") or "", "first_step", e.get("first_step"), "abs", e.get("abs_max"), "kl", e.get("kl_max"))
print(" ", json.load(open(run + "/summary.json")).get("oracle"))
PY
  python3 -m soak classify $OUT/runs/$id 2>&1 | sed -n 2,8p; }
if [ -z "${FAULTS_ONLY:-}" ]; then
run skip --cl-fault 'clEnqueueNDRangeKernel=skip@kernel:gemv*,nth:3000'
run corrupt --cl-fault 'clEnqueueWriteBuffer=corrupt:nan:all@nth:200' --cl-fault 'clEnqueueWriteBuffer=corrupt:bitflip:64@nth:401'
run setarg --cl-fault 'clSetKernelArg=-49@nth:400'
else   # MNN's decode on NVIDIA moves its inputs with map/unmap; a setArg after the tuning
run corrupt-unmap --cl-fault 'clEnqueueUnmapMemObject=corrupt:nan:all@nth:300'
run corrupt-write --cl-fault 'clEnqueueWriteBuffer=corrupt:nan:all@from:900,count:3'
run setarg-decode --cl-fault 'clSetKernelArg=-49@nth:20000'
fi
cd $OUT && tar czf runs.tgz runs && rm -rf runs
