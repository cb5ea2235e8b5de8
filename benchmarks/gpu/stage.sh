#!/bin/bash
# Stage .devcarry/ (ignored by git) for the GPU recipes in this folder; it travels with the device tool's
# carry=[".devcarry"] (about 45 MB: keep the working tree under 64 MiB).  Needs a local MNN 3.6.1 build with
# OpenCL and LLM (SOAK_MNN_BUILD, SOAK_MNN_SOURCE: the prebuilt one of ../shared/mnn unpacked), pip structlog,
# zstd.  Copies, never builds MNN.  Idempotent: run again after native/ changes (the prebuilt soak libraries
# are keyed by their sources; the device has no OpenCL headers to build them).
#   SOAK_MNN_BUILD=/work/mnn/build SOAK_MNN_SOURCE=/work/mnn/prefix bash benchmarks/gpu/stage.sh
set -eu
B=${SOAK_MNN_BUILD:?set SOAK_MNN_BUILD to MNN\'s build folder}
S=${SOAK_MNN_SOURCE:?set SOAK_MNN_SOURCE to MNN\'s source or install prefix (its include/)}
D=.devcarry
grep -qx '/.devcarry/' .git/info/exclude || echo '/.devcarry/' >> .git/info/exclude
mkdir -p $D/mnn $D/icd $D/bin $D/models $D/site $D/mnninc $D/cache/native
cp $B/libMNN.so $B/libllm.so $B/express/libMNN_Express.so $B/source/backend/opencl/libMNN_CL.so $D/mnn/
cp $B/llm_demo $B/llm_bench $D/bin/
cc -O2 native/interposer/testprog/queue_cost.c -ldl -o $D/bin/queue_cost   # what timing a launch costs, each way
cp -L "$(command -v zstd)" $D/bin/            # static libzstd; unpacks the models there (tools/model_pack.py)
rm -rf $D/mnninc/include && cp -rL $S/include $D/mnninc/include   # MNN's API headers: the C++ reproducer's build
cp -L /usr/lib/x86_64-linux-gnu/libOpenCL.so.1 $D/
echo libnvidia-opencl.so.1 > $D/icd/nvidia.icd
python3 - "$D" <<'PY'
import os, shutil, sys
import structlog
from soak import native_build
from soak.engine.mnn_native import build_shim
d = sys.argv[1]
src = os.path.dirname(structlog.__file__)
shutil.rmtree(f"{d}/site/structlog", ignore_errors=True)
shutil.copytree(src, f"{d}/site/structlog")
shutil.copy(build_shim(), d)
shutil.rmtree(f"{d}/cache/native")
for t in ("soak_interposer", "soak_oracle", "soak_crash"):
    lib = native_build.ensure_built(t)
    os.makedirs(f"{d}/cache/native/{lib.parent.name}")
    shutil.copy(lib, f"{d}/cache/native/{lib.parent.name}/")
    print("prebuilt", lib.parent.name)
PY
# the 44M MHA model (random weights, 27.8 MB) and the 61M GQA one of issue 27 (tiled weights, packed: 0.5 MB)
[ -f $D/qwen2-768x6/config.json ] || python3 tools/make_qwen2_model.py --hidden 768 --layers 6 --out $D/qwen2-768x6
if [ ! -f $D/models/qwen2-896x4.tar.zst ]; then
  t=$(mktemp -d)
  python3 tools/make_qwen2_model.py --hidden 896 --layers 4 --heads 14 --kv-heads 2 --intermediate 4864 \
    --quant-block 128 --weights tiled --out $t/qwen2-896x4
  python3 tools/model_pack.py pack $t/qwen2-896x4 $D/models/qwen2-896x4.tar.zst > /dev/null
  rm -rf $t
fi
du -sh $D
