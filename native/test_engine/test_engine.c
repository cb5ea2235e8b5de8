/*
 * soak's fault-injecting test engine.
 *
 * Implements soak_engine.h with realistic text and timing and no
 * dependencies.  A fault plan in its config file makes it fail the way
 * MNN-LLM fails on real GPUs: it prints MNN's exact log lines through
 * printf, enters MNN's sticky error state, crashes, hangs, leaks, emits
 * garbage, slows down or falls back to the CPU.  See FAULTS.md.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#include <time.h>

#include "../include/soak_engine.h"
#include "crash_sites.h"
#include "foreign_handler.h"
#include "json.h"
#include "opencl_path.h"

#define MAX_FAULTS 64

typedef enum {
    F_CL_ERROR, F_LOG, F_STICKY_ERROR, F_KV_MAP_ERROR, F_CRASH, F_HANG, F_LEAK,
    F_GARBAGE, F_REPEAT, F_INVALID_UTF8, F_EMPTY, F_SLOW, F_CPU_FALLBACK, F_FAIL_LOAD, F_GPU_LEAK, F_OOM_KILL,
    F_ALLOC_FAIL, F_LOGITS_NOISE, F_LOGITS_NONFINITE, F_LOGITS_STALE, F_SIGNAL_HANDLER, F_UNKNOWN
} fault_kind;

static const char *KIND_NAMES[] = {
    "cl_error", "log", "sticky_error", "kv_map_error", "crash", "hang", "leak",
    "garbage", "repeat", "invalid_utf8", "empty", "slow", "cpu_fallback", "fail_load", "gpu_leak", "oom_kill",
    "alloc_fail", "logits_noise", "logits_nonfinite", "logits_stale", "signal_handler", NULL
};

typedef struct {
    fault_kind kind;
    const json_value *spec;
    long *at; /* every entry of the plan's "at" list (no limit) */
    int n_at;
    long every, from, until;
    double probability;
    double after_s;
    long context_over;
    long turns_before, resets_before, prompt_over; /* engine-state conditions (FAULTS.md) */
    long step, steps; /* logits faults: the turn's steps they hit (step 0 = the prefill's logits) */
    char phase[16];
} fault;

/* The synthetic model behind forward() (FAULTS.md, "Logits"): the vocabulary
 * is a stop token, the engine's words and the 256 bytes (plus numbered
 * tokens up to vocab_size); the logits are a seeded hash of the history since
 * the last reset (what a KV cache holds: every earlier turn of the
 * conversation, forward or respond), the turn's input ids, its last three
 * tokens and the step, so every run, process and machine gets the same
 * numbers for the same history, and a turn after reset() is a fresh one. */
#define STOP_ID 0
#define LOGITS_CONTEXT 3
static uint64_t mix64(uint64_t h, uint64_t v);

typedef struct {
    int32_t vocab;
    char (*text)[24];  /* token bytes */
    uint8_t *text_len;
    float *logits, *previous;
    int has_previous;
    int32_t *ids;      /* tokenize() output */
    size_t ids_cap;
    int in_turn;
    uint64_t prompt_hash;
    uint64_t history;      /* hash of every token fed since the last reset (0: none) */
    uint64_t turn_history; /* history as the turn began */
    int32_t last[LOGITS_CONTEXT];
    long step;         /* forwards in this turn: 0 = the prefill */
    uint64_t turn_faults; /* faults that act on this turn's logits (bit k = fault k) */
    long hang_step;    /* hang after_tokens: the step it hangs at (-1: none) */
    const void *hang_f;
    double slow;
} synth_model;

struct soak_engine {
    json_value *config;
    char backend[32];
    fault faults[MAX_FAULTS];
    int n_faults;
    uint64_t rng;         /* from the seed; never advanced, so draws don't depend on history */
    long iteration;       /* set by soak through set_config {"soak_iteration": N}; -1 = probe */
    long calls;
    int status;
    int loaded;
    long history_tokens;
    long conv_turns;      /* soak turns (iteration >= 0) since create or the last reset */
    long resets;          /* reset() calls since create */
    long prompt_tokens;   /* the prompt of the call in progress (-1: none) */
    /* A memory pool that keeps its high-water mark (config "kv_pool_bytes_per_token"): host
     * memory for the longest context seen, never given back at reset, as MNN's pools keep it. */
    double pool_bpt;
    unsigned char *pool;
    size_t pool_bytes;
    long context_len;
    double prefill_tps, decode_tps, stop_p;
    int zero_work;
    int echo; /* output = the prompt bytes, to prove prompts arrive intact */
    int use_opencl; /* config "opencl": real OpenCL calls when the backend is opencl */
    const char *cl_vendor; /* config "cl_vendor": mimic that vendor's init probe errors */
    /* A failed allocation at load that MNN did not stop on: every later call runs
     * on a null buffer (cascade of CL errors, Map error lines, garbage, normal status). */
    int null_buffer;
    int cascade_code;
    cl_path *cl;
    struct timespec created;
    soak_perf perf;
    int64_t load_us_total;
    synth_model m;
};

static const char *WORDS[] = {
    "the", "model", "runs", "on", "a", "small", "phone", "and", "answers", "in", "time", "while",
    "kernels", "build", "once", "then", "cache", "memory", "grows", "slowly", "during", "long",
    "nights", "of", "testing", "GPU", "drivers", "report", "errors", "we", "measure", "every",
    "token", "你好", "世界", "模型", "推理", "内存", "🙂", "🚀", "queue", "context", "buffer",
    "image", "decode", "prefill", "stable", "fast", "slow", "again", ".", ",", "!", "?",
};
#define N_WORDS (sizeof(WORDS) / sizeof(WORDS[0]))

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) / 9007199254740992.0; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
}

static fault_kind kind_of(const char *name) {
    for (int i = 0; KIND_NAMES[i]; i++)
        if (!strcmp(KIND_NAMES[i], name)) return (fault_kind)i;
    return F_UNKNOWN;
}

