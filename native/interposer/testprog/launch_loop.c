/* ns per clEnqueueNDRangeKernel through a library: the stub driver itself (stub_cl.c) or the
 * interposer in front of it (SOAK_CL_REAL_LIB=<stub>).  Launch-bound by construction: the
 * "driver" does nothing, so what is measured is the library's own cost per launch.
 *
 *   launch_loop LIB N [MODE] [REPEAT]
 *     MODE  plain: no event (default); event: the application asks for an event per launch and
 *           releases it; keep: like event, but every 97th event is held to the end of the run
           and released then (objects alive while others come and go); shapes: like plain,
           each kernel object with two work sizes in turn; grow: like plain, but the last of the
           16 kernels (an attention over a growing context) launches at 64 x (1 + t % 256) by 64
           work-items, t = the launch's round of 16 (one decode token); prefill: like plain, but
           every kernel launches at 64 x (1 + (7 w) % 29) by 64 work-items in window w (a prompt
           length per window; LAUNCH_LOOP_WINDOWS)
 *     16 kernel objects in turn; prints "ns_per_launch X" (best of REPEAT runs of N, default 5)
 *     and "launches L" (all of them)
 *   LAUNCH_LOOP_WINDOWS=W: through the interposer, each run of N is cut into W profile windows:
 *     the loop writes the next epoch into the stats file (SOAK_CL_STATS, %p = its pid) as soak's
 *     reader does after a poll (build with -I native/interposer for stats_layout.h) */
#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <stddef.h>
#include <unistd.h>

#include "stats_layout.h"

/* the stats file's epoch: the next profile window begins at the next call */
static void next_epoch(void)
{
    static int fd = -2;
    static uint64_t epoch;
    if (fd == -2) {
        const char *pat = getenv("SOAK_CL_STATS");
        char path[4096];
        size_t o = 0;
        for (const char *p = pat ? pat : ""; *p && o + 24 < sizeof path; p++)
            if (p[0] == '%' && p[1] == 'p')
                o += (size_t)snprintf(path + o, sizeof path - o, "%d", (int)getpid()), p++;
            else
                path[o++] = *p;
        path[o] = 0;
        fd = o ? open(path, O_RDWR) : -1;
    }
    epoch++;
    if (fd >= 0 && pwrite(fd, &epoch, sizeof epoch, offsetof(soak_stats_header, epoch)) != sizeof epoch)
        fd = -1;
}

typedef cl_int (*pfn_enqueue)(cl_command_queue, cl_kernel, cl_uint, const size_t *, const size_t *, const size_t *,
                              cl_uint, const cl_event *, cl_event *);
typedef cl_int (*pfn_event)(cl_event);
typedef cl_int (*pfn_queue)(cl_command_queue);

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: launch_loop LIB N [plain|event|keep|shapes|grow|prefill] [REPEAT]\n");
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "launch_loop: %s\n", dlerror());
        return 1;
    }
    long n = atol(argv[2]);
    const char *mode = argc > 3 ? argv[3] : "plain";
    int repeat = argc > 4 ? atoi(argv[4]) : 5;
    int keep = !strcmp(mode, "keep"), with_event = keep || !strcmp(mode, "event"), shapes = !strcmp(mode, "shapes");
    int grow = !strcmp(mode, "grow"), prefill = !strcmp(mode, "prefill");
    cl_event *held = keep ? calloc((size_t)n / 97 + 1, sizeof *held) : 0;
    long n_held = 0;
    pfn_enqueue enqueue = (pfn_enqueue)dlsym(h, "clEnqueueNDRangeKernel");
    pfn_event release = (pfn_event)dlsym(h, "clReleaseEvent");
    pfn_queue finish = (pfn_queue)dlsym(h, "clFinish");
    if (!enqueue || !release || !finish) {
        fprintf(stderr, "launch_loop: %s lacks clEnqueueNDRangeKernel/clReleaseEvent/clFinish\n", argv[1]);
        return 1;
    }
    cl_command_queue q = (cl_command_queue)(uintptr_t)0x5000;
    size_t gws[2][2] = {{1024, 64}, {512, 64}}, lws[2] = {64, 1};
    double best = 1e30;
    long launches = 0;
    const char *w = getenv("LAUNCH_LOOP_WINDOWS");
    long per_window = w && atol(w) > 0 ? n / atol(w) : 0;
    for (int r = 0; r < repeat; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            if (per_window && i && i % per_window == 0)
                next_epoch();
            cl_kernel k = (cl_kernel)(uintptr_t)(0x9000 + 16 * (i % 16));
            const size_t *g = gws[shapes ? (i / 16) & 1 : (i % 16) & 1];
            size_t gg[2] = {64 * (1 + (size_t)(i / 16) % 256), 64};
            if (grow)
                g = i % 16 == 15 ? gg : gws[0];
            size_t gp[2] = {64 * (1 + (size_t)(7 * (per_window ? i / per_window : 0)) % 29), 64};
            if (prefill)
                g = gp;
            cl_event ev = 0;
            if (enqueue(q, k, 2, 0, g, lws, 0, 0, with_event ? &ev : 0) != CL_SUCCESS)
                return 3;
            if (keep && i % 97 == 0)
                held[n_held++] = ev;
            else if (with_event)
                release(ev);
        }
        finish(q);
        for (; n_held > 0; n_held--)
            release(held[n_held - 1]);
        double per = (now_ns() - t0) / (double)n;
        if (per < best)
            best = per;
        launches += n;
    }
    printf("ns_per_launch %.1f\nlaunches %ld\n", best, launches);
    return 0;
}
