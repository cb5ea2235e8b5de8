/* soak-runner's worker commands `reference` and `check` (see teacher.h).  Each step follows the
 * Python worker's: soak/oracle/wire.py run(), teacher.py reference_turn()/check_turn(), turn.py
 * TurnCheck, and NativeEngine's checks around the engine's calls (soak/engine/loader.py), so both
 * workers refuse the same payloads with the same error kinds. */
#define _POSIX_C_SOURCE 200809L
#include "teacher.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "soak_oracle.h"

static int32_t vocab_known; /* NativeEngine.vocab: 0 until the engine's first forward */

void teacher_forget(void) { vocab_known = 0; }

typedef struct {
    const engine_api *api;
    soak_engine *e;
    teacher_error *err;
    json_member *members;
    size_t n_members;
} ctx;

static int fail(ctx *c, const char *kind, int rc, const char *hint, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err->message, sizeof c->err->message, fmt, ap);
    va_end(ap);
    c->err->kind = kind;
    c->err->rc = rc;
    c->err->hint = hint;
    return -1;
}

/* The Python worker's answer to a ValueError/KeyError (the payload, or native/oracle refusing a step). */
#define BAD(c, fmt, ...) fail(c, "bad_command", SOAK_ERR_INVALID_ARG, NULL, "bad command: " fmt, __VA_ARGS__)

static const char *rc_name(int rc) {
    switch (rc) {
    case SOAK_OK: return "OK";
    case SOAK_ERR_INVALID_ARG: return "ERR_INVALID_ARG";
    case SOAK_ERR_STATE: return "ERR_STATE";
    case SOAK_ERR_ENGINE: return "ERR_ENGINE";
    default: return "unknown";
    }
}

/* NativeEngine._check: an engine call that did not return SOAK_OK. */
static int engine_failed(ctx *c, const char *what, int rc) {
    return fail(c, "engine_error", SOAK_ERR_ENGINE, NULL, "%s failed with rc %d (%s), status %d", what, rc,
                rc_name(rc), c->api->status(c->e));
}

/* NativeEngine._oracle: the engine lacks the optional functions (OracleUnavailable). */
static int available(ctx *c, const char *what) {
    if (!c->api->oracle_unavailable[0]) return 0;
    const char *name = c->api->name ? c->api->name() : NULL;
    return fail(c, "engine_error", SOAK_ERR_ENGINE,
                "rebuild it against this soak's native/include/soak_engine.h (the oracle functions are optional; "
                "see its comments)",
                "the engine '%s' cannot %s: %s", name ? name : "", what, c->api->oracle_unavailable);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the engine's oracle functions, checked as NativeEngine checks them ---- */

static int forward(ctx *c, const int32_t *ids, size_t n, int prefill, const float **logits, int32_t *vocab) {
    if (available(c, "run forward")) return -1;
    if (!n) return fail(c, "bad_input", SOAK_ERR_ENGINE, NULL, "forward needs at least one token id");
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (vocab_known && ids[i] >= vocab_known)) {
            char bound[16] = "?";
            if (vocab_known) snprintf(bound, sizeof bound, "%d", (int)vocab_known);
            return fail(c, "bad_input", SOAK_ERR_ENGINE, NULL, "token id %d is outside the vocabulary [0, %s)",
                        (int)ids[i], bound);
        }
    }
    *logits = NULL;
    *vocab = 0;
    int rc = c->api->forward(c->e, ids, n, prefill ? 1 : 0, logits, vocab);
    if (rc != SOAK_OK) return engine_failed(c, "forward", rc);
    if (*vocab <= 0 || !*logits)
        return fail(c, "engine_error", SOAK_ERR_ENGINE, NULL, "forward returned no logits (vocab %d)", (int)*vocab);
    vocab_known = *vocab;
    return 0;
}

static int is_stop(ctx *c, int32_t id, int *stop) {
    if (available(c, "tell stop tokens")) return -1;
    int rc = c->api->is_stop(c->e, id);
    if (rc < 0) return engine_failed(c, "is_stop", rc);
    *stop = rc == 1;
    return 0;
}