static int parse_faults(soak_engine *e, char *err, size_t err_len) {
    const json_value *list = json_get(e->config, "faults");
    if (!list) return 0;
    if (list->type != JSON_ARRAY) { snprintf(err, err_len, "\"faults\" must be a list"); return -1; }
    for (const json_value *f = list->child; f; f = f->next) {
        if (e->n_faults == MAX_FAULTS) { snprintf(err, err_len, "more than %d faults", MAX_FAULTS); return -1; }
        fault *x = &e->faults[e->n_faults];
        memset(x, 0, sizeof(*x));
        const char *k = json_string(f, "kind", "");
        x->kind = kind_of(k);
        if (x->kind == F_UNKNOWN) { snprintf(err, err_len, "fault %d: unknown kind \"%s\"", e->n_faults, k); return -1; }
        x->spec = f;
        const char *site = json_string(f, "in", NULL);
        if (x->kind == F_CRASH && site && !crash_site_known(site)) {
            snprintf(err, err_len, "fault %d: crash \"in\" names no crash site: \"%s\" (one of %s)", e->n_faults,
                     site, crash_site_names());
            return -1;
        }
        double threads = json_number(f, "threads", 1);
        if (x->kind == F_CRASH && (threads < 1 || threads > 64)) {
            snprintf(err, err_len, "fault %d: crash \"threads\" must be between 1 and 64", e->n_faults);
            return -1;
        }
        const json_value *at = json_get(f, "at");
        if (at && at->type != JSON_NUMBER && at->type != JSON_ARRAY) {
            snprintf(err, err_len, "fault %d: \"at\" must be an iteration or a list of iterations", e->n_faults);
            return -1;
        }
        if (at) {
            size_t n = 1;
            if (at->type == JSON_ARRAY) { n = 0; for (const json_value *a = at->child; a; a = a->next) n++; }
            x->at = calloc(n ? n : 1, sizeof(long));
            if (!x->at) { snprintf(err, err_len, "fault %d: \"at\" list too long", e->n_faults); return -1; }
            if (at->type == JSON_NUMBER) x->at[x->n_at++] = (long)at->number;
            else
                for (const json_value *a = at->child; a; a = a->next) {
                    if (a->type != JSON_NUMBER) {
                        snprintf(err, err_len, "fault %d: \"at\" entries must be iterations (numbers)", e->n_faults);
                        return -1;
                    }
                    x->at[x->n_at++] = (long)a->number;
                }
        }
        x->every = (long)json_number(f, "every", 0);
        x->from = (long)json_number(f, "from", -1);
        x->until = (long)json_number(f, "until", -1);
        x->probability = json_number(f, "probability", -1);
        x->after_s = json_number(f, "after_s", -1);
        x->context_over = (long)json_number(f, "context_over", -1);
        x->turns_before = (long)json_number(f, "turns_before", -1);
        x->resets_before = (long)json_number(f, "resets_before", -1);
        x->prompt_over = (long)json_number(f, "prompt_over", -1);
        x->step = (long)json_number(f, "step", 0);
        x->steps = (long)json_number(f, "steps", -1);
        if (x->step < 0) { snprintf(err, err_len, "fault %d: \"step\" must be >= 0", e->n_faults); return -1; }
        const char *default_phase = (x->kind == F_FAIL_LOAD || x->kind == F_CPU_FALLBACK || x->kind == F_ALLOC_FAIL ||
                                     x->kind == F_SIGNAL_HANDLER) ? "load" : "decode";
        snprintf(x->phase, sizeof(x->phase), "%s", json_string(f, "phase", default_phase));
        e->n_faults++;
    }
    return 0;
}

/* The probability draw of fault f at iteration i: a pure function of (seed,
 * fault, phase, iteration), so a restarted worker does not replay the same
 * sequence from its first draw, and each iteration's verdict is the same
 * whatever happened before it. */
static double draw(const soak_engine *e, const fault *f, const char *phase, long i) {
    uint64_t s = e->rng ^ ((uint64_t)(f - e->faults) * 0xD1B54A32D192ED03ull);
    for (const char *c = phase; *c; c++) s = (s ^ (unsigned char)*c) * 1099511628211ull;
    s ^= (uint64_t)i * 0x9E3779B97F4A7C15ull;
    rng_next(&s);
    return rng_unit(&s);
}

/* Does fault f fire now, in this phase?  Probes (iteration -1) never fire. */
static int fires(soak_engine *e, const fault *f, const char *phase) {
    if (strcmp(f->phase, phase) != 0) return 0;
    if (strcmp(phase, "load") == 0 && f->n_at == 0 && f->every == 0 && f->from < 0) return 1;
    long i = e->iteration;
    if (i < 0) return 0;
    int constrained = 0;
    if (f->n_at) {
        constrained = 1;
        int hit = 0;
        for (int k = 0; k < f->n_at; k++) hit |= (f->at[k] == i);
        if (!hit) return 0;
    }
    if (f->every > 0) { constrained = 1; if (i % f->every != 0) return 0; }
    if (f->from >= 0) { constrained = 1; if (i < f->from) return 0; }
    if (f->until >= 0 && i > f->until) return 0;
    if (f->after_s >= 0) {
        constrained = 1;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double age = (double)(ts.tv_sec - e->created.tv_sec) + (ts.tv_nsec - e->created.tv_nsec) / 1e9;
        if (age < f->after_s) return 0;
    }
    if (f->context_over >= 0) { constrained = 1; if (e->history_tokens <= f->context_over) return 0; }
    if (f->turns_before >= 0) { constrained = 1; if (e->conv_turns < f->turns_before) return 0; }
    if (f->resets_before >= 0) { constrained = 1; if (e->resets < f->resets_before) return 0; }
    if (f->prompt_over >= 0) { constrained = 1; if (e->prompt_tokens <= f->prompt_over) return 0; }
    if (f->probability >= 0) { constrained = 1; if (draw(e, f, phase, i) >= f->probability) return 0; }
    return constrained;
}

