/* cl_workload: soak's own small OpenCL program, for the interposer's tests
 * and benchmark.  It loads OpenCL exactly as MNN does:
 *   dlopen("libOpenCL.so", RTLD_NOW | RTLD_LOCAL) and dlsym per entry point
 * (CL_WORKLOAD_LIB overrides the name, e.g. libOpenCL.so.1 to bypass soak).
 *
 * Each step prints one line "result <what> <values...>" on stdout (unbuffered).
 *
 *   --gpu-only           find devices with CL_DEVICE_TYPE_GPU only (default: ALL)
 *   --iterations N       run the vector-add kernel N times (default 1)
 *   --errors             make real API errors (see "observed" lines)
 *   --bad-program        build a program that does not compile
 *   --leak N             create N buffers (sizes 4096 + 1000*i) and never release them
 *   --svm BYTES          clSVMAlloc BYTES, then clSVMFree (--leak-svm: never free)
 *   --alloc N --alloc-size B   create N buffers of B bytes and keep them to the end
 *   --maps N             map/unmap a buffer N times
 *   --ext                clGetExtensionFunctionAddressForPlatform + call the result
 *   --sleep-ms N         sleep before the --leak step
 *   --hold-ms N          sleep after the allocations (objects alive; read the trace meanwhile)
 *   --crash segv|abort   crash after the work above, with objects still alive
 *   --threads T --thread-calls N   T threads, each N x (clCreateBuffer, clGetPlatformInfo,
 *                        clReleaseMemObject)
 *   --bench N            time N calls of clGetPlatformInfo and of clSetKernelArg
 *   --steps S --step-calls K   S steps of K NDRange enqueues (global sizes 1024 and 512 in turn,
 *                        no event); each step ends with clFinish and "result step I failed=F ns=T";
 *                        with --step-sync it then waits for a line on stdin (a reader polls between);
 *                        --step-kernels M: M distinct kernels (k0..kM-1) called in turn (default: vadd);
 *                        --step-sizes A,B,..: the global sizes in turn (default 1024,512; each <= 1024);
 *                        --step-rotate: step S starts S launches into the cycle (the same kernel and
 *                        size pairs, another first launch)
 *   --queue-props        create the queue with clCreateCommandQueueWithProperties (no properties)
 *   --probe-param P      clGetDeviceInfo(P) with a 1-byte buffer (P: number, 0x.. allowed)
 *   --verify N           N rounds that check what each command did (silent faults: skip, corrupt); round I:
 *                        fill c and c2 with -1; launch vadd (c = a + b, with an event it waits on) and
 *                        vscale (c2 = a * 0.5, no event); read both: "result verify I vadd|vscale
 *                        rc=R ok=X sentinel=Y nan=Z" (X elements right, Y still -1);
 *                        write buffer d, copy d to e, write image m, copy m to m2, map d for writing
 *                        and unmap it, each read back: "result verify I write|copy|wimage|cimage|unmap
 *                        rc=R nan=W diff=D bits=B" (words that are NaN, words and bits that differ
 *                        from what was written or copied).  Per round: 2 fills, 2 launches, 1 write
 *                        buffer, 1 copy buffer, 1 write image, 1 copy image, 1 map, 1 unmap.
 */
#define _GNU_SOURCE
#define CL_TARGET_OPENCL_VERSION 300
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#include <CL/cl_ext.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CL_FUNCS(X)                                                                                          \
    X(clGetPlatformIDs) X(clGetPlatformInfo) X(clGetDeviceIDs) X(clGetDeviceInfo) X(clCreateContext)         \
    X(clReleaseContext) X(clCreateCommandQueue) X(clReleaseCommandQueue) X(clCreateBuffer)                   \
    X(clCreateSubBuffer) X(clCreateImage) X(clReleaseMemObject) X(clRetainMemObject)                         \
    X(clCreateProgramWithSource) X(clBuildProgram) X(clGetProgramBuildInfo) X(clReleaseProgram)              \
    X(clCreateKernel) X(clCreateKernelsInProgram) X(clReleaseKernel) X(clSetKernelArg) X(clEnqueueNDRangeKernel) X(clEnqueueReadBuffer)  \
    X(clEnqueueWriteBuffer) X(clEnqueueMapBuffer) X(clEnqueueUnmapMemObject) X(clFinish) X(clWaitForEvents)  \
    X(clReleaseEvent) X(clSVMAlloc) X(clSVMFree) X(clGetExtensionFunctionAddressForPlatform) \
    X(clCreateCommandQueueWithProperties) X(clEnqueueFillBuffer) X(clEnqueueCopyBuffer) X(clEnqueueWriteImage)  \
    X(clEnqueueReadImage) X(clEnqueueCopyImage)