/* wire._text: the bytes respond() would stream for these tokens. */
static int tokens_text(ctx *c, const int32_t *tokens, size_t n, sbuf *text) {
    for (size_t i = 0; i < n; i++) {
        if (available(c, "decode tokens")) return -1;
        const char *data = NULL;
        size_t len = 0;
        int rc = c->api->token_bytes(c->e, tokens[i], &data, &len);
        if (rc != SOAK_OK) return engine_failed(c, "token_bytes", rc);
        if (len && sbuf_add(text, data, len) != 0) return fail(c, "engine_error", SOAK_ERR_ENGINE, NULL, "out of memory");
    }
    return 0;
}

/* ---- the payload ---- */

static const json_member *member(ctx *c, const char *key) { return json_member_get(c->members, c->n_members, key); }

static int need(ctx *c, const char *key, const json_member **m) {
    *m = member(c, key);
    return *m ? 0 : BAD(c, "'%s'", key); /* Python's KeyError */
}

static int get_b64(ctx *c, const char *key, char **out, size_t *len) {
    const json_member *m;
    char *s;
    size_t n;
    *out = NULL;
    if (need(c, key, &m)) return -1;
    if (json_string_of(m, &s, &n)) return BAD(c, "%s must be a base64 string", key);
    int rc = b64_decode(s, n, out, len);
    free(s);
    return rc ? BAD(c, "%s is not valid base64", key) : 0;
}

/* int(req[key]) of a JSON number (truncated, as Python's int()). */
static int get_int(ctx *c, const char *key, long long *out) {
    const json_member *m;
    double v;
    if (need(c, key, &m)) return -1;
    if (json_number_of(m, &v) || !(fabs(v) < 2147483648.0)) return BAD(c, "%s must be a whole number", key);
    *out = (long long)v;
    return 0;
}

static int32_t le_i32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static float le_f32(const unsigned char *p) {
    uint32_t u = (uint32_t)le_i32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void put_i32(sbuf *b, int32_t v) {
    unsigned char p[4] = {(unsigned char)v, (unsigned char)((uint32_t)v >> 8), (unsigned char)((uint32_t)v >> 16),
                          (unsigned char)((uint32_t)v >> 24)};
    sbuf_add(b, p, 4);
}

static void put_f32(sbuf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    put_i32(b, (int32_t)u);
}

/* ---- TurnCheck (soak/oracle/turn.py): one turn's steps folded into its summary ---- */

typedef struct {
    int has_limits;
    double abs_limit, kl_limit;
    long steps, flips, first_flip, nonfinite_steps, first_nonfinite, first_over; /* -1: None */
    double kl_sum, kl_max, nmse_max, abs_max, nll_sum;
    long kl_max_step, abs_max_step, rank_max;
} turn_check;

static void turn_init(turn_check *t, int has_limits, double abs_limit, double kl_limit) {
    memset(t, 0, sizeof *t);
    t->has_limits = has_limits;
    t->abs_limit = abs_limit;
    t->kl_limit = kl_limit;
    t->first_flip = t->first_nonfinite = t->first_over = t->kl_max_step = t->abs_max_step = -1;
}

static void turn_add(turn_check *t, const soak_step_metrics *m) {
    long step = t->steps++;
    if (!m->agree) {
        t->flips++;
        if (t->first_flip < 0) t->first_flip = step;
    }
    if (m->nonfinite || !isfinite(m->kl)) {
        t->nonfinite_steps++;
        if (t->first_nonfinite < 0) t->first_nonfinite = step;
    }
    double kl = isfinite(m->kl) ? m->kl : INFINITY;
    t->kl_sum += kl;
    if (kl > t->kl_max || t->kl_max_step < 0) {
        t->kl_max = kl;
        t->kl_max_step = step;
    }
    double nmse = isnan(m->nmse) ? INFINITY : m->nmse;
    if (nmse > t->nmse_max) t->nmse_max = nmse;
    double ab = isnan(m->max_abs) ? INFINITY : m->max_abs;
    if (ab > t->abs_max || t->abs_max_step < 0) {
        t->abs_max = ab;
        t->abs_max_step = step;
    }
    if (t->has_limits && t->first_over < 0 && (ab > t->abs_limit || kl > t->kl_limit)) t->first_over = step;
    long rank = m->ref_rank >= 0 ? m->ref_rank : 1L << 30;
    if (rank > t->rank_max) t->rank_max = rank;
    t->nll_sum += isfinite(m->ref_logprob) ? -m->ref_logprob : INFINITY;
}

/* A float as JSON: the shortest text that reads back as the same double (as Python's repr), always
 * with a '.' or an exponent; a non-finite measure travels as null (turn.py _num). */
static void add_float(sbuf *b, const char *key, double v) {
    sbuf_fmt(b, ",\"%s\":", key);
    if (!isfinite(v)) {
        sbuf_str(b, "null");
        return;
    }
    char text[40];
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, v);
        if (strtod(text, NULL) == v) break;
    }
    sbuf_str(b, text);
    if (!strpbrk(text, ".e")) sbuf_str(b, ".0");
}