static void apply_config_keys(soak_engine *e, const json_value *cfg) {
    const char *b = json_string(cfg, "backend_type", NULL);
    if (b) snprintf(e->backend, sizeof(e->backend), "%s", b);
    const json_value *it = json_get(cfg, "soak_iteration");
    if (it && it->type == JSON_NUMBER) e->iteration = (long)it->number;
    const json_value *seed = json_get(cfg, "seed");
    if (seed && seed->type == JSON_NUMBER) e->rng = (uint64_t)seed->number * 2654435761u + 1;
}

static char *read_file(const char *path, char *err, size_t err_len) {
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, err_len, "cannot open config %s: %s", path, strerror(errno)); return NULL; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (1 << 24)) { fclose(f); snprintf(err, err_len, "config %s: bad size", path); return NULL; }
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = 0;
    return buf;
}

#define BASE_VOCAB ((int32_t)(1 + N_WORDS + 256))

/* The vocabulary: STOP_ID, then " word" for each of WORDS, then the 256
 * bytes, then " t<id>" up to config vocab_size. */
static int synth_init(soak_engine *e, char *err, size_t err_len) {
    synth_model *m = &e->m;
    double v = json_number(e->config, "vocab_size", BASE_VOCAB);
    if (v < BASE_VOCAB || v > (1 << 22)) {
        snprintf(err, err_len, "vocab_size must be between %d and %d", (int)BASE_VOCAB, 1 << 22);
        return -1;
    }
    m->vocab = (int32_t)v;
    m->text = calloc((size_t)m->vocab, sizeof(*m->text));
    m->text_len = calloc((size_t)m->vocab, 1);
    m->logits = calloc((size_t)m->vocab, sizeof(float));
    m->previous = calloc((size_t)m->vocab, sizeof(float));
    if (!m->text || !m->text_len || !m->logits || !m->previous) {
        snprintf(err, err_len, "out of memory for a vocabulary of %d", (int)m->vocab);
        return -1;
    }
    for (int32_t id = 1; id < m->vocab; id++) {
        int n;
        if (id <= (int32_t)N_WORDS) n = snprintf(m->text[id], sizeof(m->text[id]), " %s", WORDS[id - 1]);
        else if (id <= (int32_t)(N_WORDS + 256)) { m->text[id][0] = (char)(id - 1 - (int32_t)N_WORDS); n = 1; }
        else n = snprintf(m->text[id], sizeof(m->text[id]), " t%d", (int)id);
        m->text_len[id] = (uint8_t)n;
    }
    return 0;
}

SOAK_EXPORT uint32_t soak_engine_abi_version(void) { return SOAK_ENGINE_ABI_VERSION; }
SOAK_EXPORT const char *soak_engine_name(void) { return "soak-test-engine 1.0"; }

SOAK_EXPORT soak_engine *soak_engine_create(const char *config_path, char *err, size_t err_len) {
    char dummy[8];
    if (!err || !err_len) { err = dummy; err_len = sizeof(dummy); }
    if (!config_path) { snprintf(err, err_len, "no config path"); return NULL; }
    char *text = read_file(config_path, err, err_len);
    if (!text) return NULL;
    char perr[128];
    json_value *cfg = json_parse(text, perr, sizeof(perr));
    free(text);
    if (!cfg || cfg->type != JSON_OBJECT) {
        snprintf(err, err_len, "config %s is not a JSON object: %s", config_path, cfg ? "wrong type" : perr);
        json_free(cfg);
        return NULL;
    }
    soak_engine *e = calloc(1, sizeof(*e));
    e->config = cfg;
    snprintf(e->backend, sizeof(e->backend), "cpu");
    e->rng = 1;
    e->iteration = -1;
    e->prompt_tokens = -1;
    e->status = SOAK_STATUS_NOT_LOADED;
    clock_gettime(CLOCK_MONOTONIC, &e->created);
    apply_config_keys(e, cfg);
    e->context_len = (long)json_number(cfg, "context_len", 2048);
    e->prefill_tps = json_number(cfg, "prefill_tok_per_s", 20000);
    e->decode_tps = json_number(cfg, "decode_tok_per_s", 4000);
    e->stop_p = json_number(cfg, "stop_probability", 0.03);
    e->zero_work = json_bool(cfg, "zero_work", 0);
    e->pool_bpt = json_number(cfg, "kv_pool_bytes_per_token", 0);
    e->echo = json_bool(cfg, "echo", 0);
    e->use_opencl = json_bool(cfg, "opencl", 0);
    e->cl_vendor = json_string(cfg, "cl_vendor", NULL);
    if (parse_faults(e, err, err_len)) { soak_engine_destroy(e); return NULL; }
    if (synth_init(e, err, err_len)) { soak_engine_destroy(e); return NULL; }
    return e;
}

SOAK_EXPORT int soak_engine_set_config(soak_engine *e, const char *json) {
    if (!e || !json) return SOAK_ERR_INVALID_ARG;
    json_value *v = json_parse(json, NULL, 0);
    if (!v || v->type != JSON_OBJECT) { json_free(v); return SOAK_ERR_INVALID_ARG; }
    apply_config_keys(e, v);
    json_free(v);
    return SOAK_OK;
}

static void do_crash(const fault *f) {
    const char *sig = json_string(f->spec, "signal", "segv");
    fflush(stdout);
    const char *site = json_string(f->spec, "in", NULL);
    int threads = (int)json_number(f->spec, "threads", 1);
    if (threads > 1) crash_in_threads(site, sig, threads);
    if (site) crash_in(site, sig); /* inside that function's own frame */
    if (!strcmp(sig, "abort")) abort();
    if (!strcmp(sig, "bus")) raise(SIGBUS);
    if (!strcmp(sig, "fpe")) raise(SIGFPE);
    volatile int *p = NULL;
    *p = 42; /* a real SIGSEGV, as in MNN's null-kernel crash */
}

/* What the OOM killer / Android lmkd does: memory grows, then SIGKILL, no line from MNN. */
static void do_oom_kill(const fault *f) {
    size_t bytes = (size_t)json_number(f->spec, "bytes", 1 << 24);
    char *p = malloc(bytes);
    if (p) memset(p, 0xA5, bytes);
    fflush(stdout);
    raise(SIGKILL);
}

static void do_hang(const fault *f) {
    double s = json_number(f->spec, "seconds", 1e9);
    sleep_s(s);
}

