/* The stats file's layout (cl_trace.<pid>.stats; FORMAT.md "Stats file"), declared here only:
 * the interposer maps these structs, and soak.cl.stats_layout reads this header to read the
 * file (tests/cl/test_stats_layout.py compiles a probe that checks every offset and size).
 * So keep to what that reader knows: typedef struct { ... } soak_stats_*; with one field per
 * line as int8_t..uint64_t or char, arrays of a number or of a #define here; #defines of
 * numbers or strings.  Little-endian, natural alignment. */
#ifndef SOAK_STATS_LAYOUT_H
#define SOAK_STATS_LAYOUT_H

#include <stdint.h>

#define SOAK_STATS_MAGIC "SOAKCLS1"
#define SOAK_STATS_VERSION 2

typedef struct {
    char magic[8];         /* "SOAKCLS1" */
    uint32_t version;      /* SOAK_STATS_VERSION (1: no epoch, no slots) */
    uint32_t header_size;  /* sizeof(soak_stats_header) */
    uint32_t n_kinds;
    uint32_t kind_size;    /* sizeof(soak_stats_kind) */
    uint32_t n_api;
    uint32_t api_size;     /* sizeof(soak_stats_api) */
    uint64_t pid;
    uint64_t start_mono_ns; /* CLOCK_MONOTONIC at init */
    uint64_t start_unix_ns; /* CLOCK_REALTIME at init */
    uint64_t calls;         /* total calls = last sequence number */
    uint64_t errors;        /* calls that returned an error (injected included) */
    uint64_t injected;      /* errors soak injected (fault rules + memory limit) */
    uint64_t records;       /* records written to the record file */
    uint64_t records_dropped; /* error records not written (cap reached or no file) */
    uint64_t live_bytes;    /* buffers + images + pipes + SVM, sub-buffers excluded */
    uint64_t peak_live_bytes;
    uint64_t mem_limit;     /* 0 = none */
    uint64_t flags;         /* SOAK_STATS_FLAG_* */
    uint64_t untracked_releases; /* retain/release of objects created before soak saw them */
    uint64_t epoch;         /* written by the reader (soak.cl.trace) after each poll: the error
                               aggregation window; see soak_stats_agg */
    uint32_t n_agg;         /* error aggregation slots after the API table */
    uint32_t agg_size;      /* sizeof(soak_stats_agg) */
    uint64_t agg_used;      /* slots taken */
    uint64_t agg_overflow;  /* errors that found no free slot (recorded one record each) */
    uint64_t phase;         /* written by the worker (soak.cl.trace.PhaseMarker): 0 before its first
                               marker (load), 1 load, 2 prefill, 3 decode, 4 idle, 5 respond
                               (prefill + decode, no first-token mark); with the epoch
                               it keys the profile window */
    uint64_t reserved[2];
} soak_stats_header;

#define SOAK_STATS_FLAG_OVERRIDE 1u    /* device-type override on */
#define SOAK_STATS_FLAG_REAL_LOADED 2u /* real library opened */
#define SOAK_STATS_FLAG_EXITED 4u      /* process exited normally (destructor ran) */

typedef struct {
    char name[24];
    uint64_t live;
    uint64_t live_bytes;
    uint64_t created;
    uint64_t released;
    uint64_t bytes_created;
    uint64_t peak_live;
} soak_stats_kind;

typedef struct {
    char name[64];
    uint64_t calls;
    uint64_t errors;
    uint64_t injected;
    uint64_t host_ns; /* time inside the entry point (profiling on only) */
} soak_stats_api;

/* One kind of error (entry point, code, injected or not, key = kernel or info param):
 * its exact count lives here, in the mapped stats file, so it survives a crash;
 * the record file gets only the first SOAK_AGG_SAMPLES of each kind per epoch. */
#define SOAK_AGG_SLOTS 256
#define SOAK_AGG_SAMPLES 3
#define SOAK_AGG_USED 1u
#define SOAK_AGG_INJECTED 2u
typedef struct {
    uint32_t flags;      /* SOAK_AGG_USED (written last), SOAK_AGG_INJECTED */
    uint32_t api;        /* index into the API table */
    int32_t code;
    uint32_t reserved0;
    uint64_t count;      /* every occurrence, all epochs */
    uint64_t first_seq;  /* call sequence number of the first occurrence */
    uint64_t last_seq;
    uint64_t last_t_ns;
    uint64_t epoch;      /* the epoch epoch_count counts in */
    uint64_t epoch_count;
    uint64_t reserved1;
    char key[128];       /* "kernel=NAME", "param=CL_..." or "" */
    char code_name[64];
} soak_stats_agg;

#endif