static void add_step(sbuf *b, const char *key, long v) {
    if (v < 0) sbuf_fmt(b, ",\"%s\":null", key);
    else sbuf_fmt(b, ",\"%s\":%ld", key, v);
}

static void turn_summary(const turn_check *t, sbuf *b) {
    double n = (double)(t->steps > 1 ? t->steps : 1);
    sbuf_fmt(b, "\"steps\":%ld,\"flips\":%ld", t->steps, t->flips);
    add_step(b, "first_flip", t->first_flip);
    sbuf_fmt(b, ",\"nonfinite_steps\":%ld", t->nonfinite_steps);
    add_step(b, "first_nonfinite", t->first_nonfinite);
    add_step(b, "first_over", t->first_over);
    add_float(b, "kl_mean", t->kl_sum / n);
    add_float(b, "kl_max", t->kl_max);
    add_step(b, "kl_max_step", t->kl_max_step);
    add_float(b, "nmse_max", t->nmse_max);
    add_float(b, "abs_max", t->abs_max);
    add_step(b, "abs_max_step", t->abs_max_step);
    sbuf_fmt(b, ",\"rank_max\":%ld", t->rank_max);
    add_float(b, "nll", t->nll_sum / n);
}

/* ---- the commands ---- */

/* wire.run "reference" / teacher.reference_turn: a greedy turn on the oracle engine, each step's
 * top-k kept (token, float32 log-sum-exp, k x (id, float32 log-probability)). */
