/* queue_cost: what timing a kernel launch costs on this OpenCL device, each way the profiler can
 * (issue 27: on an NVIDIA H100 a queue created with CL_QUEUE_PROFILING_ENABLE made every launch
 * slower, timed or not).  No soak in between: it loads OpenCL as MNN does (dlopen, dlsym; CL_WORKLOAD_LIB
 * overrides "libOpenCL.so").
 *
 *   queue_cost [--launches K] [--steps S] [--rounds R] [--every N] [--kernels M] [--size G]
 *
 * Each step enqueues K launches of M tiny kernels in turn (global size G) and ends with clFinish;
 * the arms run interleaved, R rounds of S steps each, and each arm's figure is the median step:
 *   plain   a queue without profiling, no events
 *   profq   a queue with CL_QUEUE_PROFILING_ENABLE, no events (what the profiling queue costs alone)
 *   event   the profiling queue, an event on 1 launch in N (read after clFinish, released)
 *   twin    the plain queue; 1 launch in N goes to a second queue of the same device with profiling on,
 *           in order: a marker on the plain queue, flushed; the launch on the twin waiting for it, with an
 *           event, flushed; a barrier on the plain queue waiting for that event
 * The kernels form one chain (x = x * 3 + k, in 32-bit integers: the order of launches changes the result),
 * read back after each step and compared with the host's: a twin that broke the order shows as
 * "order_errors".  Prints "result <arm> ns_per_launch=... timed_mean_ns=... order_errors=..." per arm,
 * then the arms' ratios against plain.  benchmarks/gpu/profile_cost.sh runs it first.
 *
 * NVIDIA H100 80GB HBM3, driver 580.159.04, 2026-12-07 (--launches 4000 --steps 5 --rounds 5 --every 32):
 *   global 1024:  plain 3084.5 ns per launch, profq 3022.7 (x1.020), event +7.0 us and twin +11.3 us
 *                 per timed launch; device time of the timed kernel 4965 ns (event) and 4925 ns (twin)
 *   global 65536: plain 3099.2, profq 3120.1 (x0.993), event +6.7 us, twin +11.8 us per timed launch
 * A profiling queue costs untimed launches nothing there, so --cl-profile times in place (profile.c);
 * a twin would add 4.5 us to each timed launch. */
#define _GNU_SOURCE
#define CL_TARGET_OPENCL_VERSION 300
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FUNCS(X)                                                                                             \
    X(clGetPlatformIDs) X(clGetDeviceIDs) X(clGetDeviceInfo) X(clCreateContext) X(clCreateCommandQueue)       \
    X(clCreateBuffer) X(clCreateProgramWithSource) X(clBuildProgram) X(clCreateKernel) X(clSetKernelArg)       \
    X(clEnqueueNDRangeKernel) X(clEnqueueReadBuffer) X(clEnqueueWriteBuffer) X(clFinish) X(clFlush)           \
    X(clEnqueueMarkerWithWaitList) X(clEnqueueBarrierWithWaitList) X(clGetEventProfilingInfo)               \
    X(clReleaseEvent)
#define DECLARE(name) static __typeof__(name) *p_##name;
FUNCS(DECLARE)

enum { PLAIN, PROFQ, EVENT, TWIN, ARMS };
static const char *arm_name[ARMS] = {"plain", "profq", "event", "twin"};

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    int launches = 4000, steps = 6, rounds = 5, every = 64, nk = 32;
    size_t size = 1024;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i];
        long v = atol(argv[i + 1]);
        if (!strcmp(a, "--launches")) launches = (int)v;
        else if (!strcmp(a, "--steps")) steps = (int)v;
        else if (!strcmp(a, "--rounds")) rounds = (int)v;
        else if (!strcmp(a, "--every")) every = (int)v;
        else if (!strcmp(a, "--kernels")) nk = (int)v;
        else if (!strcmp(a, "--size")) size = (size_t)v;
        else {
            fprintf(stderr, "queue_cost: unknown option %s\n", a);
            return 64;
        }
    }
    if (launches < 1 || steps < 1 || rounds < 1 || every < 1 || nk < 1 || nk > 256 || size < 1 || size > 1 << 20) {
        fprintf(stderr, "queue_cost: --launches, --steps, --rounds, --every >= 1; --kernels 1..256; --size 1..1048576\n");
        return 64;
    }
    const char *libname = getenv("CL_WORKLOAD_LIB") ? getenv("CL_WORKLOAD_LIB") : "libOpenCL.so";
    void *lib = dlopen(libname, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("result error dlopen %s\n", dlerror());
        return 2;
    }
