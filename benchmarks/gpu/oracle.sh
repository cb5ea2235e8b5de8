#!/bin/bash
# Issue 23 on a GPU machine (the device tool), one call: a CPU reference of the 44M Qwen2, clean OpenCL runs
# against it at precision normal and low, a free run for the teacher-forced/free tok/s ratio, then injected
# silent faults (skip, corrupt) and clSetKernelArg -49.  Prints the figures; the run folders come back as
# $OUT/runs.tgz.
#
# Set up here first (.devcarry is ignored by git; it travels with carry=[".devcarry"], about 40 MB):
#   echo /.devcarry/ >> .git/info/exclude; mkdir -p .devcarry/mnn .devcarry/icd .devcarry/cache/native
#   cp /work/mnn/build/{libMNN.so,libllm.so} /work/mnn/build/express/libMNN_Express.so \
#      /work/mnn/build/source/backend/opencl/libMNN_CL.so .devcarry/mnn/
#   cp -L /usr/lib/x86_64-linux-gnu/libOpenCL.so.1 .devcarry/; echo libnvidia-opencl.so.1 > .devcarry/icd/nvidia.icd
#   python3 tools/make_qwen2_model.py --hidden 768 --layers 6 --out .devcarry/qwen2-768x6
#   SOAK_MNN_BUILD=/work/mnn/build SOAK_MNN_SOURCE=/work/mnn/prefix python3 -c "from soak.engine.mnn_native \
#      import build_shim; import shutil; shutil.copy(build_shim(), '.devcarry/')"
#   for t in soak_interposer soak_oracle soak_crash: copy the product of soak.native_build.ensure_built(t)
#      into .devcarry/cache/native/<its build folder's name>/ (the device has no OpenCL headers)
# Then: run(command="ITER=110 bash benchmarks/gpu/oracle.sh", carry=[".devcarry"]).
set -u
R=$PWD; D=$R/.devcarry
export SOAK_CACHE_DIR=$D/cache LD_LIBRARY_PATH=$D/mnn:$D OCL_ICD_VENDORS=$D/icd PYTHONPATH=$R:$D/site PYTHONUNBUFFERED=1
E="--engine lib --engine-lib $D/libsoak_mnn_shim.so --plugin $D/mnn/libMNN_CL.so --model $D/qwen2-768x6/config.json"
W="--seed 5 --max-new-tokens 48 --out $OUT/runs --quiet"
CL="--backend opencl --thread-num 68 --cl-real-lib $D/libOpenCL.so.1"
N=${ITER:-110}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
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
