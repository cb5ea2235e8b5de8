/* soak-runner: the native worker.  Speaks soak's worker protocol (version 1,
 * docs/ARCHITECTURE.md) on stdin/stdout and drives an engine library through
 * the C ABI in soak_engine.h.  Used on Android (adb shell) and on Linux in CI.
 *
 *   stdin : commands, one per line, payloads base64
 *   stdout: one JSON result per line (the original fd 1, kept as `proto`)
 *   stderr: the engine's own output; fd 1 is moved onto it at start, and a
 *           marker line "\x1esoak:done <id>\n" precedes each result.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "loader.h"
#include "soak_crash.h"
#include "teacher.h"

#define PROTOCOL_VERSION 1

static int proto_fd = -1;
/* The result stream has two writers (the main thread, the watch thread): one lock, so a
 * progress line never lands inside a result line. */
static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;

static int is_int_word(const char *s) {
    if (*s == '-' || *s == '+') s++;
    if (!*s || strlen(s) > 18) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}
static engine_api api;
static soak_engine *engine;

typedef struct {
    long long id;
    const char *op;
    int ok;
    int rc;
    int status;
    int has_perf;
    soak_perf perf;
    const char *engine_name; /* open only */
    const sbuf *output;      /* respond, reference, check */
    const char *oracle_unavailable; /* open: why the engine cannot serve the oracle (NULL: it can) */
    const sbuf *fields;      /* reference, check: the turn or its summary (",\"turn\":{...}") */
    int has_timing;          /* respond: per-token timing (us; -1 = none) */
    int64_t ttft_us, itl_p50_us, itl_p99_us, itl_max_us;
    int64_t engine_us;       /* respond: time inside the engine's respond call (-1 = none) */
    int streams;             /* open: text arrives through the callback as generated */
    const char *error;
    const char *error_kind;
    int has_hint; /* errors the Python worker raises as SoakError carry "hint" (maybe null) */
    const char *hint;
    int64_t wall_us;
} result;

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void send_line(sbuf *line) {
    sbuf_add(line, "\n", 1);
    if (write_all(proto_fd, line->data, line->len) != 0) _exit(3); /* supervisor is gone */
}

static void add_text(sbuf *b, const char *key, const char *value) {
    sbuf_fmt(b, ",\"%s\":", key);
    if (value) json_quote(b, value, strlen(value));
    else sbuf_str(b, "null");
}

/* Same keys and order as soak/worker/main.py's Worker.reply. */
static void send_result(const result *r) {
    sbuf b;
    sbuf_init(&b);
    sbuf_fmt(&b, "{\"id\":%lld,\"op\":", r->id);
    json_quote(&b, r->op, strlen(r->op));
    sbuf_fmt(&b, ",\"ok\":%s,\"rc\":%d", r->ok ? "true" : "false", r->rc);
    add_text(&b, "error", r->error);
    add_text(&b, "error_kind", r->error_kind);
    if (r->has_hint) add_text(&b, "hint", r->hint);
    if (r->engine_name) {
        add_text(&b, "engine_name", r->engine_name);
        sbuf_str(&b, ",\"streams\":true");
        add_text(&b, "oracle_unavailable", r->oracle_unavailable);
    }
    if (r->has_timing) {
        const char *keys[] = {"ttft_us", "itl_p50_us", "itl_p99_us", "itl_max_us"};
        int64_t vals[] = {r->ttft_us, r->itl_p50_us, r->itl_p99_us, r->itl_max_us};
        sbuf_str(&b, ",\"timing\":{");
        for (int k = 0; k < 4; k++) {
            sbuf_fmt(&b, "%s\"%s\":", k ? "," : "", keys[k]);
            if (vals[k] < 0) sbuf_str(&b, "null");
            else sbuf_fmt(&b, "%" PRId64, vals[k]);
        }
        sbuf_str(&b, "}");
    }
    if (r->engine_us >= 0) sbuf_fmt(&b, ",\"engine_us\":%" PRId64, r->engine_us);
    if (r->fields) sbuf_add(&b, r->fields->data, r->fields->len);
    if (r->output) {
        sbuf_str(&b, ",\"output_b64\":\"");
        b64_encode(&b, r->output->data ? r->output->data : "", r->output->len);
        sbuf_str(&b, "\"");
    }
    sbuf_fmt(&b, ",\"status\":%d", r->status);
    if (r->has_perf) {
        sbuf_fmt(&b,
                 ",\"perf\":{\"prompt_tokens\":%" PRId32 ",\"generated_tokens\":%" PRId32
                 ",\"prefill_us\":%" PRId64 ",\"decode_us\":%" PRId64 ",\"load_us\":%" PRId64 "}",
                 r->perf.prompt_tokens, r->perf.generated_tokens, r->perf.prefill_us, r->perf.decode_us,
                 r->perf.load_us);
    }
    sbuf_fmt(&b, ",\"wall_us\":%" PRId64 "}", r->wall_us);
    /* the marker, then at once the result (made before either is written): the supervisor,
     * woken by the first, usually finds both */
    char marker[64];
    int m = snprintf(marker, sizeof marker, "\x1esoak:done %lld\n", r->id);
    pthread_mutex_lock(&write_mu);
    write_all(2, marker, (size_t)m);
    send_line(&b);
    pthread_mutex_unlock(&write_mu);
    sbuf_free(&b);
}