static int run_reference(ctx *c, sbuf *fields, sbuf *text) {
    char *prompt = NULL;
    int32_t *input = NULL, *tokens = NULL;
    size_t n_input = 0, n_tokens = 0;
    sbuf steps;
    sbuf_init(&steps);
    int rc = -1;
    long long max_new, k;
    size_t prompt_len;
    if (get_b64(c, "prompt", &prompt, &prompt_len)) goto out;
    if (available(c, "tokenize")) goto out;
    const int32_t *ids = NULL;
    int trc = c->api->tokenize(c->e, prompt, prompt_len, &ids, &n_input);
    if (trc != SOAK_OK) {
        engine_failed(c, "tokenize", trc);
        goto out;
    }
    input = malloc((n_input ? n_input : 1) * sizeof *input); /* the engine's memory lasts until its next call */
    if (!input) {
        fail(c, "engine_error", SOAK_ERR_ENGINE, NULL, "out of memory");
        goto out;
    }
    if (n_input) memcpy(input, ids, n_input * sizeof *input);
    if (get_int(c, "max_new", &max_new) || get_int(c, "topk", &k)) goto out;
    const float *logits;
    int32_t vocab;
    if (forward(c, input, n_input, 1, &logits, &vocab)) goto out;
    size_t cap = 0;
    const char *end = "length";
    for (long long s = 0; s < max_new; s++) {
        if (n_tokens == cap) {
            cap = cap ? 2 * cap : 64;
            int32_t *grown = realloc(tokens, cap * sizeof *tokens);
            if (!grown) {
                fail(c, "engine_error", SOAK_ERR_ENGINE, NULL, "out of memory");
                goto out;
            }
            tokens = grown;
        }
        int32_t top[SOAK_ORACLE_MAX_K];
        float lps[SOAK_ORACLE_MAX_K];
        double lse;
        int orc = k >= 1 && k <= SOAK_ORACLE_MAX_K
                      ? soak_oracle_topk(logits, vocab, (int32_t)k, top, lps, &lse)
                      : SOAK_ORACLE_BAD_ARGS;
        if (orc == SOAK_ORACLE_NONFINITE) {
            BAD(c, "%s", "the oracle's logits are not finite (NaN or +inf): no reference can be made from them");
            goto out;
        }
        if (orc != SOAK_ORACLE_OK) {
            BAD(c, "bad top-k arguments: n=%d, k=%lld (k must be 1..%d)", (int)vocab, k,
                vocab < SOAK_ORACLE_MAX_K ? (int)vocab : SOAK_ORACLE_MAX_K);
            goto out;
        }
        int32_t token = top[0];
        tokens[n_tokens++] = token;
        put_i32(&steps, token);
        put_f32(&steps, (float)lse); /* float32, as the reference file keeps it */
        for (long long j = 0; j < k; j++) {
            put_i32(&steps, top[j]);
            put_f32(&steps, lps[j]);
        }
        int stop = 0;
        if (is_stop(c, token, &stop)) goto out;
        if (stop) {
            end = "stop";
            break;
        }
        /* every generated token but a stop token is fed: the KV cache ends as respond() leaves it */
        if (forward(c, &token, 1, 0, &logits, &vocab)) goto out;
    }
    size_t body = strcmp(end, "stop") == 0 ? n_tokens - 1 : n_tokens;
    if (tokens_text(c, tokens, body, text)) goto out;
    sbuf_str(fields, ",\"turn\":{\"input_ids\":\"");
    sbuf inputs;
    sbuf_init(&inputs);
    for (size_t i = 0; i < n_input; i++) put_i32(&inputs, input[i]);
    b64_encode(fields, inputs.data ? inputs.data : "", inputs.len);
    sbuf_free(&inputs);
    sbuf_str(fields, "\",\"steps\":\"");
    b64_encode(fields, steps.data ? steps.data : "", steps.len);
    sbuf_fmt(fields, "\",\"n\":%zu,\"end\":\"%s\"}", n_tokens, end);
    rc = 0;
out:
    free(prompt);
    free(input);
    free(tokens);
    sbuf_free(&steps);
    return rc;
}

/* wire.run "check" / teacher.check_turn: the reference's ids fed one step at a time through the
 * engine's forward; each step's logits compared with the reference's where they lie. */
