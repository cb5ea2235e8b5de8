#!/usr/bin/env bash
# soak real-engine corpus on one NVIDIA H200 (issue 11 fault cases, issue 12 ratchet), one device call.
#
# Run from the repository root of soak, with `.mnn` carried (see plan.md beside this file):
#     bash .mnn/run.sh            (the lead copies this script into .mnn/ too)
# Writes at most 8 files into $OUT: one .tar.gz per case group (each <= 16 MiB) and run-log.tar.gz.
# Everything is time-boxed: each case has its own `timeout`, and the whole script stays under
# $SOAK_H200_BUDGET seconds (default 500): a case that would not fit is skipped and listed.
set -u -o pipefail

T0=$(date +%s)
BUDGET=${SOAK_H200_BUDGET:-500}
OUT=${OUT:?OUT must be set (the device tool sets it)}
ROOT=$(pwd)
M=$ROOT/.mnn
W=/tmp/soak-h200
RUNS=$W/runs
mkdir -p "$RUNS" "$W/console" "$OUT"
LOG=$W/run.log
exec > >(tee -a "$LOG") 2>&1
export PS4='+ [$(( $(date +%s) - T0 ))s] '
set -x

elapsed() { echo $(( $(date +%s) - T0 )); }

# ---------------------------------------------------------------- setup (about 20 s)
uname -a; nproc; date -u; nvidia-smi || true
ls -la "$M" "$M/lib" "$M/models" || { echo "FATAL: .mnn not carried"; }

# Python: structlog is not in the image; hypothesis is pinned <7 by soak (carried for a known version).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$M"/whl/*.whl
export PYTHONPATH=/tmp/site:$ROOT
python3 -c 'import sys, structlog, hypothesis, psutil, yaml; print(sys.version, structlog.__version__, hypothesis.__version__)'

# MNN libraries built on the lead's machine (Debian 12, glibc 2.36): libMNN, libMNN_Express, libllm,
# libMNN_CL and soak's shim built against them.
export LD_LIBRARY_PATH=$M/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ldd "$M/lib/libsoak_mnn_shim.so" "$M/lib/libMNN_CL.so" | grep -i 'not found' && echo "WARN: missing libraries above"

# OpenCL: the carried ICD loader, with a vendors folder naming NVIDIA's OpenCL library.
NVCL=""
for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib /lib/x86_64-linux-gnu; do
    if [ -e "$d/libnvidia-opencl.so.1" ]; then NVCL=$d/libnvidia-opencl.so.1; break; fi