/* A line that is not a command at all: no marker, id -1 (as the Python worker). */
static void send_bad_line(const char *why) {
    sbuf b;
    sbuf_init(&b);
    sbuf_str(&b, "{\"id\":-1,\"op\":\"error\",\"ok\":false,\"error\":");
    json_quote(&b, why, strlen(why));
    sbuf_str(&b, ",\"error_kind\":\"bad_command\"}");
    send_line(&b);
    sbuf_free(&b);
}

/* One respond in flight: its output, the time of each streamed chunk, and the
 * throttled progress lines (soak/worker/protocol.py: PROGRESS_INTERVAL_S).  As the
 * Python worker: the first line goes out once the call has run the interval and a
 * chunk has come, then at most every interval; a respond that ends sooner sends none.
 * A chunk due a line with no chunk after it (the engine stalls right after it) is
 * reported by the watch thread within WATCH_US. */
#define PROGRESS_INTERVAL_US 200000
#define WATCH_US 50000
typedef struct {
    sbuf *out;
    long long id;
    int64_t start_us, next_progress_us;
    int64_t *times;
    size_t n, cap;
    size_t reported; /* chunks the last progress line counted */
    int done;        /* the call is over: no more progress lines */
} stream_state;

static stream_state *watched; /* the respond in flight, under write_mu */
static int watch_started;

/* Under write_mu. */
static void report_locked(stream_state *st, int64_t t) {
    if (st->done || st->n <= st->reported) return;
    char line[96];
    int n = snprintf(line, sizeof line, "{\"id\":%lld,\"op\":\"progress\",\"tokens\":%zu}\n", st->id, st->n);
    st->reported = st->n;
    st->next_progress_us = t + PROGRESS_INTERVAL_US;
    if (write_all(proto_fd, line, (size_t)n) != 0) _exit(3); /* supervisor is gone */
}

static void *watch_main(void *arg) {
    (void)arg;
    for (;;) {
        struct timespec nap = {0, WATCH_US * 1000L};
        nanosleep(&nap, NULL);
        pthread_mutex_lock(&write_mu);
        stream_state *st = watched;
        if (st && st->n) {
            int64_t t = now_us();
            if (t >= st->next_progress_us) report_locked(st, t);
        }
        pthread_mutex_unlock(&write_mu);
    }
    return NULL;
}

static void watch(stream_state *st) {
    if (!watch_started) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, watch_main, NULL) == 0) {
            pthread_detach(thread);
            watch_started = 1;
        }
    }
    pthread_mutex_lock(&write_mu);
    watched = st;
    pthread_mutex_unlock(&write_mu);
}

static void unwatch(stream_state *st) {
    pthread_mutex_lock(&write_mu);
    watched = NULL;
    st->done = 1;
    pthread_mutex_unlock(&write_mu);
}

