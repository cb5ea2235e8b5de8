# Sourced by the GPU recipes in this folder: the environment over .devcarry/ (benchmarks/gpu/stage.sh), on
# the device machine (NVIDIA's OpenCL through the carried ICD loader) or, with SMOKE=1, here on PoCL (a dry
# run of the recipe: same commands, the tiny model's sizes, --cl-gpu-override).  Sets R (repo), D
# (.devcarry), E (soak's engine options), CL (OpenCL options), OUT (results: $OUT on the device), MODELS.
R=$PWD; D=$R/.devcarry
OUT=${OUT:-/tmp/soak-gpu-out}; mkdir -p "$OUT"
MODELS=${MODELS:-/tmp/soak-models}; mkdir -p "$MODELS"
export SOAK_CACHE_DIR=$D/cache PYTHONPATH=$R:$D/site PYTHONUNBUFFERED=1 PATH=$D/bin:$PATH
export SOAK_MNN_SOURCE=$D/mnninc LD_LIBRARY_PATH=$D/mnn:$D${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
E="--engine lib --engine-lib $D/libsoak_mnn_shim.so --plugin $D/mnn/libMNN_CL.so"
CLCACHE=/tmp/soak-clcache; mkdir -p $CLCACHE
if [ -z "${SMOKE:-}" ]; then
  export OCL_ICD_VENDORS=$D/icd
  CL="--backend opencl --thread-num 68 --cl-real-lib $D/libOpenCL.so.1 --tmp-path $CLCACHE"
  mkdir -p /tmp/soak-ocl && ln -sf $D/libOpenCL.so.1 /tmp/soak-ocl/libOpenCL.so   # the direct (no-intercept) arm's
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
  CL="--backend opencl --thread-num 65 --cl-gpu-override --tmp-path $CLCACHE"
fi
T0=$(date +%s)
left() { echo $(( ${BUDGET:-560} - ($(date +%s) - T0) )); }   # seconds left of the call's budget
say() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
unpack() { [ -f "$MODELS/$1/config.json" ] || python3 tools/model_pack.py unpack "$2" "$MODELS/$1" > /dev/null \
           || say "unpack $1 failed"; }
