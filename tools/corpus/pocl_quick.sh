#!/usr/bin/env bash
# Time-boxed remainder (04:05 UTC): the quick PoCL cases, then the raw llm_demo/llm_bench logs.
set -u -o pipefail
export PS4='+ [$(date -u +%T)] '
set -x
C=/work/corpus
MB=/work/mnn-build
export POCL_WORK_GROUP_METHOD=loops POCL_CACHE_DIR=/work/corpus/.pocl-cache
SOAK=(python3 -m soak run --engine mnn --mnn-build $MB --seed 1 --out $C)
TINY=soak/models/qwen2-tiny
CL=(--model $TINY --backend opencl --thread-num 68 --cl-gpu-override --tmp-path $C/.clcache --max-new-tokens 32)
run() { # name timeout args...
    local name=$1 t=$2; shift 2
    rm -rf "$C/$name"
    timeout -s INT -k 30 "$t" "${SOAK[@]}" --run-id "$name" "$@" > /tmp/console-$name.txt 2>&1
    echo "CASE $name rc=$? $(date -u +%T)" | tee -a $C/tools/cases.txt
    [ -d "$C/$name" ] && cp /tmp/console-$name.txt "$C/$name/console.txt"
    tail -22 /tmp/console-$name.txt
}
run pocl-alloc-load 240 "${CL[@]}" --iterations 3 --cl-fault 'clCreateBuffer=-4@nth:5'
run pocl-cpu-fallback 120 --model $TINY --backend opencl --thread-num 68 --tmp-path $C/.clcache --max-new-tokens 32 --iterations 6
