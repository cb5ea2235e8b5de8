/* --cl-profile's twin queues (SOAK_CL_PROFILE_QUEUE=twin): the engine's queues stay as the engine
 * made them, and a command the profiler times goes, in order, to a twin of its queue that profiles.
 *
 * Why: on some drivers a queue created with CL_QUEUE_PROFILING_ENABLE may make every command on it
 * slower, timed or not, a cost the sampling cannot lower and the budget cannot see (its own host
 * time does not hold it).  On a twin only the timed commands pay, and the cost budget (profile.c)
 * sees what they pay: their host time includes the redirection.  What each way costs on a driver:
 * native/interposer/testprog/queue_cost.c and benchmarks/gpu/profile_cost.sh (arms profile and
 * profile-twin).
 *
 * A timed command on engine queue Q (created without profiling):
 *   clEnqueueMarkerWithWaitList(Q) -> m; clFlush(Q)       everything enqueued on Q before it is done
 *   the command on twin T, waiting for m (and the engine's wait list), with an event; clFlush(T)
 *   clEnqueueBarrierWithWaitList(Q, that event)           nothing later on Q starts before it ends
 * so the engine's order is kept, and the event (the engine's, when it asked for one) has device times.
 * The flushes are the OpenCL rule for waiting on another queue's event.  A queue the engine created
 * with profiling on is timed in place (as MNN's tuning queue is); with SOAK_CL_PROFILE_SAMPLE=1
 * (every command timed: the twin would only add work) the engine's queues profile.  A twin is made at the first command timed on its queue
 * (same context, device and out-of-order setting) and released when its queue goes away. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "soak_interposer.h"

int soak_twin_on;

#define TWIN_MAX 64 /* engine queues with a twin (or timed in place) at once */
typedef struct {
    cl_command_queue q, twin;
    int in_place; /* q profiles itself */
} twin_entry;
static twin_entry table[TWIN_MAX];
static pthread_mutex_t tlock = PTHREAD_MUTEX_INITIALIZER;

typedef cl_int(CL_API_CALL *pfn_qinfo)(cl_command_queue, cl_command_queue_info, size_t, void *, size_t *);
typedef cl_command_queue(CL_API_CALL *pfn_create_props)(cl_context, cl_device_id, const cl_queue_properties *,
                                                        cl_int *);
typedef cl_command_queue(CL_API_CALL *pfn_create)(cl_context, cl_device_id, cl_command_queue_properties, cl_int *);
typedef cl_int(CL_API_CALL *pfn_queue1)(cl_command_queue);
typedef cl_int(CL_API_CALL *pfn_mark)(cl_command_queue, cl_uint, const cl_event *, cl_event *);
typedef cl_int(CL_API_CALL *pfn_event1)(cl_event);

void soak_twin_init(int sampled)
{
    const char *v = getenv("SOAK_CL_PROFILE_QUEUE");
    if (v && *v && strcmp(v, "twin") != 0 && strcmp(v, "engine") != 0)
        fprintf(stderr, "soak-interposer: SOAK_CL_PROFILE_QUEUE=%s: not twin or engine; timing on the engine's "
                        "queues\n", v);
    soak_twin_on = sampled && v && strcmp(v, "twin") == 0;
}

/* q's entry (made when absent: its twin, or in place when q profiles itself); tlock held */
static twin_entry *entry_of(cl_command_queue q)
{
    twin_entry *free_e = 0;
    for (int i = 0; i < TWIN_MAX; i++) {
        if (table[i].q == q)
            return &table[i];
        if (!table[i].q && !free_e)
            free_e = &table[i];
    }
    if (!free_e)
        return 0;
    pfn_qinfo info = (pfn_qinfo)soak_real_fn(SOAK_ID_clGetCommandQueueInfo);
    cl_context ctx = 0;
    cl_device_id dev = 0;
    cl_command_queue_properties props = 0;
    if (!info || info(q, CL_QUEUE_CONTEXT, sizeof ctx, &ctx, 0) != CL_SUCCESS ||
        info(q, CL_QUEUE_DEVICE, sizeof dev, &dev, 0) != CL_SUCCESS ||
        info(q, CL_QUEUE_PROPERTIES, sizeof props, &props, 0) != CL_SUCCESS)
        return 0;
    free_e->q = q;
    free_e->twin = 0;
    free_e->in_place = (props & CL_QUEUE_PROFILING_ENABLE) != 0;
    if (free_e->in_place)
        return free_e;
    cl_command_queue_properties want = (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) | CL_QUEUE_PROFILING_ENABLE;
    pfn_create_props create2 = (pfn_create_props)soak_real_fn(SOAK_ID_clCreateCommandQueueWithProperties);
    pfn_create create1 = (pfn_create)soak_real_fn(SOAK_ID_clCreateCommandQueue);
    cl_int err = CL_INVALID_OPERATION;
    if (create2) {
        cl_queue_properties p[] = {CL_QUEUE_PROPERTIES, want, 0};
        free_e->twin = create2(ctx, dev, p, &err);
    }
    if (!free_e->twin && create1)
        free_e->twin = create1(ctx, dev, want, &err);
    if (!free_e->twin)
        fprintf(stderr, "soak-interposer: no profiling queue beside the engine's (error %d): its commands go "
                        "untimed\n", err);
    return free_e;
}