static int text_cb(const char *data, size_t len, void *user) {
    stream_state *st = (stream_state *)user;
    if (sbuf_add(st->out, data, len) != 0) return 1;
    int64_t t = now_us();
    int grow_failed = 0;
    pthread_mutex_lock(&write_mu);
    if (st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 256;
        int64_t *grown = realloc(st->times, cap * sizeof(int64_t));
        if (grown) {
            st->times = grown;
            st->cap = cap;
        } else {
            grow_failed = 1;
        }
    }
    if (!grow_failed) {
        st->times[st->n++] = t;
        if (t >= st->next_progress_us) report_locked(st, t);
    }
    pthread_mutex_unlock(&write_mu);
    return grow_failed;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank, as soak/worker/protocol.py percentile(). */
static int64_t percentile(const int64_t *sorted, size_t n, int p) {
    if (!n) return -1;
    size_t rank = (n * (size_t)p + 99) / 100;
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

static void set_timing(result *r, stream_state *st) {
    r->has_timing = 1;
    r->ttft_us = st->n ? (st->times[0] - st->start_us) : -1;
    size_t n = st->n > 1 ? st->n - 1 : 0;
    int64_t *gaps = n ? malloc(n * sizeof(int64_t)) : NULL;
    if (n && !gaps) n = 0;
    /* whole microseconds from the start, then differences (the Python worker's rounding) */
    for (size_t i = 0; i < n; i++) gaps[i] = (st->times[i + 1] - st->start_us) - (st->times[i] - st->start_us);
    if (n) qsort(gaps, n, sizeof(int64_t), cmp_i64);
    r->itl_p50_us = percentile(gaps, n, 50);
    r->itl_p99_us = percentile(gaps, n, 99);
    r->itl_max_us = n ? gaps[n - 1] : -1;
    free(gaps);
}

static void close_engine(void) {
    if (engine) api.destroy(engine);
    engine = NULL;
    teacher_forget();
}

static void fail(result *r, int rc, const char *kind, const char *error) {
    r->ok = 0;
    r->rc = rc;
    r->error_kind = kind;
    r->error = error;
    r->has_hint = rc == SOAK_ERR_ENGINE && strcmp(kind, "load_failed") != 0;
}

/* A payload word: base64, or "-" for empty.  0 ok, -1 bad. */
static int payload(const char *word, char **out, size_t *len) {
    if (strcmp(word, "-") == 0) word = "";
    return b64_decode(word, strlen(word), out, len);
}

static void cmd_open(result *r, const char *word) {
    static char err[1024];
    static char name[256];
    char *json;
    size_t json_len;
    if (engine) close_engine();
    if (payload(word, &json, &json_len) != 0) {
        fail(r, SOAK_ERR_INVALID_ARG, "bad_command", "bad command: open spec is not valid base64");
        return;
    }
    open_spec spec;
    if (open_spec_parse(json, json_len, &spec, err, sizeof err) != 0) {
        free(json);
        fail(r, SOAK_ERR_INVALID_ARG, "bad_command", err);
        return;
    }
    free(json);
    const char *kind = NULL;
    const char *hint = NULL;
    if (spec.kind && strcmp(spec.kind, "native") != 0) {
        snprintf(err, sizeof err, "soak-runner runs only native engines, not kind '%s'", spec.kind);
        kind = "engine_error";
    } else if (!spec.has_engine_lib || !spec.has_config_path) {
        snprintf(err, sizeof err, "bad command: open spec lacks '%s'", spec.has_engine_lib ? "config_path" : "engine_lib");
        kind = "bad_command";
        open_spec_free(&spec);
        fail(r, SOAK_ERR_INVALID_ARG, kind, err);
        return;
    } else {
        for (size_t i = 0; i < spec.n_plugins && !kind; i++) kind = load_plugin(spec.plugins[i], err, sizeof err, &hint);
        if (!kind) kind = load_engine(spec.engine_lib ? spec.engine_lib : "", &api, err, sizeof err, &hint);
        if (!kind) {
            char cerr[768] = "";
            engine = api.create(spec.config_path ? spec.config_path : "", cerr, sizeof cerr);
            if (!engine) {
                snprintf(err, sizeof err, "engine could not be created from %s: %s", spec.config_path ? spec.config_path : "",
                         cerr[0] ? cerr : "no reason given");
                kind = "create_failed";
                hint = "check the model/config path";
            } else {
                snprintf(name, sizeof name, "%s", api.name() ? api.name() : "");
                r->engine_name = name;
                r->oracle_unavailable = api.oracle_unavailable[0] ? api.oracle_unavailable : NULL;
            }
        }
    }
    open_spec_free(&spec);
    if (kind) {
        fail(r, SOAK_ERR_ENGINE, kind, err);
        r->hint = hint;
    }
}

/* set_config with a payload word (the set_config command, or a respond's optional config to set
 * first).  1: set; 0: refused, r says why. */
static int set_config_word(result *r, const char *word, char *err, size_t err_size) {
    char *json;
    size_t len;
    if (payload(word, &json, &len) != 0) {
        fail(r, SOAK_ERR_INVALID_ARG, "bad_command", "bad command: set_config needs a base64 JSON payload");
        return 0;
    }
    int ok = 1;
    if (!utf8_valid(json, len)) {
        fail(r, SOAK_ERR_INVALID_ARG, "bad_command", "bad command: set_config payload is not UTF-8");
        ok = 0;
    } else {
        int rc = api.set_config(engine, json);
        if (rc != SOAK_OK) {
            snprintf(err, err_size, "engine rejected config (rc %d)", rc);
            fail(r, SOAK_ERR_ENGINE, "engine_error", err);
            ok = 0;
        }
    }
    free(json);
    return ok;
}

/* The logits oracle's commands (teacher.c): a teacher-forced turn (`check`) or a reference turn
 * (`reference`); only the turn's summary or its reference steps leave the runner. */
static void cmd_oracle(result *r, const char *op, const char *word, sbuf *text) {
    static sbuf fields;
    static teacher_error err;
    char *json;
    size_t len;
    sbuf_free(&fields);
    if (!word) {
        fail(r, SOAK_ERR_INVALID_ARG, "bad_command", "bad command: reference and check need a base64 JSON payload");
        return;
    }
    if (payload(word, &json, &len) != 0) {
        fail(r, SOAK_ERR_INVALID_ARG, "bad_command", "bad command: the payload is not valid base64");
        return;
    }
    int64_t call_us = now_us();
    int rc = teacher_run(&api, engine, op, json, len, &fields, text, &err);
    free(json);
    if (rc != 0) {
        fail(r, err.rc, err.kind, err.message);
        r->hint = err.hint;
        return;
    }
    r->engine_us = now_us() - call_us;
    r->fields = &fields;
    r->output = text;
}

/* Runs one command (words[0] is a known op, id parsed).  Returns 1 to quit. */
static int handle(result *r, char **w, size_t n, sbuf *out, int64_t started_us) {
    static char err[256];
    const char *op = w[0];
    int needs_engine = strcmp(op, "open") && strcmp(op, "close") && strcmp(op, "quit");
    if (needs_engine && !engine) {
        fail(r, SOAK_ERR_ENGINE, "engine_error", "no engine open");
    } else if (strcmp(op, "open") == 0) {
        if (n < 3) fail(r, SOAK_ERR_INVALID_ARG, "bad_command", "bad command: open needs a spec");
        else cmd_open(r, w[2]);
    } else if (strcmp(op, "set_config") == 0) {
        if (n < 3) fail(r, SOAK_ERR_INVALID_ARG, "bad_command", "bad command: set_config needs a base64 JSON payload");
        else set_config_word(r, w[2], err, sizeof err);
    } else if (strcmp(op, "load") == 0) {
        if (api.load(engine) != SOAK_OK) fail(r, SOAK_ERR_ENGINE, "load_failed", "load failed");
    } else if (strcmp(op, "respond") == 0) {
        char *prompt, *end;
        size_t len;
        long long max_new = n >= 3 ? strtoll(w[2], &end, 10) : 0;
        if (n < 4 || !is_int_word(w[2])) {
            fail(r, SOAK_ERR_INVALID_ARG, "bad_command", "bad command: respond needs <max_new_tokens> <b64 prompt>");
        } else if (payload(w[3], &prompt, &len) != 0) {
            fail(r, SOAK_ERR_INVALID_ARG, "bad_command", "bad command: prompt is not valid base64");
        } else if (n >= 5 && !set_config_word(r, w[4], err, sizeof err)) {
            free(prompt); /* the config to set first was refused: the respond does not run */
        } else {
            stream_state st = {out, r->id, started_us, started_us + PROGRESS_INTERVAL_US, NULL, 0, 0, 0, 0};
            watch(&st);
            int64_t call_us = now_us();
            int rc = api.respond(engine, prompt, len, (int32_t)max_new, text_cb, &st);
            r->engine_us = now_us() - call_us;
            unwatch(&st);
            free(prompt);
            if (rc != SOAK_OK) {
                snprintf(err, sizeof err, "respond failed with rc %d", rc);
                fail(r, SOAK_ERR_ENGINE, "engine_error", err);
            } else {
                r->output = out;
                set_timing(r, &st);
            }
            free(st.times);
        }
    } else if (strcmp(op, "reference") == 0 || strcmp(op, "check") == 0) {
        cmd_oracle(r, op, n >= 3 ? w[2] : NULL, out);
    } else if (strcmp(op, "reset") == 0) {
        api.reset(engine);
    } else if (strcmp(op, "reinit") == 0) {
        api.reinit(engine);
    } else if (strcmp(op, "close") == 0 || strcmp(op, "quit") == 0) {
        close_engine();
    } /* status: nothing to do */

    r->status = engine ? api.status(engine) : SOAK_STATUS_NOT_LOADED;
    int with_perf = !strcmp(op, "respond") || !strcmp(op, "load") || !strcmp(op, "status") || !strcmp(op, "reinit") ||
                    !strcmp(op, "reset") || !strcmp(op, "reference") || !strcmp(op, "check");
    if (with_perf && engine) {
        memset(&r->perf, 0, sizeof r->perf);
        api.perf(engine, &r->perf);
        r->has_perf = 1;
    }
    return strcmp(op, "quit") == 0;
}

static const char *const OPS[] = {"open",   "set_config", "load",  "respond",  "reset", "reinit",
                                  "status", "close",      "quit",  "reference", "check"};

/* Parses and runs one line.  Returns 1 to quit. */
static int handle_line(char *line) {
    for (char *p = line; *p; p++) {
        if ((unsigned char)*p > 0x7f) {
            send_bad_line("bad command: not ASCII");
            return 0;
        }
    }
    char *w[8];
    size_t n = 0;
    for (char *tok = strtok(line, " \t\v\f"); tok && n < 8; tok = strtok(NULL, " \t\v\f")) w[n++] = tok;
    int known = 0;
    for (size_t i = 0; n >= 1 && i < sizeof OPS / sizeof OPS[0]; i++) known |= strcmp(w[0], OPS[i]) == 0;
    if (n < 2 || !known) {
        send_bad_line("bad command");
        return 0;
    }
    if (!is_int_word(w[1])) {
        send_bad_line("bad command id");
        return 0;
    }
    result r;
    memset(&r, 0, sizeof r);
    r.id = strtoll(w[1], NULL, 10);
    r.op = w[0];
    r.ok = 1;
    r.engine_us = -1;
    sbuf out;
    sbuf_init(&out);
    int64_t t0 = now_us();
    int quit = handle(&r, w, n, &out, t0);
    /* the engine may have put its own fatal-signal handler over soak's (libLLVM under PoCL) */
    soak_crash_reassert();
    r.wall_us = now_us() - t0;
    send_result(&r);
    sbuf_free(&out);
    return quit;
}

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        printf("soak-runner protocol %d abi %u\n", PROTOCOL_VERSION, SOAK_ENGINE_ABI_VERSION);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr,
                "usage: soak-runner   (reads worker-protocol commands on stdin; see docs/ARCHITECTURE.md)\n");
        return 2;
    }
    proto_fd = dup(1);
    if (proto_fd < 0 || dup2(2, 1) < 0) {
        perror("soak-runner: dup");
        return 1;
    }
    fcntl(proto_fd, F_SETFD, FD_CLOEXEC);
    setvbuf(stdout, NULL, _IONBF, 0);
    /* a fatal signal writes the crashing thread's frames to the log stream, then re-raises */
    soak_crash_install(2);

    sbuf hello;
    sbuf_init(&hello);
    sbuf_fmt(&hello, "{\"op\":\"hello\",\"protocol\":%d,\"pid\":%ld,\"runner\":\"native\"}", PROTOCOL_VERSION,
             (long)getpid());
    send_line(&hello);
    sbuf_free(&hello);

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        if (strspn(line, " \t\v\f") == (size_t)len) continue;
        if (handle_line(line)) break;
    }
    free(line);
    close_engine();
    return 0;
}