done
[ -n "$NVCL" ] || NVCL=$(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so\.1/ {print $NF; exit}')
[ -n "$NVCL" ] || NVCL=$(timeout 20 find / -xdev -name 'libnvidia-opencl.so*' 2>/dev/null | head -1)
[ -n "$NVCL" ] || NVCL=/usr/lib/libnvidia-opencl.so.1
mkdir -p "$W/icd"
echo "$NVCL" > "$W/icd/nvidia.icd"
export OCL_ICD_VENDORS=$W/icd
REAL=$M/icd/libOpenCL.so.1
ls -la /etc/OpenCL/vendors 2>/dev/null; cat /etc/OpenCL/vendors/*.icd 2>/dev/null

# MNN dlopens five absolute paths before the bare name; any of them would bypass the interposer
# (soak stops with exit 11). This is a throwaway machine: move them aside.
for p in /usr/lib/libOpenCL.so /usr/local/lib/libOpenCL.so /usr/local/lib/libpocl.so /usr/lib64/libOpenCL.so /usr/lib32/libOpenCL.so; do
    if [ -e "$p" ] || [ -L "$p" ]; then mv "$p" "$p.soak-off" || echo "WARN: could not move $p"; fi
done

# soak's interposer: build it here from this tree (needs CL headers; carried ones if none),
# else use the one built on the lead's machine.
export SOAK_CACHE_DIR=/tmp/soakcache
if [ ! -e /usr/include/CL/cl.h ] && [ ! -e /usr/local/include/CL/cl.h ]; then
    mkdir -p /usr/local/include && cp -r "$M/include/CL" /usr/local/include/
fi
if ! timeout 150 python3 -c "from soak.native_build import ensure_built; print(ensure_built('soak_interposer'))"; then
    echo "WARN: interposer build failed here; using the prebuilt one"
    find "$SOAK_CACHE_DIR" -name build.log -exec tail -20 {} \; 2>/dev/null
    KEY=$(python3 -c "from soak.native_build import source_hash, NATIVE_DIR; print(source_hash([NATIVE_DIR / 'interposer', NATIVE_DIR / 'include']))")
    mkdir -p "$SOAK_CACHE_DIR/native/soak_interposer-$KEY"
    cp -r "$M/interposer/." "$SOAK_CACHE_DIR/native/soak_interposer-$KEY/"
fi
timeout 60 python3 -m soak cl-info --cl-real-lib "$REAL" > "$W/cl-info.txt" 2>&1; cat "$W/cl-info.txt"

MODEL=$M/models/qwen2-768x6
[ -e "$MODEL/config.json" ] || MODEL=$ROOT/soak/models/qwen2-tiny
SOAK=(python3 -m soak run --engine lib --engine-lib "$M/lib/libsoak_mnn_shim.so" --model "$MODEL"
      --seed 1 --out "$RUNS" --timeout-teardown 60 --quiet)
GPU=(--plugin "$M/lib/libMNN_CL.so" --backend opencl --thread-num 68 --tmp-path "$W/clcache" --cl-real-lib "$REAL")
mkdir -p "$W/clcache"

# run_case NAME SECONDS ARGS...: one soak run, cut to what is left of the budget.
# SIGINT first (soak finishes the iteration and writes its summary), SIGKILL 15 s later.
run_case() {
    local name=$1 want=$2; shift 2
    local left=$(( BUDGET - $(elapsed) - 30 ))
    if [ "$left" -lt 20 ]; then
        echo "SKIPPED $name: budget spent at $(elapsed) s" | tee -a "$W/skipped.txt"; return 0
    fi
    local t=$(( want < left ? want : left ))
    local s0; s0=$(date +%s)
    timeout -s INT -k 15 "$t" "${SOAK[@]}" --run-id "$name" "$@" > "$W/console/$name.txt" 2>&1
    local rc=$?
    echo "CASE $name rc=$rc wall=$(( $(date +%s) - s0 ))s limit=${t}s" | tee -a "$W/cases.txt"
    tail -25 "$W/console/$name.txt"
    if [ -d "$RUNS/$name" ]; then
        cp "$W/console/$name.txt" "$RUNS/$name/console.txt"
        echo "soak run ... --run-id $name $*  (rc $rc, limit ${t}s, $(date -u +%FT%TZ))" > "$RUNS/$name/command.txt"
        timeout 60 python3 -m soak classify "$RUNS/$name" > "$RUNS/$name/classify.txt" 2>&1
        head -8 "$RUNS/$name/classify.txt"
    fi
}

# buffers created by the newest worker of a run (interposer stats)
buffers_created() {
    python3 - "$1" <<'EOF'
import sys
from soak.cl.trace import open_trace
snaps = open_trace(sys.argv[1]).all_stats()
print(sum(s["objects"].get("buffer", {}).get("created", 0) for s in snaps[:1]) if snaps else 0)
EOF
}

# pack TAR CASE...: one tarball of run folders; recompressed, then trimmed, to stay under 15.5 MiB.
pack() {
    local tarname=$1; shift
    local have=()
    for c in "$@"; do [ -d "$RUNS/$c" ] && have+=("$c"); done
    [ ${#have[@]} -gt 0 ] || { echo "nothing to pack for $tarname"; return 0; }
    local dest=$OUT/$tarname.tar.gz limit=$(( 15 * 1024 * 1024 + 512 * 1024 ))
    tar -C "$RUNS" -czf "$dest" "${have[@]}"
    if [ "$(stat -c %s "$dest")" -gt "$limit" ]; then
        rm -f "$dest"; dest=$OUT/$tarname.tar.xz
        tar -C "$RUNS" -cf - "${have[@]}" | xz -T0 -9 > "$dest"
    fi
    if [ "$(stat -c %s "$dest")" -gt "$limit" ]; then
        # keep the head and the tail of each big JSONL (run_end is last), say so in TRIMMED.txt
        for c in "${have[@]}"; do
            for f in "$RUNS/$c"/cl_trace.jsonl "$RUNS/$c"/events.jsonl "$RUNS/$c"/engine.log; do
                [ -f "$f" ] || continue
                if [ "$(stat -c %s "$f")" -gt $(( 48 * 1024 * 1024 )) ]; then
                    local n; n=$(wc -l < "$f")
                    { head -n 150000 "$f"; tail -n 20000 "$f"; } > "$f.trim" && mv "$f.trim" "$f"
                    echo "$(basename "$f"): kept first 150000 and last 20000 of $n lines" >> "$RUNS/$c/TRIMMED.txt"
                fi
            done
        done
        rm -f "$dest"; tar -C "$RUNS" -cf - "${have[@]}" | xz -T0 -9 > "$dest"
    fi
    ls -la "$dest"
}

echo "setup done at $(elapsed) s"

# ---------------------------------------------------------------- cases, most wanted first
# 1. clean OpenCL (also builds NVIDIA's kernels and saves MNN's kernel cache for the others)
run_case nv-clean 110 "${GPU[@]}" --iterations 40 --duration 45s --max-new-tokens 32
pack nv-clean nv-clean

# 2. alloc failure at load: the 5th clCreateBuffer fails (issue 11: MNN went on with a null buffer)
run_case nv-alloc-load 45 "${GPU[@]}" --iterations 8 --duration 20s --max-new-tokens 32 --cl-fault 'clCreateBuffer=-4@nth:5'

# 3. persistent enqueue failure, few iterations (issue 11: 72 MB of events in 40 iterations)
run_case nv-enqueue-persistent 45 "${GPU[@]}" --iterations 5 --duration 20s --max-new-tokens 32 --cl-fault 'clEnqueueNDRangeKernel=-5@from:3000'
pack nv-enqueue-persistent nv-enqueue-persistent

# 4. issue 12's ratchet: 60-turn conversations, long contexts, OpenCL
run_case nv-longctx-60turn 150 "${GPU[@]}" --duration 120s --max-turns 60 --max-new-tokens 192 --context 2048
pack nv-longctx-60turn nv-longctx-60turn

# 5. the same seeded workload on MNN's CPU backend
run_case nv-cpu-longctx 80 --backend cpu --thread-num 8 --duration 60s --max-turns 60 --max-new-tokens 192 --context 2048
pack nv-cpu-longctx nv-cpu-longctx

# 6. transient enqueue failure
run_case nv-enqueue-transient 45 "${GPU[@]}" --iterations 12 --duration 20s --max-new-tokens 32 --cl-fault 'clEnqueueNDRangeKernel=-5@nth:3000'
pack nv-enqueue-transient nv-enqueue-transient

# 7. alloc failure at forward: a 1-iteration probe counts the buffers of load + first forward (B1);
#    the clean run's count (B40) says whether later forwards allocate. Fail buffer B1+1 if they do,
#    else the first clCreateBuffer 15 s in (load is over by then in a warm run).
run_case nv-probe-1iter 40 "${GPU[@]}" --iterations 1 --max-new-tokens 32
B1=$(buffers_created "$RUNS/nv-probe-1iter" 2>/dev/null || echo 0)
BC=$(buffers_created "$RUNS/nv-clean" 2>/dev/null || echo 0)
echo "buffers created: 1 iteration $B1, clean run $BC"
if [ "${B1:-0}" -gt 0 ] && [ "${BC:-0}" -gt "${B1:-0}" ]; then FWD="clCreateBuffer=-4@nth:$(( B1 + 1 ))"; else FWD='clCreateBuffer=-4@after:15s,count:1'; fi
run_case nv-alloc-forward 45 "${GPU[@]}" --iterations 12 --duration 25s --max-new-tokens 64 --max-turns 8 --cl-fault "$FWD"
pack nv-alloc nv-alloc-load nv-alloc-forward nv-probe-1iter

# 8. memory limit (a small phone's budget) with growing contexts; 9. CPU fallback (no libMNN_CL.so)
run_case nv-memlimit 45 "${GPU[@]}" --iterations 20 --duration 25s --max-turns 20 --max-new-tokens 128 --cl-mem-limit 96M
run_case nv-cpu-fallback 35 --backend opencl --thread-num 68 --tmp-path "$W/clcache" --cl-real-lib "$REAL" --iterations 10 --duration 15s --max-new-tokens 32
pack nv-memlimit-fallback nv-memlimit nv-cpu-fallback

# ---------------------------------------------------------------- log (the 8th file)
echo "done at $(elapsed) s"; cat "$W/cases.txt" "$W/skipped.txt" 2>/dev/null
cp "$LOG" "$W/run-log.txt"
tar -C "$W" -czf "$OUT/run-log.tar.gz" run-log.txt cases.txt cl-info.txt $( [ -f "$W/skipped.txt" ] && echo skipped.txt ) console
ls -la "$OUT"