cl_command_queue soak_twin_enter(soak_call *c, cl_command_queue q, cl_uint *nw, const cl_event **wl, cl_event *buf,
                                 cl_event *mark)
{
    *mark = 0;
    c->twin_t0 = c->id == SOAK_ID_clEnqueueNDRangeKernel ? 0 : soak_now_ns();
    pthread_mutex_lock(&tlock);
    twin_entry *e = entry_of(q);
    cl_command_queue t = !e ? 0 : e->in_place ? q : e->twin;
    pthread_mutex_unlock(&tlock);
    if (!t || t == q) {
        c->twin_t0 = 0;
        return t;
    }
    if (*nw >= SOAK_TWIN_WAIT_MAX)
        return c->twin_t0 = 0, (cl_command_queue)0; /* a long wait list: untimed */
    pfn_mark marker = (pfn_mark)soak_real_fn(SOAK_ID_clEnqueueMarkerWithWaitList);
    pfn_queue1 flush = (pfn_queue1)soak_real_fn(SOAK_ID_clFlush);
    if (!marker || !flush || marker(q, 0, 0, mark) != CL_SUCCESS || !*mark)
        return *mark = 0, c->twin_t0 = 0, (cl_command_queue)0;
    flush(q);
    for (cl_uint i = 0; i < *nw; i++)
        buf[i] = (*wl)[i];
    buf[(*nw)++] = *mark;
    *wl = buf;
    return t;
}

void soak_twin_leave(soak_call *c, cl_command_queue q, cl_command_queue t, cl_event ev, cl_event mark)
{
    pfn_queue1 flush = (pfn_queue1)soak_real_fn(SOAK_ID_clFlush);
    pfn_mark barrier = (pfn_mark)soak_real_fn(SOAK_ID_clEnqueueBarrierWithWaitList);
    pfn_event1 release = (pfn_event1)soak_real_fn(SOAK_ID_clReleaseEvent);
    flush(t);
    /* the command failed (no event): the engine gets its error, Q needs to wait for nothing */
    if (ev && barrier)
        barrier(q, 1, &ev, 0);
    if (release)
        release(mark);
    /* a transfer's redirection is the profiler's cost (a kernel launch's is in its timed host time) */
    if (c->twin_t0)
        soak_prof_twin_cost(soak_now_ns() - c->twin_t0);
}

void soak_twin_forget(cl_command_queue q)
{
    pfn_qinfo info = (pfn_qinfo)soak_real_fn(SOAK_ID_clGetCommandQueueInfo);
    cl_uint refs = 0;
    if (!info || info(q, CL_QUEUE_REFERENCE_COUNT, sizeof refs, &refs, 0) != CL_SUCCESS || refs != 1)
        return; /* not its last reference: the queue stays */
    pfn_queue1 release = (pfn_queue1)soak_real_fn(SOAK_ID_clReleaseCommandQueue);
    pthread_mutex_lock(&tlock);
    for (int i = 0; i < TWIN_MAX; i++)
        if (table[i].q == q) {
            if (table[i].twin && release)
                release(table[i].twin); /* its commands finish first (the driver keeps them) */
            memset(&table[i], 0, sizeof table[i]);
        }
    pthread_mutex_unlock(&tlock);
}