static void print_lines(const fault *f) {
    const json_value *lines = json_get(f->spec, "lines");
    if (lines && lines->type == JSON_ARRAY)
        for (const json_value *l = lines->child; l; l = l->next)
            if (l->type == JSON_STRING) printf("%s\n", l->string);
    const char *line = json_string(f->spec, "line", NULL);
    if (line) printf("%s\n", line);
}

static void print_cl_error(const fault *f) {
    int n = (int)json_number(f->spec, "repeat", 1);
    int code = (int)json_number(f->spec, "code", -5);
    /* "info": one tag, or a list: one line per op and tag, as MNN prints a
     * storm (Raster, ConvBuf, BinaryOp, ...) when every enqueue fails */
    const json_value *tags = json_get(f->spec, "info");
    if (tags && tags->type == JSON_ARRAY) {
        for (int r = 0; r < n; r++)
            for (const json_value *t = tags->child; t; t = t->next)
                if (t->type == JSON_STRING) printf("CL ERROR CODE : %d, info:%s \n", code, t->string);
    } else {
        const char *info = json_string(f->spec, "info", "run3d");
        for (int r = 0; r < n; r++) printf("CL ERROR CODE : %d, info:%s \n", code, info);
    }
}

/* The last leaked block, so the compiler cannot drop the malloc and its memset. */
static void *volatile leak_sink;

static void do_leak(const fault *f) {
    size_t bytes = (size_t)json_number(f->spec, "bytes", 1 << 20);
    char *p = malloc(bytes);
    if (p) memset(p, 0xA5, bytes); /* touched, so RSS grows; never freed */
    leak_sink = p;
}

/* A library's own fatal-signal handler over soak's, as libLLVM installs one when PoCL starts. */
static void do_signal_handler(const fault *f) {
    foreign_handler_install(json_bool(f->spec, "chains", 1), (int)json_number(f->spec, "hold_ms", 200));
}

/* Phase-level faults shared by load/reset: crash, hang, log, signal_handler. */
static void phase_faults(soak_engine *e, const char *phase) {
    for (int k = 0; k < e->n_faults; k++) {
        const fault *f = &e->faults[k];
        if (!fires(e, f, phase)) continue;
        if (f->kind == F_LOG) print_lines(f);
        if (f->kind == F_CRASH) do_crash(f);
        if (f->kind == F_OOM_KILL) do_oom_kill(f);
        if (f->kind == F_HANG) do_hang(f);
        if (f->kind == F_SIGNAL_HANDLER) do_signal_handler(f);
    }
}

SOAK_EXPORT int soak_engine_load(soak_engine *e) {
    if (!e) return SOAK_ERR_INVALID_ARG;
    double t0 = now_s();
    for (int k = 0; k < e->n_faults; k++) {
        const fault *f = &e->faults[k];
        if (f->kind == F_CPU_FALLBACK && strcmp(e->backend, "opencl") == 0 && fires(e, f, "load")) {
            /* MNN: Schedule.cpp:136, the silent CPU fallback. */
            printf("Can't Find type=3 backend, use 0 instead\n");
            snprintf(e->backend, sizeof(e->backend), "cpu");
        }
        if (f->kind == F_ALLOC_FAIL && fires(e, f, "load")) {
            /* MNN (measured, NVIDIA and PoCL): the weight upload fails, MNN logs it and
             * goes on with a null buffer; load succeeds. */
            printf("Alloc Buffer %ld error, code:%d \n", (long)json_number(f->spec, "bytes", 1 << 22),
                   (int)json_number(f->spec, "code", -4));
            e->null_buffer = 1;
            e->cascade_code = (int)json_number(f->spec, "cascade_code", -9999);
        }
        if (f->kind == F_FAIL_LOAD && fires(e, f, "load")) {
            printf("[Error]: Load module failed, please check model.\n");
            e->status = SOAK_STATUS_NOT_LOADED;
            return SOAK_ERR_ENGINE;
        }
    }
    phase_faults(e, "load");
    if (e->use_opencl && strcmp(e->backend, "opencl") == 0 && !e->cl) {
        int fell_back = 0;
        e->cl = cl_path_open(&fell_back, e->cl_vendor);
        if (fell_back) snprintf(e->backend, sizeof(e->backend), "cpu");
        /* a real weight buffer; if the allocation fails (an injected clCreateBuffer
         * error), MNN logs it and goes on with a null buffer */
        if (e->cl && !e->null_buffer && cl_path_weights(e->cl) != 0) e->null_buffer = 1;
    }
    if (!e->zero_work) sleep_s(0.002);
    e->loaded = 1;
    e->status = SOAK_STATUS_RUNNING;
    e->history_tokens = 0;
#ifdef __GLIBC__
    /* start from a heap with no free pages: the worker's start-up garbage would otherwise be reused by
     * the first hundreds of KiB of a `leak` fault without any RSS growth (the leak detector's claims
     * are about the bytes leaked, not about the host's heap slack) */
    malloc_trim(0);
#endif
    e->m.history = 0;
    e->conv_turns = 0;
    e->load_us_total += (int64_t)((now_s() - t0) * 1e6);
    e->perf.load_us = e->load_us_total;
    return SOAK_OK;
}

typedef struct {
    soak_text_cb cb;
    void *user;
    int cancelled;
    size_t bytes;
} sink;

static void emit(sink *s, const char *data, size_t len) {
    if (s->cancelled || !s->cb || !len) return;
    s->bytes += len;
    if (s->cb(data, len, s->user)) s->cancelled = 1;
}

/* The high-water pool: grown (and touched) to the context's bytes, kept at reset. */
static void pool_fit(soak_engine *e) {
    if (e->pool_bpt <= 0) return;
    size_t need = (size_t)((double)e->history_tokens * e->pool_bpt);
    if (need <= e->pool_bytes) return;
    unsigned char *p = realloc(e->pool, need);
    if (!p) return;
    memset(p + e->pool_bytes, 0x5a, need - e->pool_bytes);
    e->pool = p;
    e->pool_bytes = need;
}