#define DECLARE(name) static __typeof__(name) *p_##name;
CL_FUNCS(DECLARE)

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("result ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

static const char *GOOD_SRC =
    "__kernel void vadd(__global const float *a, __global const float *b, __global float *c) {\n"
    "    size_t i = get_global_id(0);\n"
    "    c[i] = a[i] + b[i];\n"
    "}\n";
static const char *VERIFY_SRC =
    "__kernel void vscale(__global const float *a, __global float *c) {\n"
    "    size_t i = get_global_id(0);\n"
    "    c[i] = a[i] * 0.5f;\n"
    "}\n";
static const char *BAD_SRC = "__kernel void broken(__global float *a) { a[0] = undefined_symbol_xyz + ; }\n";

typedef struct {
    cl_context ctx;
    cl_platform_id platform;
    int calls;
    int failures;
} thread_arg;

/* per call: create a 4 KiB buffer, query the platform, release the buffer */
static void *thread_main(void *p)
{
    thread_arg *t = p;
    char name[128];
    for (int i = 0; i < t->calls; i++) {
        cl_int err;
        cl_mem m = p_clCreateBuffer(t->ctx, CL_MEM_READ_WRITE, 4096, 0, &err);
        p_clGetPlatformInfo(t->platform, CL_PLATFORM_NAME, sizeof name, name, 0);
        if (m)
            p_clReleaseMemObject(m);
        else
            t->failures++;
    }
    return 0;
}

/* words of got that are NaN (as fp32), differ from want, and the bits that differ */
static void compare(const float *got, const float *want, int n, int *nan, int *diff, int *bits)
{
    *nan = *diff = *bits = 0;
    for (int i = 0; i < n; i++) {
        unsigned g, w;
        memcpy(&g, &got[i], 4);
        memcpy(&w, &want[i], 4);
        *nan += got[i] != got[i];
        *diff += g != w;
        *bits += __builtin_popcount(g ^ w);
    }
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    int gpu_only = 0, iterations = 1, errors = 0, bad = 0, leak = 0, maps = 0, ext = 0, bench = 0;
    int alloc_n = 0, leak_svm = 0, sleep_ms = 0, hold_ms = 0, threads = 0, thread_calls = 1000;
    size_t alloc_size = 1 << 20, svm = 0;
    int steps = 0, step_calls = 100, step_sync = 0, step_kernels = 0, step_rotate = 0;
    size_t step_sizes[16] = {1024, 512};
    int n_sizes = 2;
    long probe_param = -1;
    int queue_props = 0, verify = 0;
    const char *crash = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "0";
        if (!strcmp(a, "--gpu-only")) gpu_only = 1;
        else if (!strcmp(a, "--iterations")) iterations = atoi(v), i++;
        else if (!strcmp(a, "--errors")) errors = 1;
        else if (!strcmp(a, "--bad-program")) bad = 1;
        else if (!strcmp(a, "--leak")) leak = atoi(v), i++;
        else if (!strcmp(a, "--svm")) svm = strtoull(v, 0, 10), i++;
        else if (!strcmp(a, "--leak-svm")) leak_svm = 1;
        else if (!strcmp(a, "--alloc")) alloc_n = atoi(v), i++;
        else if (!strcmp(a, "--alloc-size")) alloc_size = strtoull(v, 0, 10), i++;
        else if (!strcmp(a, "--maps")) maps = atoi(v), i++;
        else if (!strcmp(a, "--ext")) ext = 1;
        else if (!strcmp(a, "--crash")) crash = v, i++;
        else if (!strcmp(a, "--bench")) bench = atoi(v), i++;
        else if (!strcmp(a, "--sleep-ms")) sleep_ms = atoi(v), i++;
        else if (!strcmp(a, "--threads")) threads = atoi(v), i++;
        else if (!strcmp(a, "--thread-calls")) thread_calls = atoi(v), i++;
        else if (!strcmp(a, "--hold-ms")) hold_ms = atoi(v), i++;
        else if (!strcmp(a, "--steps")) steps = atoi(v), i++;
        else if (!strcmp(a, "--step-calls")) step_calls = atoi(v), i++;
        else if (!strcmp(a, "--step-sync")) step_sync = 1;
        else if (!strcmp(a, "--step-rotate")) step_rotate = 1;
        else if (!strcmp(a, "--step-sizes")) {
            n_sizes = 0;
            for (const char *p = v; *p && n_sizes < 16; p = strchr(p, ',') ? strchr(p, ',') + 1 : "") {
                size_t sz = strtoull(p, 0, 10);
                step_sizes[n_sizes++] = sz >= 1 && sz <= 1024 ? sz : 1024;
            }
            if (!n_sizes)
                step_sizes[n_sizes++] = 1024;
            i++;
        }
        else if (!strcmp(a, "--queue-props")) queue_props = 1;
        else if (!strcmp(a, "--step-kernels")) step_kernels = atoi(v), i++;
        else if (!strcmp(a, "--probe-param")) probe_param = strtol(v, 0, 0), i++;
        else if (!strcmp(a, "--verify")) verify = atoi(v), i++;
        else {
            fprintf(stderr, "cl_workload: unknown option %s\n", a);
            return 64;
        }
    }

    const char *libname = getenv("CL_WORKLOAD_LIB") ? getenv("CL_WORKLOAD_LIB") : "libOpenCL.so";
    void *lib = dlopen(libname, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        out("dlopen_failed %s", dlerror());
        return 2;
    }
#define LOAD(name)                                                                                           \
    p_##name = (__typeof__(name) *)dlsym(lib, #name);                                                       \
    if (!p_##name) {                                                                                         \
        out("missing_symbol %s", #name);                                                                     \
        return 2;                                                                                            \
    }
    CL_FUNCS(LOAD)
    out("library %s interposer=%d", libname, dlsym(lib, "soak_interposer_abi") != NULL);

    cl_int err;
    cl_platform_id platform;
    cl_uint np = 0;
    err = p_clGetPlatformIDs(1, &platform, &np);
    out("clGetPlatformIDs %d %u", err, np);
    if (err || !np)
        return 2;
    cl_device_id dev;
    cl_uint nd = 0;
    err = p_clGetDeviceIDs(platform, gpu_only ? CL_DEVICE_TYPE_GPU : CL_DEVICE_TYPE_ALL, 1, &dev, &nd);
    out("clGetDeviceIDs %d %u", err, nd);
    if (err || !nd)
        return 3;
    cl_device_type type = 0;
    p_clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof type, &type, 0);
    out("device_type %llu", (unsigned long long)type);

    cl_context ctx = p_clCreateContext(0, 1, &dev, 0, 0, &err);
    out("clCreateContext %d", err);
    if (!ctx)
        return 4;
    cl_queue_properties no_props[] = {0};
    cl_command_queue q = queue_props ? p_clCreateCommandQueueWithProperties(ctx, dev, no_props, &err)
                                     : p_clCreateCommandQueue(ctx, dev, 0, &err);
    out("clCreateCommandQueue %d", err);
    if (!q)
        return 4;

    enum { N = 1024 };
    float ha[N], hb[N], hc[N];
    for (int i = 0; i < N; i++)
        ha[i] = (float)i, hb[i] = 2.0f * i;
    cl_mem a = p_clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof ha, ha, &err);
    out("clCreateBuffer a %d", err);
    cl_mem b = p_clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof hb, hb, &err);
    out("clCreateBuffer b %d", err);
    cl_mem c = p_clCreateBuffer(ctx, CL_MEM_READ_WRITE, sizeof hc, 0, &err);
    out("clCreateBuffer c %d", err);

    cl_buffer_region region = {0, 1024};
    cl_mem sub = p_clCreateSubBuffer(c, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region, &err);
    out("clCreateSubBuffer %d", err);

    cl_image_format fmt = {CL_RGBA, CL_UNSIGNED_INT8};
    cl_image_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.image_type = CL_MEM_OBJECT_IMAGE2D;
    desc.image_width = 64;
    desc.image_height = 32;
    cl_mem img = p_clCreateImage(ctx, CL_MEM_READ_WRITE, &fmt, &desc, 0, &err);
    out("clCreateImage %d", err);

    cl_program prog = p_clCreateProgramWithSource(ctx, 1, &GOOD_SRC, 0, &err);
    err = p_clBuildProgram(prog, 1, &dev, "", 0, 0);
    out("clBuildProgram good %d", err);
    cl_kernel k = p_clCreateKernel(prog, "vadd", &err);
    out("clCreateKernel %d", err);
    cl_kernel all[4];
    cl_uint nk = 0;
    err = p_clCreateKernelsInProgram(prog, 4, all, &nk);
    out("clCreateKernelsInProgram %d %u", err, nk);
    for (cl_uint i = 0; err == CL_SUCCESS && i < nk; i++)
        p_clReleaseKernel(all[i]);
    p_clSetKernelArg(k, 0, sizeof a, &a);
    p_clSetKernelArg(k, 1, sizeof b, &b);
    p_clSetKernelArg(k, 2, sizeof c, &c);

    for (int it = 0; it < iterations; it++) {
        size_t gws = N;
        cl_event ev = 0;
        err = p_clEnqueueNDRangeKernel(q, k, 1, 0, &gws, 0, 0, 0, &ev);
        out("clEnqueueNDRangeKernel %d %d", it + 1, err);
        if (ev) {
            p_clWaitForEvents(1, &ev);
            p_clReleaseEvent(ev);
        }
    }
    enum { MAX_STEP_KERNELS = 256 };
    cl_kernel sk[MAX_STEP_KERNELS];
    cl_program sprog = 0;
    if (step_kernels > MAX_STEP_KERNELS)
        step_kernels = MAX_STEP_KERNELS;
    if (steps && step_kernels > 0) {
        size_t cap = (size_t)step_kernels * 160 + 1;
        char *src = malloc(cap), *o = src;
        for (int i = 0; i < step_kernels; i++)
            o += snprintf(o, cap - (size_t)(o - src),
                          "__kernel void k%d(__global const float *a, __global const float *b, __global float *c)"
                          " { size_t i = get_global_id(0); c[i] = a[i] * %d.0f + b[i]; }\n", i, i);
        const char *csrc = src;
        sprog = p_clCreateProgramWithSource(ctx, 1, &csrc, 0, &err);
        err = p_clBuildProgram(sprog, 1, &dev, "", 0, 0);
        out("step_kernels build %d", err);
        free(src);
        for (int i = 0; i < step_kernels; i++) {
            char name[16];
            snprintf(name, sizeof name, "k%d", i);
            sk[i] = p_clCreateKernel(sprog, name, &err);
            p_clSetKernelArg(sk[i], 0, sizeof a, &a);
            p_clSetKernelArg(sk[i], 1, sizeof b, &b);
            p_clSetKernelArg(sk[i], 2, sizeof c, &c);
        }
    }
    for (int st = 0; st < steps; st++) {
        int failed = 0;
        double t0 = now_ns();
        for (int i0 = 0; i0 < step_calls; i0++) {
            int i = i0 + (step_rotate ? st : 0);
            size_t gws = step_sizes[i % n_sizes];
            cl_kernel kk = step_kernels > 0 ? sk[i % step_kernels] : k;
            if (p_clEnqueueNDRangeKernel(q, kk, 1, 0, &gws, 0, 0, 0, 0) != CL_SUCCESS)
                failed++;
        }
        p_clFinish(q);
        out("step %d failed=%d ns=%.0f", st + 1, failed, now_ns() - t0);
        if (step_sync) {
            char line[16];
            if (!fgets(line, sizeof line, stdin))
                break;
        }
    }
    for (int i = 0; sprog && i < step_kernels; i++)
        p_clReleaseKernel(sk[i]);
    if (sprog)
        p_clReleaseProgram(sprog);
    if (verify > 0) {
        cl_program vprog = p_clCreateProgramWithSource(ctx, 1, &VERIFY_SRC, 0, &err);
        err = p_clBuildProgram(vprog, 1, &dev, "", 0, 0);
        cl_kernel vs = p_clCreateKernel(vprog, "vscale", &err);
        out("verify build %d", err);
        cl_mem c2 = p_clCreateBuffer(ctx, CL_MEM_READ_WRITE, sizeof hc, 0, &err);
        cl_mem d = p_clCreateBuffer(ctx, CL_MEM_READ_WRITE, sizeof hc, 0, &err);
        cl_mem e = p_clCreateBuffer(ctx, CL_MEM_READ_WRITE, sizeof hc, 0, &err);
        cl_image_format ffmt = {CL_RGBA, CL_FLOAT};
        cl_image_desc idesc;
        memset(&idesc, 0, sizeof idesc);
        idesc.image_type = CL_MEM_OBJECT_IMAGE2D;
        idesc.image_width = 16;
        idesc.image_height = 8;
        cl_mem m = p_clCreateImage(ctx, CL_MEM_READ_WRITE, &ffmt, &idesc, 0, &err);
        cl_mem m2 = p_clCreateImage(ctx, CL_MEM_READ_WRITE, &ffmt, &idesc, 0, &err);
        p_clSetKernelArg(vs, 0, sizeof a, &a);
        p_clSetKernelArg(vs, 1, sizeof c2, &c2);
        enum { IW = 16 * 8 * 4 }; /* floats in the image: 512 */
        float want[N], got[N], got2[N], img_want[IW], img_got[IW], img_got2[IW];
        const size_t origin[3] = {0, 0, 0}, region[3] = {16, 8, 1};
        const float minus1 = -1.0f;
        for (int r = 1; r <= verify; r++) {
            p_clEnqueueFillBuffer(q, c, &minus1, sizeof minus1, 0, sizeof hc, 0, 0, 0);
            p_clEnqueueFillBuffer(q, c2, &minus1, sizeof minus1, 0, sizeof hc, 0, 0, 0);
            size_t gws = N;
            cl_event ev = 0;
            cl_int rc1 = p_clEnqueueNDRangeKernel(q, k, 1, 0, &gws, 0, 0, 0, &ev);
            cl_int wrc = ev ? p_clWaitForEvents(1, &ev) : -1;
            if (ev)
                p_clReleaseEvent(ev);
            cl_int rc2 = p_clEnqueueNDRangeKernel(q, vs, 1, 0, &gws, 0, 0, 0, 0);
            p_clFinish(q);
            p_clEnqueueReadBuffer(q, c, CL_TRUE, 0, sizeof hc, got, 0, 0, 0);
            p_clEnqueueReadBuffer(q, c2, CL_TRUE, 0, sizeof hc, got2, 0, 0, 0);
            int ok1 = 0, s1 = 0, n1 = 0, ok2 = 0, s2 = 0, n2 = 0;
            for (int i = 0; i < N; i++) {
                ok1 += got[i] == ha[i] + hb[i], s1 += got[i] == -1.0f, n1 += got[i] != got[i];
                ok2 += got2[i] == ha[i] * 0.5f, s2 += got2[i] == -1.0f, n2 += got2[i] != got2[i];
            }
            out("verify %d vadd rc=%d wait=%d ok=%d sentinel=%d nan=%d", r, rc1, wrc, ok1, s1, n1);
            out("verify %d vscale rc=%d ok=%d sentinel=%d nan=%d", r, rc2, ok2, s2, n2);
            int nan, diff, bits;
            for (int i = 0; i < N; i++)
                want[i] = 0.25f * i + r;
            cl_int rc = p_clEnqueueWriteBuffer(q, d, CL_FALSE, 0, sizeof want, want, 0, 0, 0);
            p_clFinish(q);
            p_clEnqueueReadBuffer(q, d, CL_TRUE, 0, sizeof got, got, 0, 0, 0);
            compare(got, want, N, &nan, &diff, &bits);
            out("verify %d write rc=%d nan=%d diff=%d bits=%d", r, rc, nan, diff, bits);
            rc = p_clEnqueueCopyBuffer(q, d, e, 0, 0, sizeof got, 0, 0, 0);
            p_clFinish(q);
            p_clEnqueueReadBuffer(q, e, CL_TRUE, 0, sizeof got2, got2, 0, 0, 0);
            compare(got2, got, N, &nan, &diff, &bits);
            out("verify %d copy rc=%d nan=%d diff=%d bits=%d", r, rc, nan, diff, bits);
            for (int i = 0; i < IW; i++)
                img_want[i] = 1.0f + i + 0.125f * r;
            rc = p_clEnqueueWriteImage(q, m, CL_TRUE, origin, region, 0, 0, img_want, 0, 0, 0);
            p_clEnqueueReadImage(q, m, CL_TRUE, origin, region, 0, 0, img_got, 0, 0, 0);
            compare(img_got, img_want, IW, &nan, &diff, &bits);
            out("verify %d wimage rc=%d nan=%d diff=%d bits=%d", r, rc, nan, diff, bits);
            rc = p_clEnqueueCopyImage(q, m, m2, origin, origin, region, 0, 0, 0);
            p_clFinish(q);
            p_clEnqueueReadImage(q, m2, CL_TRUE, origin, region, 0, 0, img_got2, 0, 0, 0);
            compare(img_got2, img_got, IW, &nan, &diff, &bits);
            out("verify %d cimage rc=%d nan=%d diff=%d bits=%d", r, rc, nan, diff, bits);
            float *mp = p_clEnqueueMapBuffer(q, d, CL_TRUE, CL_MAP_WRITE, 0, sizeof want, 0, 0, 0, &err);
            for (int i = 0; mp && i < N; i++)
                want[i] = mp[i] = -0.5f * i - r;
            rc = mp ? p_clEnqueueUnmapMemObject(q, d, mp, 0, 0, 0) : err;
            p_clFinish(q);
            p_clEnqueueReadBuffer(q, d, CL_TRUE, 0, sizeof got, got, 0, 0, 0);
            compare(got, want, N, &nan, &diff, &bits);
            out("verify %d unmap rc=%d nan=%d diff=%d bits=%d", r, rc, nan, diff, bits);
        }
        p_clReleaseMemObject(m2);
        p_clReleaseMemObject(m);
        p_clReleaseMemObject(e);
        p_clReleaseMemObject(d);
        p_clReleaseMemObject(c2);
        p_clReleaseKernel(vs);
        p_clReleaseProgram(vprog);
    }
    if (probe_param >= 0) {
        char one[1];
        err = p_clGetDeviceInfo(dev, (cl_device_info)probe_param, 1, one, 0);
        out("probe 0x%lx %d", probe_param, err);
    }
    err = p_clEnqueueReadBuffer(q, c, CL_TRUE, 0, sizeof hc, hc, 0, 0, 0);
    out("clEnqueueReadBuffer %d check=%d", err, err == 0 && hc[10] == 30.0f);

    if (bad) {
        cl_program bp = p_clCreateProgramWithSource(ctx, 1, &BAD_SRC, 0, &err);
        err = p_clBuildProgram(bp, 1, &dev, "-DSOAK_BAD=1", 0, 0);
        out("clBuildProgram bad %d", err);
        p_clReleaseProgram(bp);
    }

    if (errors) {
        cl_mem z = p_clCreateBuffer(ctx, CL_MEM_READ_WRITE, 0, 0, &err);
        out("observed clCreateBuffer %d", err);
        if (z)
            p_clReleaseMemObject(z);
        cl_kernel nk = p_clCreateKernel(prog, "no_such_kernel", &err);
        out("observed clCreateKernel %d", err);
        (void)nk;
        err = p_clSetKernelArg(k, 99, sizeof a, &a);
        out("observed clSetKernelArg %d", err);
        cl_uint dummy;
        err = p_clGetDeviceInfo(dev, 0xdead, sizeof dummy, &dummy, 0);
        out("observed clGetDeviceInfo %d", err);
        err = p_clReleaseMemObject(NULL);
        out("observed clReleaseMemObject %d", err);
        /* errcode_ret NULL: the interposer must still see the error */
        p_clCreateKernel(prog, "no_such_kernel_2", NULL);
        out("observed clCreateKernel %d", CL_INVALID_KERNEL_NAME);
    }

    for (int i = 0; i < maps; i++) {
        void *p = p_clEnqueueMapBuffer(q, c, CL_TRUE, CL_MAP_READ, 0, 256, 0, 0, 0, &err);
        out("clEnqueueMapBuffer %d %d", i + 1, err);
        if (p)
            p_clEnqueueUnmapMemObject(q, c, p, 0, 0, 0);
    }
    p_clFinish(q);

    if (sleep_ms) {
        struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, 0);
    }
    size_t leaked = 0;
    for (int i = 0; i < leak; i++) {
        size_t sz = 4096 + 1000 * (size_t)i;
        cl_mem m = p_clCreateBuffer(ctx, CL_MEM_READ_WRITE, sz, 0, &err);
        out("leak %d %d", i + 1, err);
        if (m)
            leaked += sz;
    }
    if (leak)
        out("leaked %d %zu", leak, leaked);

    if (svm) {
        void *s = p_clSVMAlloc(ctx, CL_MEM_READ_WRITE, svm, 0);
        out("clSVMAlloc %d", s != NULL);
        if (s && !leak_svm)
            p_clSVMFree(ctx, s);
    }

    cl_mem *kept = alloc_n ? calloc((size_t)alloc_n, sizeof *kept) : 0;
    for (int i = 0; i < alloc_n; i++) {
        kept[i] = p_clCreateBuffer(ctx, CL_MEM_READ_WRITE, alloc_size, 0, &err);
        out("alloc %d %d", i + 1, err);
    }

    if (ext) {
        typedef cl_int(CL_API_CALL * icd_fn)(cl_uint, cl_platform_id *, cl_uint *);
        icd_fn f = (icd_fn)p_clGetExtensionFunctionAddressForPlatform(platform, "clIcdGetPlatformIDsKHR");
        void *direct = dlsym(lib, "clIcdGetPlatformIDsKHR");
        cl_uint n = 0;
        cl_int e = f ? f(0, 0, &n) : -1;
        out("ext clIcdGetPlatformIDsKHR found=%d same_as_export=%d rc=%d n=%u", f != NULL,
            direct != NULL && (void *)f == direct, e, n);
        void *none = p_clGetExtensionFunctionAddressForPlatform(platform, "clNoSuchFunctionSOAK");
        out("ext unknown found=%d", none != NULL);
    }

    if (threads > 0) {
        pthread_t tids[64];
        thread_arg args[64];
        if (threads > 64)
            threads = 64;
        for (int i = 0; i < threads; i++) {
            args[i] = (thread_arg){ctx, platform, thread_calls, 0};
            pthread_create(&tids[i], 0, thread_main, &args[i]);
        }
        int failures = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(tids[i], 0);
            failures += args[i].failures;
        }
        out("threads %d %d failures=%d", threads, thread_calls, failures);
    }

    if (bench) {
        char name[256];
        double t0 = now_ns();
        for (int i = 0; i < bench; i++)
            p_clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof name, name, 0);
        double t1 = now_ns();
        for (int i = 0; i < bench; i++)
            p_clSetKernelArg(k, 0, sizeof a, &a);
        double t2 = now_ns();
        out("bench clGetPlatformInfo %.2f", (t1 - t0) / bench);
        out("bench clSetKernelArg %.2f", (t2 - t1) / bench);
    }

    if (hold_ms) {
        out("holding %d", hold_ms);
        struct timespec ts = {hold_ms / 1000, (hold_ms % 1000) * 1000000L};
        nanosleep(&ts, 0);
    }

    if (crash) {
        out("crashing %s", crash);
        if (!strcmp(crash, "abort"))
            abort();
        volatile int *volatile nowhere = 0;
        *nowhere = 1; /* a real SIGSEGV */
        raise(SIGSEGV);
        return 99;
    }

    for (int i = 0; i < alloc_n; i++)
        if (kept[i])
            p_clReleaseMemObject(kept[i]);
    free(kept);
    if (img)
        p_clReleaseMemObject(img);
    if (sub)
        p_clReleaseMemObject(sub);
    p_clReleaseMemObject(a);
    p_clReleaseMemObject(b);
    p_clReleaseMemObject(c);
    p_clReleaseKernel(k);
    p_clReleaseProgram(prog);
    p_clReleaseCommandQueue(q);
    p_clReleaseContext(ctx);
    out("done");
    return 0;
}
