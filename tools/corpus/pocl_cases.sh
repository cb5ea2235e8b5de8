#!/usr/bin/env bash
# Record the PoCL / hand-built MNN cases of the corpus, one at a time (2 shared cores).
# Run from the soak checkout (/work/wt/realruns). Log: /work/corpus/tools/pocl_cases.log
set -u -o pipefail
export PS4='+ [$(date -u +%T)] '
set -x
C=/work/corpus
MB=/work/mnn-build
export POCL_WORK_GROUP_METHOD=loops POCL_CACHE_DIR=/work/corpus/.pocl-cache
mkdir -p $C/.clcache
SOAK=(nice -n 3 python3 -m soak run --engine mnn --mnn-build $MB --seed 1 --out $C)
TINY=soak/models/qwen2-tiny
CL=(--model $TINY --backend opencl --thread-num 68 --cl-gpu-override --tmp-path $C/.clcache --max-new-tokens 32)

until tail -1 /work/mnn-make.log | grep -q '^done'; do sleep 20; done
tail -1 /work/mnn-make.log
ls -la $MB/*.so $MB/llm_demo $MB/llm_bench 2>&1

run() { # name timeout args...
    local name=$1 t=$2; shift 2
    rm -rf "$C/$name"
    timeout -s INT -k 30 "$t" "${SOAK[@]}" --run-id "$name" "$@" > /tmp/console-$name.txt 2>&1
    echo "CASE $name rc=$? $(date -u +%T)" | tee -a $C/tools/cases.txt
    [ -d "$C/$name" ] && cp /tmp/console-$name.txt "$C/$name/console.txt"
    tail -22 /tmp/console-$name.txt
}
buffers() {
    python3 - "$1" <<'EOF'
import sys
from soak.cl.trace import open_trace
s = open_trace(sys.argv[1]).all_stats()
print(s[0]["objects"].get("buffer", {}).get("created", 0) if s else 0)
EOF
}

# hand-built MNN, CPU backend (also builds the shim)
[ -d $C/mnn-cpu-clean ] || run mnn-cpu-clean 600 --model $TINY --backend cpu --thread-num 2 --iterations 100 --max-new-tokens 32
# clean OpenCL on PoCL: cold kernel build, then MNN saves mnn_cachefile.bin at teardown
run pocl-clean 1500 "${CL[@]}" --iterations 20
run pocl-probe-1iter 600 "${CL[@]}" --iterations 1
B1=$(buffers $C/pocl-probe-1iter); BC=$(buffers $C/pocl-clean)
echo "buffers: probe(1 iteration) $B1, clean(30) $BC" | tee -a $C/tools/cases.txt
run pocl-alloc-load 600 "${CL[@]}" --iterations 10 --cl-fault 'clCreateBuffer=-4@nth:5'
if [ "${BC:-0}" -gt "${B1:-0}" ]; then N=$((B1 + 1)); else N=$B1; fi
echo "alloc-forward N=$N" | tee -a $C/tools/cases.txt
run pocl-alloc-forward 600 "${CL[@]}" --iterations 10 --cl-fault "clCreateBuffer=-4@nth:$N"
run pocl-enqueue-transient 600 "${CL[@]}" --iterations 15 --cl-fault 'clEnqueueNDRangeKernel=-5@nth:3000'
run pocl-enqueue-persistent 600 "${CL[@]}" --iterations 4 --cl-fault 'clEnqueueNDRangeKernel=-5@from:3000'
# limit: a third of the way from the clean run's GPU bytes after load to its peak (fails mid-run)
MEMLIMIT=$(python3 - $C/pocl-clean <<'EOF2'
import json, sys
g = [e["gpu_live_bytes"] for e in map(json.loads, open(sys.argv[1] + "/events.jsonl"))
     if e.get("event") == "memory" and e.get("gpu_live_bytes")]
print(int(g[0] + max((max(g) - g[0]) // 3, 1 << 20)) if g else 32 << 20)
EOF2
)
echo "memlimit $MEMLIMIT" | tee -a $C/tools/cases.txt
run pocl-memlimit 600 "${CL[@]}" --iterations 20 --max-turns 20 --max-new-tokens 128 --cl-mem-limit "$MEMLIMIT"
run pocl-cpu-fallback 600 --model $TINY --backend opencl --thread-num 68 --tmp-path $C/.clcache --max-new-tokens 32 --iterations 10
echo ALL DONE