#define LOAD(name)                                                                                           \
    if (!(p_##name = (__typeof__(name) *)dlsym(lib, #name))) {                                                \
        printf("result error missing %s\n", #name);                                                          \
        return 2;                                                                                            \
    }
    FUNCS(LOAD)
    cl_platform_id plat;
    cl_device_id dev;
    cl_uint n = 0;
    cl_int err;
    if (p_clGetPlatformIDs(1, &plat, &n) || !n || p_clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 1, &dev, &n) || !n) {
        printf("result error no OpenCL device\n");
        return 3;
    }
    char dname[256] = "";
    p_clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof dname, dname, 0);
    printf("device %s\n", dname);
    cl_context ctx = p_clCreateContext(0, 1, &dev, 0, 0, &err);
    cl_command_queue plain = p_clCreateCommandQueue(ctx, dev, 0, &err);
    cl_command_queue profq = p_clCreateCommandQueue(ctx, dev, CL_QUEUE_PROFILING_ENABLE, &err);
    cl_command_queue twin = p_clCreateCommandQueue(ctx, dev, CL_QUEUE_PROFILING_ENABLE, &err);
    if (!plain || !profq || !twin) {
        printf("result error clCreateCommandQueue %d\n", err);
        return 4;
    }
    size_t cap = (size_t)nk * 96 + 1;
    char *src = malloc(cap), *o = src;
    for (int k = 0; k < nk; k++)
        o += snprintf(o, cap - (size_t)(o - src),
                      "__kernel void c%d(__global uint *x) { size_t i = get_global_id(0); x[i] = x[i] * 3u + %du; }\n",
                      k, k + 1);
    const char *csrc = src;
    cl_program prog = p_clCreateProgramWithSource(ctx, 1, &csrc, 0, &err);
    if ((err = p_clBuildProgram(prog, 1, &dev, "", 0, 0))) {
        printf("result error clBuildProgram %d\n", err);
        return 5;
    }
    cl_uint *host = calloc(size, sizeof *host), *back = calloc(size, sizeof *back);
    cl_mem x = p_clCreateBuffer(ctx, CL_MEM_READ_WRITE, size * sizeof *host, 0, &err);
    cl_kernel *ks = calloc((size_t)nk, sizeof *ks);
    for (int k = 0; k < nk; k++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", k);
        ks[k] = p_clCreateKernel(prog, name, &err);
        p_clSetKernelArg(ks[k], 0, sizeof x, &x);
    }
    cl_event *evs = calloc((size_t)launches, sizeof *evs);
    double *ns[ARMS], timed_sum[ARMS] = {0};
    long timed_n[ARMS] = {0}, order_errors[ARMS] = {0};
    for (int a = 0; a < ARMS; a++)
        ns[a] = calloc((size_t)(rounds * steps), sizeof(double));
    for (int r = 0; r < rounds; r++)
        for (int a = 0; a < ARMS; a++)
            for (int s = 0; s < steps; s++) {
                cl_command_queue q = a == PROFQ || a == EVENT ? profq : plain;
                memset(host, 0, size * sizeof *host);
                p_clEnqueueWriteBuffer(q, x, CL_TRUE, 0, size * sizeof *host, host, 0, 0, 0);
                int ne = 0;
                double t0 = now_ns();
                for (int i = 0; i < launches; i++) {
                    cl_kernel k = ks[i % nk];
                    int pick = (a == EVENT || a == TWIN) && i % every == every / 2;
                    if (!pick) {
                        p_clEnqueueNDRangeKernel(q, k, 1, 0, &size, 0, 0, 0, 0);
                    } else if (a == EVENT) {
                        p_clEnqueueNDRangeKernel(q, k, 1, 0, &size, 0, 0, 0, &evs[ne++]);
                    } else {
                        cl_event m = 0;
                        p_clEnqueueMarkerWithWaitList(q, 0, 0, &m);
                        p_clFlush(q);
                        p_clEnqueueNDRangeKernel(twin, k, 1, 0, &size, 0, 1, &m, &evs[ne]);
                        p_clFlush(twin);
                        p_clEnqueueBarrierWithWaitList(q, 1, &evs[ne++], 0);
                        p_clReleaseEvent(m);
                    }
                }
                p_clFinish(q);
                ns[a][r * steps + s] = (now_ns() - t0) / launches;
                for (int e = 0; e < ne; e++) {
                    cl_ulong t1 = 0, t2 = 0;
                    if (!p_clGetEventProfilingInfo(evs[e], CL_PROFILING_COMMAND_START, sizeof t1, &t1, 0) &&
                        !p_clGetEventProfilingInfo(evs[e], CL_PROFILING_COMMAND_END, sizeof t2, &t2, 0) && t2 >= t1) {
                        timed_sum[a] += (double)(t2 - t1);
                        timed_n[a]++;
                    }
                    p_clReleaseEvent(evs[e]);
                }
                p_clEnqueueReadBuffer(q, x, CL_TRUE, 0, size * sizeof *back, back, 0, 0, 0);
                for (int i = 0; i < launches; i++) /* the chain on the host */
                    host[0] = host[0] * 3u + (cl_uint)(i % nk + 1);
                for (size_t j = 0; j < size; j++)
                    order_errors[a] += back[j] != host[0];
            }
    double med[ARMS];
    for (int a = 0; a < ARMS; a++) {
        qsort(ns[a], (size_t)(rounds * steps), sizeof(double), by_double);
        med[a] = ns[a][rounds * steps / 2];
        printf("result %s ns_per_launch=%.1f min=%.1f max=%.1f timed=%ld timed_mean_ns=%.0f order_errors=%ld\n",
               arm_name[a], med[a], ns[a][0], ns[a][rounds * steps - 1], timed_n[a],
               timed_n[a] ? timed_sum[a] / timed_n[a] : 0.0, order_errors[a]);
    }
    printf("%d launches per step of %d kernels (global %zu), %d steps x %d rounds, 1 in %d timed:\n", launches, nk, size,
           steps, rounds, every);
    for (int a = 1; a < ARMS; a++)
        printf("  %-6s %+7.1f ns per launch against plain (x%.3f)%s\n", arm_name[a], med[a] - med[PLAIN],
               med[PLAIN] / med[a],
               a == EVENT || a == TWIN ? "" : "  <- the profiling queue alone");
    for (int a = EVENT; a <= TWIN; a++)
        printf("  %-6s %.1f us per timed launch beyond %s\n", arm_name[a], (med[a] - med[a == TWIN ? PLAIN : PROFQ]) * every / 1000,
               a == TWIN ? "plain" : "profq");
    return 0;
}