/* A fault at a turn's start that acts the same on respond() and on a forward turn: printed lines, a
 * sticky error, a failed KV map, a crash, a foreign signal handler, an OOM kill, a leak, GPU bytes.
 * A cl_error prints its lines here too, and returns 0 so the caller applies its `corrupt` flag.
 * Returns 1 when the fault is fully handled. */
static int turn_fault(const fault *f, int *sticky, int *kv_fail, size_t *gpu_leak) {
    switch (f->kind) {
        case F_CL_ERROR: print_cl_error(f); return 0;
        case F_LOG: print_lines(f); return 1;
        case F_STICKY_ERROR: *sticky = 1; return 1;
        case F_KV_MAP_ERROR: *kv_fail = 1; return 1;
        case F_CRASH: do_crash(f); return 1;
        case F_SIGNAL_HANDLER: do_signal_handler(f); return 1;
        case F_OOM_KILL: do_oom_kill(f); return 1;
        case F_LEAK: do_leak(f); return 1;
        case F_GPU_LEAK: *gpu_leak += (size_t)json_number(f->spec, "bytes", 1 << 20); return 1;
        default: return 0;
    }
}

/* The faults that fire on a turn, as respond() and a forward turn both take them at its start: the
 * ones turn_fault() acts on now, hangs (now, or at a step: hang_at), slow factors, and in `acts` (bit
 * k = fault k) the ones that change what the turn produces (garbage, repeat, invalid UTF-8, empty,
 * logits faults, a cl_error that corrupts). */
typedef struct {
    int sticky, kv_fail;
    size_t gpu_leak;
    double slow;
    long hang_at;
    const fault *hang_f;
    uint64_t acts;
} turn_plan;

static turn_plan plan_turn(soak_engine *e) {
    turn_plan p = {0, 0, 0, 1.0, -1, NULL, 0};
    for (int k = 0; k < e->n_faults; k++) {
        const fault *f = &e->faults[k];
        if (!fires(e, f, "decode") && !(f->kind == F_KV_MAP_ERROR && fires(e, f, "prefill"))) continue;
        if (turn_fault(f, &p.sticky, &p.kv_fail, &p.gpu_leak)) continue;
        switch (f->kind) {
            case F_CL_ERROR:
                if (json_bool(f->spec, "corrupt", 0)) p.acts |= 1ull << k;
                break;
            case F_HANG:
                if (json_get(f->spec, "after_tokens")) p.hang_at = (long)json_number(f->spec, "after_tokens", 0), p.hang_f = f;
                else do_hang(f);
                break;
            case F_SLOW: p.slow *= json_number(f->spec, "factor", 5); break;
            case F_GARBAGE: case F_REPEAT: case F_INVALID_UTF8: case F_EMPTY:
            case F_LOGITS_NOISE: case F_LOGITS_NONFINITE: case F_LOGITS_STALE:
                p.acts |= 1ull << k;
                break;
            default: break;
        }
    }
    return p;
}

/* whether a fault of `kind` is among the plan's acts */
static int plan_acts(const soak_engine *e, const turn_plan *p, fault_kind kind) {
    for (int k = 0; k < e->n_faults; k++)
        if ((p->acts >> k & 1) && e->faults[k].kind == kind) return 1;
    return 0;
}

/* What a turn's start prints and whether it fails, for respond() and a forward turn alike: a null
 * buffer's cascade (every op that reads it fails: real CL calls on the OpenCL path, NVIDIA's -9999
 * otherwise; the KV map fails; the call still ends normally), a failed KV map or a sticky error
 * (the turn fails: status INTERNAL_ERROR), the context warning.  Returns 1 when the turn failed. */
static int turn_errors(soak_engine *e, int kv_fail, int sticky, long prompt_tokens) {
    if (e->null_buffer && !kv_fail) {
        static const char *OPS[] = {"ConvBuf", "Raster", "BinaryOp", "LayerNorm", "MatMul"};
        for (size_t o = 0; o < sizeof(OPS) / sizeof(OPS[0]); o++) {
            int code = e->cl ? cl_path_use_weights(e->cl) : e->cascade_code;
            if (code) printf("CL ERROR CODE : %d, info:%s \n", code, OPS[o]);
        }
        printf("Map error key_ptr == nullptr \n");
    }
    if (kv_fail || sticky) {
        if (kv_fail) printf("Map error key_ptr == nullptr \n");
        printf("[Error]: onForward returned no outputs. seqLen=%ld, inDecode=%d, inputs=3, moduleKey=(0,0)\n",
               prompt_tokens, kv_fail ? 0 : 1);
        e->status = SOAK_STATUS_INTERNAL_ERROR;
        return 1;
    }
    if (e->history_tokens > e->context_len)
        printf("[MNN:LLM] Warning: sequence length %ld exceeds max_position_embeddings (%ld), output quality may degrade.\n",
               e->history_tokens, e->context_len);
    return 0;
}

