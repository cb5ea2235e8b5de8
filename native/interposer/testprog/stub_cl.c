/* A do-nothing OpenCL "driver" for measuring the interposer alone: every launch succeeds at
 * once, each event is a new address and complete when asked.  Not a conformant library: only
 * the entry points launch_loop.c and the interposer's launch path (profiling included) call.
 * Built by tests and benchmarks with `cc -shared -fPIC` (no CMake).
 *
 * Device times are made up but deterministic, so a profile can be checked against the truth:
 * launch i (from 0) of kernel object k "runs" from i * 100000 ns for
 *   stub_ns(k, i) = (1000 + 250 * ((k >> 4) % 16)) * (0.7 + 0.6 * u(i))   (u: a hash of i in [0, 1))
 * (clGetEventProfilingInfo START/END), plus STUB_ITEM_NS ns per 1024 work-items (default 0: time
 * independent of the size), plus STUB_COLD=P,NS's NS ns for launches i with i % P < 16 (the
 * first launch of each of 16 kernels in a window of P launches: a GPU's first kernels after a
 * phase change run a few us longer), times 1 + i / P for STUB_RAMP=P (the launches of window k
 * of P launches take k + 1 times as long: attention over a growing context at one work size).
 * STUB_NAMES=G: kernel object k is named by (k >> 4) % G (G objects share a name, as one GEMM
 * kernel serves several layers' projections of different depths); STUB_OBJ_ITEMS=1: the size
 * term is per object too, stub_ns(k, i) x (1 + items / 1024) (a GEMM: each projection's time
 * follows the prompt length).  STUB_EVENT_NS=N: a launch that returns an event spins N ns first,
 * as a GPU driver's event costs (NVIDIA: about 11 us).  STUB_PROFQ_NS=N: a launch on a queue that
 * profiles spins N ns more, event or not (a driver where a profiling queue slows every launch); the
 * application's queue (any handle but the twin's) profiles when STUB_QUEUE_PROFILING=1, the twin
 * queue soak makes beside it (clCreateCommandQueue*) always; markers and barriers succeed at once.
 * STUB_REPORT=PATH: at exit, one line "launches L profiled P markers M barriers B" (launches on a
 * queue that profiles). */
#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EVENT_BASE 0x100000
#define RING (1 << 16) /* launches remembered (kernel per launch): the interposer reads events sooner */
static uint64_t launches;
static uintptr_t ring_kernel[RING];
static double ring_items[RING];
static long event_ns = -1, profq_ns = -1;
static int app_profiles;
#define TWIN_QUEUE ((cl_command_queue)(uintptr_t)0x6000)
static uint64_t profiled, markers, barriers;
static double item_ns = -1, cold_ns;
static uint64_t cold_every, ramp_every;
static int obj_items, names = 26;

static void stub_config(void)
{
    const char *v = getenv("STUB_ITEM_NS");
    item_ns = v ? atof(v) : 0;
    v = getenv("STUB_OBJ_ITEMS");
    obj_items = v && atoi(v) == 1;
    v = getenv("STUB_NAMES");
    if (v && atoi(v) >= 1 && atoi(v) <= 26)
        names = atoi(v);
    v = getenv("STUB_RAMP");
    ramp_every = v ? strtoull(v, 0, 10) : 0;
    v = getenv("STUB_COLD");
    if (v && strchr(v, ',')) {
        cold_every = strtoull(v, 0, 10);
        cold_ns = atof(strchr(v, ',') + 1);
    }
}

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* the made-up device time of launch i of kernel object k over `items` work-items (see above) */
uint64_t stub_ns(uintptr_t k, uint64_t i, double items)
{
    if (item_ns < 0)
        stub_config();
    uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    double u = (double)(h % 1000000) / 1e6;
    double ns = (1000.0 + 250.0 * (double)((k >> 4) % 16)) * (0.7 + 0.6 * u) + item_ns * items / 1024;
    if (obj_items)
        ns *= 1.0 + items / 1024;
    if (ramp_every)
        ns *= 1.0 + (double)(i / ramp_every);
    if (cold_every && i % cold_every < 16)
        ns += cold_ns;
    return (uint64_t)ns;
}

static void queue_config(void)
{
    if (profq_ns >= 0)
        return;
    const char *v = getenv("STUB_PROFQ_NS");
    profq_ns = v ? atol(v) : 0;
    v = getenv("STUB_QUEUE_PROFILING");
    app_profiles = v && atoi(v) == 1;
}