static int run_check(ctx *c, sbuf *fields, sbuf *text) {
    char *id_bytes = NULL, *steps = NULL;
    int32_t *input = NULL, *tokens = NULL;
    size_t id_len, steps_len;
    int rc = -1;
    long long k;
    if (get_b64(c, "input_ids", &id_bytes, &id_len)) goto out;
    if (id_len % 4) {
        BAD(c, "%s", "id list is not a whole number of int32");
        goto out;
    }
    if (get_int(c, "topk", &k)) goto out;
    if (k < 0 || k > 1 << 24) { /* else (0 or above SOAK_ORACLE_MAX_K) refused at the first step, as the Python worker */
        BAD(c, "topk %lld is out of range", k);
        goto out;
    }
    if (get_b64(c, "steps", &steps, &steps_len)) goto out;
    size_t record = 8 + 8 * (size_t)k;
    if (steps_len % record) {
        BAD(c, "steps are not a whole number of %zu-byte records", record);
        goto out;
    }
    const json_member *end_m, *lim_m = member(c, "limits");
    if (need(c, "end", &end_m)) goto out;
    char *end_text = NULL;
    int stop_end = json_string_of(end_m, &end_text, NULL) == 0 && strcmp(end_text, "stop") == 0;
    free(end_text);
    double limits[2];
    size_t n_limits = 0;
    if (lim_m && !json_is_null(lim_m) && (json_numbers_of(lim_m, limits, 2, &n_limits) || (n_limits != 0 && n_limits != 2))) {
        BAD(c, "%s", "limits must be [abs_max, kl_max]");
        goto out;
    }
    size_t n_input = id_len / 4, n_steps = steps_len / record;
    input = malloc((n_input ? n_input : 1) * sizeof *input);
    tokens = malloc((n_steps ? n_steps : 1) * sizeof *tokens);
    if (!input || !tokens) {
        fail(c, "engine_error", SOAK_ERR_ENGINE, NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_input; i++) input[i] = le_i32((const unsigned char *)id_bytes + 4 * i);

    turn_check check;
    turn_init(&check, n_limits >= 2, n_limits >= 2 ? limits[0] : 0, n_limits >= 2 ? limits[1] : 0);
    const float *logits;
    int32_t vocab;
    int64_t t0 = now_ns();
    if (forward(c, input, n_input, 1, &logits, &vocab)) goto out;
    int64_t t1 = now_ns(), decode_ns = 0;
    for (size_t s = 0; s < n_steps; s++) {
        const unsigned char *p = (const unsigned char *)steps + s * record;
        int32_t ref_ids[SOAK_ORACLE_MAX_K], top = INT32_MIN;
        float ref_lps[SOAK_ORACLE_MAX_K];
        int32_t token = le_i32(p);
        if (k < 1 || k > SOAK_ORACLE_MAX_K) {
            BAD(c, "reference step does not fit these logits: vocabulary %d, k=%lld, token %d", (int)vocab, k,
                (int)token);
            goto out;
        }
        for (long long j = 0; j < k; j++) {
            ref_ids[j] = le_i32(p + 8 + 8 * j);
            ref_lps[j] = le_f32(p + 12 + 8 * j);
            if (ref_ids[j] > top) top = ref_ids[j];
        }
        tokens[s] = token;
        soak_step_metrics m;
        if (soak_oracle_compare(logits, vocab, (int32_t)k, ref_ids, ref_lps, token, &m) != SOAK_ORACLE_OK) {
            BAD(c, "reference step does not fit these logits: vocabulary %d, k=%lld, token %d, ids up to %d",
                (int)vocab, k, (int)token, (int)top);
            goto out;
        }
        turn_add(&check, &m);
        if (s + 1 < n_steps || !stop_end) { /* fed as reference_turn fed it */
            int64_t a = now_ns();
            if (forward(c, &token, 1, 0, &logits, &vocab)) goto out;
            decode_ns += now_ns() - a;
        }
    }
    if (tokens_text(c, tokens, stop_end && n_steps ? n_steps - 1 : n_steps, text)) goto out;
    sbuf_str(fields, ",\"oracle\":{");
    turn_summary(&check, fields);
    sbuf_fmt(fields, ",\"prefill_us\":%lld,\"decode_us\":%lld,\"input_tokens\":%zu}", (long long)((t1 - t0) / 1000),
             (long long)(decode_ns / 1000), n_input);
    rc = 0;
out:
    free(id_bytes);
    free(steps);
    free(input);
    free(tokens);
    return rc;
}

int teacher_run(const engine_api *api, soak_engine *engine, const char *op, const char *payload, size_t len,
                sbuf *fields, sbuf *text, teacher_error *err) {
    ctx c = {api, engine, err, NULL, 0};
    char why[256];
    if (!utf8_valid(payload, len)) return BAD(&c, "%s", "the payload is not UTF-8");
    if (json_members(payload, len, "oracle payload", &c.members, &c.n_members, why, sizeof why) != 0)
        return BAD(&c, "%s", why);
    int rc = 0;
    /* a config to set first (the test engine's iteration), as a respond's */
    const json_member *config = member(&c, "config");
    if (config && !json_is_null(config)) {
        char *json = malloc(config->len + 1);
        if (!json) {
            rc = fail(&c, "engine_error", SOAK_ERR_ENGINE, NULL, "out of memory");
        } else {
            memcpy(json, config->value, config->len);
            json[config->len] = '\0';
            int src = api->set_config(engine, json);
            if (src != SOAK_OK)
                rc = fail(&c, "engine_error", SOAK_ERR_ENGINE, NULL, "engine rejected config %s (rc %d)", json, src);
            free(json);
        }
    }
    /* "lib" names the Python worker's libsoak_oracle.so: native/oracle is compiled into the runner */
    if (rc == 0) rc = strcmp(op, "reference") == 0 ? run_reference(&c, fields, text) : run_check(&c, fields, text);
    json_members_free(c.members, c.n_members);
    return rc;
}