SOAK_EXPORT int soak_engine_respond(soak_engine *e, const char *prompt, size_t prompt_len,
                                    int32_t max_new_tokens, soak_text_cb cb, void *user) {
    if (!e) return SOAK_ERR_INVALID_ARG;
    if (!prompt && prompt_len) return SOAK_ERR_INVALID_ARG;
    if (!e->loaded) return SOAK_ERR_STATE;
    memset(&e->perf, 0, sizeof(e->perf));
    e->perf.load_us = e->load_us_total;
    e->calls++;
    e->m.in_turn = 0; /* a forward() turn ends here */
    if (e->status == SOAK_STATUS_INTERNAL_ERROR || e->status == SOAK_STATUS_TIMEOUT ||
        e->status == SOAK_STATUS_USER_CANCEL) {
        /* MNN llm.hpp CHECK_LLM_RUNNING: sticky, reset() does not clear it. */
        printf("[Error]: LLM in error state. Status: %d\n", e->status);
        if (e->iteration >= 0) e->conv_turns++;
        return SOAK_OK;
    }
    e->status = SOAK_STATUS_RUNNING;
    if (max_new_tokens < 0) max_new_tokens = (int32_t)json_number(e->config, "max_new_tokens", 512);

    /* Deterministic per prompt and iteration, like greedy decoding of a fixed model. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < prompt_len; i++) h = (h ^ (unsigned char)prompt[i]) * 1099511628211ull;
    uint64_t rs = h ^ e->rng;

    long prompt_tokens = 1 + (long)prompt_len / 4;
    e->prompt_tokens = prompt_tokens; /* the prompt_over condition reads it */
    sink s = {cb, user, 0, 0};

    turn_plan plan = plan_turn(e);
    double slow = plan.slow;
    int garbage = plan_acts(e, &plan, F_GARBAGE), invalid = plan_acts(e, &plan, F_INVALID_UTF8);
    int repeat = plan_acts(e, &plan, F_REPEAT) || plan_acts(e, &plan, F_CL_ERROR); /* a corrupting cl_error */
    int empty = plan_acts(e, &plan, F_EMPTY), kv_fail = plan.kv_fail;
    long hang_after = plan.hang_at; /* hang "after_tokens": a decode stuck mid-stream */
    e->prompt_tokens = -1;
    if (e->iteration >= 0) e->conv_turns++; /* turns_before: this turn counts for the next ones */

    double prefill_s = e->zero_work ? 0 : slow * (double)prompt_tokens / e->prefill_tps;
    sleep_s(prefill_s);
    e->perf.prompt_tokens = (int32_t)prompt_tokens;
    e->perf.prefill_us = (int64_t)(prefill_s * 1e6) + 1;
    long before = e->history_tokens;
    e->history_tokens += prompt_tokens;
    pool_fit(e);

    /* MNN grows its KV cache in 64-token chunks; a failed map is fatal for the call. */
    (void)before;
    if (e->cl && cl_path_step(e->cl, e->history_tokens, plan.gpu_leak) != 0) kv_fail = 1;
    if (e->null_buffer && !kv_fail) garbage = 1;
    if (turn_errors(e, kv_fail, plan.sticky, prompt_tokens)) return SOAK_OK;  /* MNN returns normally */

    double t0 = now_s();
    int generated = 0;
    if (e->echo) {
        emit(&s, prompt, prompt_len);
        e->perf.generated_tokens = (int32_t)prompt_tokens;
        e->perf.decode_us = (int64_t)((now_s() - t0) * 1e6) + 1;
        e->status = SOAK_STATUS_NORMAL_FINISHED;
        return SOAK_OK;
    }
    double per_token = e->zero_work ? 0 : slow / e->decode_tps;
    int finished = 0;
    while (generated < max_new_tokens && !empty && !s.cancelled) {
        char tok[16];
        if (garbage) {
            /* what a corrupted GPU emits: valid UTF-8 soup of random code points across
             * scripts and planes (control, unassigned, private use), as in MNN #4836 */
            char buf[4];
            uint32_t cp = 1 + (uint32_t)(rng_next(&rs) % 0x2FFFF);
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xE000 + (cp & 0xFF); /* no surrogates */
            size_t n = 0;
            if (cp < 0x80) buf[n++] = (char)cp;
            else if (cp < 0x800) { buf[n++] = (char)(0xC0 | (cp >> 6)); buf[n++] = (char)(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) {
                buf[n++] = (char)(0xE0 | (cp >> 12)); buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                buf[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                buf[n++] = (char)(0xF0 | (cp >> 18)); buf[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F)); buf[n++] = (char)(0x80 | (cp & 0x3F));
            }
            (void)tok;
            emit(&s, buf, n);
        } else if (repeat) {
            emit(&s, "\xef\xbc\x81", 3); /* '！', MNN's dead-queue symptom */
        } else if (invalid && generated % 2 == 0) {
            emit(&s, "\xe4\xbd", 2); /* half of a CJK character */
        } else {
            /* one callback per token, as MNN's streamer writes each decoded token */
            const char *w = WORDS[rng_next(&rs) % N_WORDS];
            char piece[24];
            int n = snprintf(piece, sizeof(piece), "%s%s", generated ? " " : "", w);
            emit(&s, piece, (size_t)n);
        }
        generated++;
        if (generated == hang_after) do_hang(plan.hang_f);
        sleep_s(per_token);
        if (!garbage && !repeat && !invalid && rng_unit(&rs) < e->stop_p) { finished = 1; break; }
    }
    e->history_tokens += generated;
    pool_fit(e);
    /* a respond turn enters the history as a forward turn would: its prompt and what it generated */
    e->m.history = mix64(mix64(e->m.history ^ 0x52455350ull, (uint64_t)prompt_tokens), (uint64_t)generated);
    e->perf.generated_tokens = generated;
    e->perf.decode_us = (int64_t)((now_s() - t0) * 1e6) + 1;
    if (s.cancelled) e->status = SOAK_STATUS_USER_CANCEL;
    else if (finished || empty) e->status = SOAK_STATUS_NORMAL_FINISHED;
    else e->status = SOAK_STATUS_MAX_TOKENS_FINISHED;
    return SOAK_OK;
}

SOAK_EXPORT int soak_engine_reset(soak_engine *e) {
    if (!e) return SOAK_ERR_INVALID_ARG;
    phase_faults(e, "reset");
    e->history_tokens = 0; /* like MNN, the status stays as it was */
    e->m.history = 0;
    e->conv_turns = 0;
    e->resets++;
    e->m.in_turn = 0;
    e->m.has_previous = 0;
    cl_path_reset(e->cl);
    return SOAK_OK;
}

SOAK_EXPORT int soak_engine_reinit(soak_engine *e) {
    if (!e) return SOAK_ERR_INVALID_ARG;
    if (!e->loaded) return SOAK_ERR_STATE;
    e->status = SOAK_STATUS_RUNNING; /* MNN generate_init() */
    return SOAK_OK;
}

SOAK_EXPORT int soak_engine_status(soak_engine *e) { return e ? e->status : SOAK_STATUS_NOT_LOADED; }

SOAK_EXPORT int soak_engine_perf(soak_engine *e, soak_perf *out) {
    if (!e || !out) return SOAK_ERR_INVALID_ARG;
    *out = e->perf;
    return SOAK_OK;
}

SOAK_EXPORT void soak_engine_destroy(soak_engine *e) {
    if (!e) return;
    cl_path_close(e->cl);
    /* like MNN writing mnn_cachefile.bin in the Llm destructor: slow, and lost if killed */
    double teardown_s = json_number(e->config, "teardown_s", 0);
    const char *teardown_file = json_string(e->config, "teardown_file", NULL);
    if (teardown_s > 0) sleep_s(teardown_s);
    if (teardown_file) {
        FILE *f = fopen(teardown_file, "wb");
        if (f) { fputs("cache\n", f); fclose(f); }
    }
    for (int k = 0; k < e->n_faults; k++) free(e->faults[k].at);
    free(e->pool);
    free(e->m.text);
    free(e->m.text_len);
    free(e->m.logits);
    free(e->m.previous);
    free(e->m.ids);
    json_free(e->config);
    free(e);
}

/* ---- The logits oracle (ABI 2): the synthetic model ------------------------ */

static uint64_t mix64(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return rng_next(&h);
}

/* About N(0, 1): the sum of the four 16-bit uniforms of one hash, scaled
 * (bounded by +-3.5; one splitmix step per value, so a large vocabulary stays cheap). */
static double hash_normal(uint64_t key, uint64_t i) {
    uint64_t s = key ^ (i * 0xD1B54A32D192ED03ull);
    uint64_t z = rng_next(&s);
    double sum = (double)(z & 0xFFFF) + (double)(z >> 16 & 0xFFFF) + (double)(z >> 32 & 0xFFFF) + (double)(z >> 48);
    return (sum / 65536.0 - 2.0) * 1.7320508075688772;
}

/* The token ids respond() counts for a prompt: one for the turn's template,
 * then one per 4 prompt bytes (the last takes the remainder), each a hash of
 * its bytes onto a non-stop token. */
SOAK_EXPORT int soak_engine_tokenize(soak_engine *e, const char *prompt, size_t prompt_len,
                                     const int32_t **ids, size_t *n_ids) {
    if (!e || !ids || !n_ids || (!prompt && prompt_len)) return SOAK_ERR_INVALID_ARG;
    if (!e->loaded) return SOAK_ERR_STATE;
    synth_model *m = &e->m;
    size_t n = 1 + prompt_len / 4;
    if (n > m->ids_cap) {
        int32_t *grown = realloc(m->ids, n * sizeof(int32_t));
        if (!grown) return SOAK_ERR_ENGINE;
        m->ids = grown;
        m->ids_cap = n;
    }
    m->ids[0] = 1 + (int32_t)(e->rng % (uint64_t)(m->vocab - 1));
    for (size_t k = 1; k < n; k++) {
        size_t from = (k - 1) * 4, to = k == n - 1 ? prompt_len : from + 4;
        uint64_t h = 1469598103934665603ull;
        for (size_t b = from; b < to; b++) h = (h ^ (unsigned char)prompt[b]) * 1099511628211ull;
        m->ids[k] = 1 + (int32_t)(rng_next(&h) % (uint64_t)(m->vocab - 1));
    }
    *ids = m->ids;
    *n_ids = n;
    return SOAK_OK;
}

SOAK_EXPORT int soak_engine_is_stop(soak_engine *e, int32_t id) {
    if (!e || id < 0 || id >= e->m.vocab) return SOAK_ERR_INVALID_ARG;
    return id == STOP_ID;
}

SOAK_EXPORT int soak_engine_token_bytes(soak_engine *e, int32_t id, const char **data, size_t *len) {
    if (!e || !data || !len || id < 0 || id >= e->m.vocab) return SOAK_ERR_INVALID_ARG;
    *data = e->m.text[id];
    *len = e->m.text_len[id];
    return SOAK_OK;
}

/* The clean logits of the current state. */
static void synth_logits(soak_engine *e) {
    synth_model *m = &e->m;
    uint64_t ha = mix64(e->rng, (uint64_t)m->last[LOGITS_CONTEXT - 1] + 1);
    uint64_t hb = mix64(e->rng ^ 0x5851F42D4C957F2Dull, m->prompt_hash);
    for (int k = 0; k < LOGITS_CONTEXT; k++) hb = mix64(hb, (uint64_t)m->last[k] + 1);
    hb = mix64(hb, (uint64_t)m->step);
    hb = mix64(hb, m->turn_history);
    for (int32_t i = 0; i < m->vocab; i++)
        m->logits[i] = (float)(1.6 * hash_normal(ha, (uint64_t)i) + 1.0 * hash_normal(hb, (uint64_t)i));
    /* the stop token gains with every step, so a greedy turn ends */
    m->logits[STOP_ID] = (float)(-3.0 + 0.25 * (double)m->step + 0.5 * hash_normal(hb, 0));
}

static int fault_hits_step(const fault *f, long step) {
    return step >= f->step && (f->steps < 0 || step < f->step + f->steps);
}

/* The logits faults of this turn at this step, on the clean logits:
 * a stale step first (the buffer keeps the previous step's numbers), then
 * noise, then non-finite values. */
static void logits_faults(soak_engine *e) {
    synth_model *m = &e->m;
    for (int k = 0; k < e->n_faults; k++) {
        const fault *f = &e->faults[k];
        if (!(m->turn_faults >> k & 1) || !fault_hits_step(f, m->step)) continue;
        if ((f->kind == F_LOGITS_STALE || f->kind == F_REPEAT || f->kind == F_CL_ERROR) && m->has_previous)
            memcpy(m->logits, m->previous, (size_t)m->vocab * sizeof(float));
    }
    for (int k = 0; k < e->n_faults; k++) {
        const fault *f = &e->faults[k];
        if (!(m->turn_faults >> k & 1) || !fault_hits_step(f, m->step)) continue;
        double sigma = 0;
        if (f->kind == F_LOGITS_NOISE) {
            sigma = json_number(f->spec, "sigma", 0.05);
            long since = e->iteration - (f->from >= 0 ? f->from : 0);
            sigma *= 1.0 + json_number(f->spec, "growth", 0) * (double)(since > 0 ? since : 0);
        } else if (f->kind == F_GARBAGE) {
            sigma = 4.0;
        }
        if (sigma <= 0) continue;
        uint64_t key = mix64(mix64(e->rng ^ 0x2545F4914F6CDD1Dull, (uint64_t)k),
                             mix64((uint64_t)e->iteration, (uint64_t)m->step));
        for (int32_t i = 0; i < m->vocab; i++) m->logits[i] += (float)(sigma * hash_normal(key, (uint64_t)i));
    }
    if (e->null_buffer) { /* ops on a null buffer: garbage numbers */
        uint64_t key = mix64(e->rng ^ 0x94D049BB133111EBull, mix64((uint64_t)e->iteration, (uint64_t)m->step));
        for (int32_t i = 0; i < m->vocab; i++) m->logits[i] += (float)(4.0 * hash_normal(key, (uint64_t)i));
    }
    for (int k = 0; k < e->n_faults; k++) {
        const fault *f = &e->faults[k];
        if (f->kind != F_LOGITS_NONFINITE || !(m->turn_faults >> k & 1) || !fault_hits_step(f, m->step)) continue;
        const char *what = json_string(f->spec, "value", "nan");
        float v = !strcmp(what, "inf") ? INFINITY : !strcmp(what, "-inf") ? -INFINITY : NAN;
        int32_t top = 0;
        for (int32_t i = 1; i < m->vocab; i++)
            if (m->logits[i] > m->logits[top]) top = i;
        long count = (long)json_number(f->spec, "count", 1);
        for (long j = 0; j < count && j < m->vocab; j++) m->logits[(top + j) % m->vocab] = v;
    }
}

/* The faults of a turn, at its prefill, as respond() takes them at its start:
 * the ones that print, stop or slow the engine act now; logits faults (and
 * garbage, repeat, cl_error corrupt) act on the logits of their steps.
 * Returns SOAK_OK, or SOAK_ERR_ENGINE when the turn failed (status set). */
static int turn_faults(soak_engine *e, long prompt_tokens) {
    synth_model *m = &e->m;
    turn_plan plan = plan_turn(e);
    /* the kinds that act on the logits (invalid UTF-8 and empty act on respond()'s text only) */
    m->turn_faults = 0;
    for (int k = 0; k < e->n_faults; k++)
        if ((plan.acts >> k & 1) && e->faults[k].kind != F_INVALID_UTF8 && e->faults[k].kind != F_EMPTY)
            m->turn_faults |= 1ull << k;
    m->slow = plan.slow;
    m->hang_step = plan.hang_at;
    m->hang_f = plan.hang_f;
    int kv_fail = plan.kv_fail;
    e->history_tokens += prompt_tokens;
    if (e->cl && cl_path_step(e->cl, e->history_tokens, plan.gpu_leak) != 0) kv_fail = 1;
    if (turn_errors(e, kv_fail, plan.sticky, prompt_tokens)) return SOAK_ERR_ENGINE;
    return SOAK_OK;
}

SOAK_EXPORT int soak_engine_forward(soak_engine *e, const int32_t *ids, size_t n_ids, int32_t is_prefill,
                                    const float **logits, int32_t *vocab) {
    if (!e || !ids || !n_ids || !logits || !vocab) return SOAK_ERR_INVALID_ARG;
    synth_model *m = &e->m;
    for (size_t k = 0; k < n_ids; k++)
        if (ids[k] < 0 || ids[k] >= m->vocab) return SOAK_ERR_INVALID_ARG;
    if (!e->loaded) return SOAK_ERR_STATE;
    if (e->status == SOAK_STATUS_INTERNAL_ERROR || e->status == SOAK_STATUS_TIMEOUT ||
        e->status == SOAK_STATUS_USER_CANCEL) {
        printf("[Error]: LLM in error state. Status: %d\n", e->status);
        return SOAK_ERR_STATE;
    }
    if (!is_prefill && !m->in_turn) return SOAK_ERR_STATE; /* a step needs its turn's prefill */
    double t0 = now_s();
    if (is_prefill) {
        memset(&e->perf, 0, sizeof(e->perf));
        e->perf.load_us = e->load_us_total;
        e->calls++;
        e->status = SOAK_STATUS_RUNNING;
        m->in_turn = 0;
        m->step = 0;
        int rc = turn_faults(e, (long)n_ids);
        if (rc != SOAK_OK) return rc;
        m->in_turn = 1;
        m->prompt_hash = 1469598103934665603ull;
        for (size_t k = 0; k < n_ids; k++) m->prompt_hash = mix64(m->prompt_hash, (uint64_t)ids[k]);
        for (int k = 0; k < LOGITS_CONTEXT; k++) m->last[k] = -1;
        m->turn_history = m->history;
        sleep_s(e->zero_work ? 0 : m->slow * (double)n_ids / e->prefill_tps);
    } else {
        m->step++;
        e->history_tokens += (long)n_ids;
        if (m->step == m->hang_step) do_hang(m->hang_f);
        sleep_s(e->zero_work ? 0 : m->slow * (double)n_ids / e->decode_tps);
    }
    for (size_t k = n_ids > LOGITS_CONTEXT ? n_ids - LOGITS_CONTEXT : 0; k < n_ids; k++) {
        memmove(m->last, m->last + 1, (LOGITS_CONTEXT - 1) * sizeof(int32_t));
        m->last[LOGITS_CONTEXT - 1] = ids[k];
    }
    for (size_t k = 0; k < n_ids; k++) m->history = mix64(m->history, (uint64_t)ids[k] + 1);
    synth_logits(e);
    logits_faults(e);
    memcpy(m->previous, m->logits, (size_t)m->vocab * sizeof(float));
    m->has_previous = 1;
    int64_t us = (int64_t)((now_s() - t0) * 1e6) + 1;
    if (is_prefill) {
        e->perf.prompt_tokens = (int32_t)n_ids;
        e->perf.prefill_us = us;
    } else {
        e->perf.generated_tokens += (int32_t)n_ids;
        e->perf.decode_us += us;
    }
    *logits = m->logits;
    *vocab = m->vocab;
    return SOAK_OK;
}
