#!/usr/bin/env bash
# MNN's own llm_demo / llm_bench on the tiny model, CPU and OpenCL-on-PoCL, clean and with an
# injected fault (soak's interposer via its SOAK_* environment), stdout+stderr to /work/corpus/raw/.
set -u -o pipefail
export PS4='+ [$(date -u +%T)] '
set -x
MB=/work/mnn-build
R=/work/corpus/raw
mkdir -p $R/cwd
export POCL_WORK_GROUP_METHOD=loops POCL_CACHE_DIR=/work/corpus/.pocl-cache
IP=$(cd /work/wt/realruns && python3 -c "from soak.cl.interposer import interposer_library; print(interposer_library().parent)")
CLSO=$(ls $MB/libMNN_CL.so $MB/source/backend/opencl/libMNN_CL.so 2>/dev/null | head -1)
MNNLIBS=$MB:$MB/express:$MB/transformers/llm/engine:$MB/source/backend/opencl
PROMPTS=/work/models/prompts.txt
DEMO=$MB/llm_demo
BENCH=$MB/llm_bench
[ -x $DEMO ] || DEMO=$(find $MB -name llm_demo -type f | head -1)
[ -x "$BENCH" ] || BENCH=$(find $MB -name llm_bench -type f | head -1)

# one(name, timeout, fault-spec|-, preload yes|no, override 1|0, cmd...)
one() {
    local name=$1 t=$2 faults=$3 preload=$4 ovr=$5; shift 5
    local f=$R/$name.txt
    rm -f $R/$name.cl_trace.jsonl $R/$name.cl_trace.*.stats
    {
        echo "# $name: $(date -u +%FT%TZ); cwd $R/cwd; command: $*"
        echo "# env: POCL_WORK_GROUP_METHOD=loops POCL_CACHE_DIR=/work/corpus/.pocl-cache LD_LIBRARY_PATH=<soak interposer>:<mnn build dirs> SOAK_CL_REAL_LIB=/usr/lib/x86_64-linux-gnu/libOpenCL.so.1 SOAK_CL_GPU_OVERRIDE=$ovr SOAK_CL_FAULTS='${faults#-}' $( [ $preload = yes ] && echo "LD_PRELOAD=libMNN_CL.so")"
    } > $f.head
    ( cd $R/cwd && env LD_LIBRARY_PATH=$IP:$MNNLIBS \
        SOAK_CL_REAL_LIB=/usr/lib/x86_64-linux-gnu/libOpenCL.so.1 \
        SOAK_CL_TRACE=$R/$name.cl_trace.jsonl SOAK_CL_STATS=$R/$name.cl_trace.%p.stats \
        SOAK_CL_GPU_OVERRIDE=$ovr SOAK_CL_FAULTS="${faults#-}" SOAK_CL_MEM_LIMIT= \
        $( [ $preload = yes ] && echo LD_PRELOAD=$CLSO ) \
        timeout -k 10 $t nice -n 3 "$@" ) > $f.body 2>&1
    local rc=$?
    # big fault storms: keep the first 4 MB and the last 1 MB
    if [ "$(stat -c %s $f.body)" -gt $((6 * 1024 * 1024)) ]; then
        local n; n=$(wc -l < $f.body)
        { head -c 4000000 $f.body; echo; echo "# [corpus: trimmed; $n lines in all, last 1 MB follows]"; tail -c 1000000 $f.body; } > $f.trim && mv $f.trim $f.body
    fi
    { cat $f.head $f.body; echo "# exit status $rc"; } > $f; rm -f $f.head $f.body
    echo "RAW $name rc=$rc lines=$(wc -l < $f)" | tee -a $R/index.txt
    tail -5 $f
}

# warm start: MNN's kernel cache from the soak runs (same kernels, same GPU mode 68), where
# llm_demo (tmp_<std::hash of the config's realpath>) and llm_bench (cwd) look for it
if [ -s /work/corpus/.clcache/mnn_cachefile.bin ]; then
    D=$R/cwd/$(/work/corpus/tools/demo_tmpname /work/models/qwen2-tiny-cl/config.json); mkdir -p $D
    cp /work/corpus/.clcache/mnn_cachefile.bin $D/ && cp /work/corpus/.clcache/mnn_cachefile.bin $R/cwd/
fi
one llm_demo-cpu-clean 120 - no 0 $DEMO /work/models/qwen2-tiny-cpu/config.json $PROMPTS 32
one llm_demo-opencl-no-plugin 120 - no 1 $DEMO /work/models/qwen2-tiny-cl/config.json $PROMPTS 32
one llm_demo-opencl-alloc-load 200 'clCreateBuffer=-4@nth:5' yes 1 $DEMO /work/models/qwen2-tiny-cl/config.json $PROMPTS 32
one llm_demo-opencl-no-override 120 - yes 0 $DEMO /work/models/qwen2-tiny-cl/config.json $PROMPTS 32
[ -n "$BENCH" ] && one llm_bench-cpu-clean 120 - no 0 $BENCH -m /work/models/qwen2-tiny-cpu/config.json -a cpu -t 2 -p 64 -n 32 -rep 2
one llm_demo-opencl-enqueue-persistent 240 'clEnqueueNDRangeKernel=-5@from:3000' yes 1 $DEMO /work/models/qwen2-tiny-cl/config.json $PROMPTS 32
echo ALL DONE