cl_int clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *off, const size_t *gws,
                              const size_t *lws, cl_uint nwait, const cl_event *wait, cl_event *event)
{
    queue_config();
    if (q == TWIN_QUEUE || app_profiles)
        profiled++;
    if (profq_ns > 0 && (q == TWIN_QUEUE || app_profiles))
        for (uint64_t until = mono_ns() + (uint64_t)profq_ns; mono_ns() < until;)
            ;
    uint64_t i = launches++;
    ring_kernel[i % RING] = (uintptr_t)k;
    double items = 1;
    for (cl_uint d = 0; gws && d < dim; d++)
        items *= (double)gws[d];
    ring_items[i % RING] = items;
    if (event) { /* a new address each time, as a driver that never reuses one would give */
        if (event_ns < 0) {
            const char *v = getenv("STUB_EVENT_NS");
            event_ns = v ? atol(v) : 0;
        }
        if (event_ns > 0)
            for (uint64_t until = mono_ns() + (uint64_t)event_ns; mono_ns() < until;)
                ;
        *event = (cl_event)(EVENT_BASE + 64 * i);
    }
    return CL_SUCCESS;
}

cl_int clGetKernelInfo(cl_kernel k, cl_kernel_info param, size_t size, void *value, size_t *size_ret)
{
    if (item_ns < 0)
        stub_config();
    char name[16] = "kernel_";
    name[7] = (char)('a' + ((uintptr_t)k >> 4) % (uintptr_t)names);
    if (value && size > 8)
        memcpy(value, name, 9);
    if (size_ret)
        *size_ret = 9;
    return CL_SUCCESS;
}

cl_int clGetEventInfo(cl_event e, cl_event_info param, size_t size, void *value, size_t *size_ret)
{
    if (value && size >= sizeof(cl_int))
        *(cl_int *)value = CL_COMPLETE;
    if (size_ret)
        *size_ret = sizeof(cl_int);
    return CL_SUCCESS;
}

cl_int clGetEventProfilingInfo(cl_event e, cl_profiling_info param, size_t size, void *value, size_t *size_ret)
{
    uint64_t i = ((uintptr_t)e - EVENT_BASE) / 64;
    cl_ulong start = (cl_ulong)i * 100000;
    if (value && size >= sizeof(cl_ulong))
        *(cl_ulong *)value = param == CL_PROFILING_COMMAND_END ? start + stub_ns(ring_kernel[i % RING], i, ring_items[i % RING]) : start;
    if (size_ret)
        *size_ret = sizeof(cl_ulong);
    return CL_SUCCESS;
}

cl_int clRetainEvent(cl_event e) { return CL_SUCCESS; }
cl_int clReleaseEvent(cl_event e) { return CL_SUCCESS; }
cl_int clFinish(cl_command_queue q) { return CL_SUCCESS; }

/* queues: the application's (launch_loop's made-up handle) and the twin soak makes beside it */
cl_int clGetCommandQueueInfo(cl_command_queue q, cl_command_queue_info param, size_t size, void *value, size_t *size_ret)
{
    queue_config();
    uint64_t v = param == CL_QUEUE_PROPERTIES ? (q == TWIN_QUEUE || app_profiles ? CL_QUEUE_PROFILING_ENABLE : 0)
                 : param == CL_QUEUE_REFERENCE_COUNT ? 1 : 0x7000;
    if (value && param == CL_QUEUE_REFERENCE_COUNT && size >= sizeof(cl_uint))
        *(cl_uint *)value = 1;
    else if (value && size >= sizeof v)
        memcpy(value, &v, sizeof v);
    if (size_ret)
        *size_ret = param == CL_QUEUE_REFERENCE_COUNT ? sizeof(cl_uint) : sizeof v;
    return CL_SUCCESS;
}
cl_command_queue clCreateCommandQueueWithProperties(cl_context c, cl_device_id d, const cl_queue_properties *p,
                                                    cl_int *err)
{
    if (err)
        *err = CL_SUCCESS;
    return TWIN_QUEUE;
}
cl_int clReleaseCommandQueue(cl_command_queue q) { return CL_SUCCESS; }
cl_int clFlush(cl_command_queue q) { return CL_SUCCESS; }
cl_int clEnqueueMarkerWithWaitList(cl_command_queue q, cl_uint n, const cl_event *w, cl_event *event)
{
    if (event) /* never read for device times: another range than the launches' */
        *event = (cl_event)(uintptr_t)(0x40000000ull + 64 * markers);
    markers++;
    return CL_SUCCESS;
}
cl_int clEnqueueBarrierWithWaitList(cl_command_queue q, cl_uint n, const cl_event *w, cl_event *event)
{
    barriers++;
    return CL_SUCCESS;
}

__attribute__((destructor)) static void stub_report(void)
{
    const char *path = getenv("STUB_REPORT");
    FILE *f = path ? fopen(path, "w") : 0;
    if (!f)
        return;
    fprintf(f, "launches %llu profiled %llu markers %llu barriers %llu\n", (unsigned long long)launches,
            (unsigned long long)profiled, (unsigned long long)markers, (unsigned long long)barriers);
    fclose(f);
}
