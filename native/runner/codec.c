/* Base64 and JSON text helpers for soak-runner's protocol lines. */
#include "codec.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sbuf_init(sbuf *b) {
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void sbuf_free(sbuf *b) {
    free(b->data);
    sbuf_init(b);
}

static int sbuf_reserve(sbuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int sbuf_add(sbuf *b, const void *data, size_t len) {
    if (sbuf_reserve(b, len) != 0) return -1;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int sbuf_str(sbuf *b, const char *s) { return sbuf_add(b, s, strlen(s)); }

int sbuf_fmt(sbuf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof small) return sbuf_add(b, small, (size_t)n);
    if (sbuf_reserve(b, (size_t)n) != 0) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* ---- base64 ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int b64_decode(const char *in, size_t in_len, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (in_len % 4 != 0) return -1;
    char *buf = malloc(in_len / 4 * 3 + 1);
    if (!buf) return -1;
    size_t n = 0;
    for (size_t i = 0; i < in_len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];
            if (c == '=' && i + 4 == in_len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad) goto bad; /* data after '=' */
            v[k] = b64_value(c);
            if (v[k] < 0) goto bad;
        }
        uint32_t w = ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) | ((uint32_t)v[2] << 6) | (uint32_t)v[3];
        buf[n++] = (char)(w >> 16);
        if (pad < 2) buf[n++] = (char)(w >> 8);
        if (pad < 1) buf[n++] = (char)w;
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
bad:
    free(buf);
    return -1;
}

int b64_encode(sbuf *b, const void *data, size_t len) {
    const unsigned char *p = data;
    if (sbuf_reserve(b, (len + 2) / 3 * 4) != 0) return -1;
    char *o = b->data + b->len;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t w = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        *o++ = B64[(w >> 18) & 63];
        *o++ = B64[(w >> 12) & 63];
        *o++ = B64[(w >> 6) & 63];
        *o++ = B64[w & 63];
    }
    if (i < len) {
        uint32_t w = (uint32_t)p[i] << 16;
        if (i + 1 < len) w |= (uint32_t)p[i + 1] << 8;
        *o++ = B64[(w >> 18) & 63];
        *o++ = B64[(w >> 12) & 63];
        *o++ = i + 1 < len ? B64[(w >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return 0;
}

/* ---- JSON output ---- */

/* Length of the valid UTF-8 sequence at s (max n bytes), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    return len;
}

int utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0) return 0;
        i += n;
    }
    return 1;
}

int json_quote(sbuf *b, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    if (sbuf_add(b, "\"", 1)) return -1;
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        int rc = 0;
        if (c == '"') rc = sbuf_add(b, "\\\"", 2);
        else if (c == '\\') rc = sbuf_add(b, "\\\\", 2);
        else if (c == '\n') rc = sbuf_add(b, "\\n", 2);
        else if (c == '\r') rc = sbuf_add(b, "\\r", 2);
        else if (c == '\t') rc = sbuf_add(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7F) rc = sbuf_fmt(b, "\\u%04x", c);
        else {
            size_t n = utf8_seq(p + i, len - i);
            if (n == 0) {
                rc = sbuf_str(b, "\\ufffd");
                n = 1;
            } else {
                rc = sbuf_add(b, p + i, n);
            }
            if (rc) return -1;
            i += n;
            continue;
        }
        if (rc) return -1;
        i++;
    }
    return sbuf_add(b, "\"", 1);
}

/* ---- JSON input (the open spec, the oracle's payloads) ---- */

typedef struct {
    const char *p;
    const char *end;
    const char *start;
    char *err;
    size_t err_len;
    const char *doc; /* what is read, for messages: "open spec", "oracle payload" */
} reader;

static int fail(reader *r, const char *what) {
    if (r->err && r->err_len)
        snprintf(r->err, r->err_len, "invalid %s JSON: %s at byte %ld", r->doc, what, (long)(r->p - r->start));
    return -1;
}

static void skip_ws(reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int hex4(reader *r, uint32_t *out) {
    if (r->end - r->p < 4) return fail(r, "short \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char c = r->p[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return fail(r, "bad \\u escape");
    }
    r->p += 4;
    *out = v;
    return 0;
}

static int put_utf8(sbuf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    return sbuf_add(b, u, n);
}

/* Parses a string literal into a malloc'd C string (out may be NULL to skip). */
static int parse_string(reader *r, char **out) {
    if (r->p >= r->end || *r->p != '"') return fail(r, "expected a string");
    r->p++;
    sbuf b;
    sbuf_init(&b);
    sbuf_add(&b, "", 0);
    while (r->p < r->end && *r->p != '"') {
        unsigned char c = (unsigned char)*r->p++;
        if (c == '\\') {
            if (r->p >= r->end) break;
            char e = *r->p++;
            uint32_t cp;
            switch (e) {
            case '"': case '\\': case '/': sbuf_add(&b, &e, 1); break;
            case 'b': sbuf_add(&b, "\b", 1); break;
            case 'f': sbuf_add(&b, "\f", 1); break;
            case 'n': sbuf_add(&b, "\n", 1); break;
            case 'r': sbuf_add(&b, "\r", 1); break;
            case 't': sbuf_add(&b, "\t", 1); break;
            case 'u':
                if (hex4(r, &cp)) goto bad;
                if (cp >= 0xD800 && cp <= 0xDBFF && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
                    uint32_t lo;
                    r->p += 2;
                    if (hex4(r, &lo)) goto bad;
                    if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    else { put_utf8(&b, 0xFFFD); cp = lo; }
                }
                if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
                if (cp == 0) { fail(r, "NUL in a path"); goto bad; }
                put_utf8(&b, cp);
                break;
            default: fail(r, "bad escape"); goto bad;
            }
        } else if (c < 0x20) {
            fail(r, "control character in a string");
            goto bad;
        } else {
            sbuf_add(&b, &c, 1);
        }
    }
    if (r->p >= r->end) { fail(r, "unterminated string"); goto bad; }
    r->p++;
    if (!b.data) { fail(r, "out of memory"); goto bad; }
    if (out) *out = b.data;
    else sbuf_free(&b);
    return 0;
bad:
    sbuf_free(&b);
    return -1;
}

static int skip_value(reader *r, int depth);

static int skip_container(reader *r, char close, int depth) {
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) { r->p++; return 0; }
    for (;;) {
        skip_ws(r);
        if (close == '}') {
            if (parse_string(r, NULL)) return -1;
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') return fail(r, "expected ':'");
            r->p++;
        }
        if (skip_value(r, depth + 1)) return -1;
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') { r->p++; continue; }
        if (r->p < r->end && *r->p == close) { r->p++; return 0; }
        return fail(r, "expected ',' or a closing bracket");
    }
}

static int skip_value(reader *r, int depth) {
    if (depth > 64) return fail(r, "nested too deep");
    skip_ws(r);
    if (r->p >= r->end) return fail(r, "unexpected end");
    char c = *r->p;
    if (c == '"') return parse_string(r, NULL);
    if (c == '{') return skip_container(r, '}', depth);
    if (c == '[') return skip_container(r, ']', depth);
    const char *words[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(words[k]);
        if ((size_t)(r->end - r->p) >= n && memcmp(r->p, words[k], n) == 0) { r->p += n; return 0; }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        while (r->p < r->end && *r->p && strchr("+-0123456789.eE", *r->p)) r->p++;
        return 0;
    }
    return fail(r, "unexpected character");
}

static int is_null(reader *r) {
    if (r->end - r->p >= 4 && memcmp(r->p, "null", 4) == 0) { r->p += 4; return 1; }
    return 0;
}

static int parse_plugins(reader *r, open_spec *spec) {
    if (is_null(r)) return 0;
    if (r->p >= r->end || *r->p != '[') return fail(r, "\"plugins\" must be a list of paths");
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == ']') { r->p++; return 0; }
    for (;;) {
        skip_ws(r);
        char *s;
        if (parse_string(r, &s)) return -1;
        char **grown = realloc(spec->plugins, (spec->n_plugins + 1) * sizeof *grown);
        if (!grown) { free(s); return fail(r, "out of memory"); }
        spec->plugins = grown;
        spec->plugins[spec->n_plugins++] = s;
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') { r->p++; continue; }
        if (r->p < r->end && *r->p == ']') { r->p++; return 0; }
        return fail(r, "expected ',' or ']'");
    }
}

/* The open spec's members (json_members below), each read from its own text. */
int open_spec_parse(const char *json, size_t len, open_spec *spec, char *err, size_t err_len) {
    memset(spec, 0, sizeof *spec);
    json_member *members;
    size_t n;
    if (json_members(json, len, "open spec", &members, &n, err, err_len)) return -1;
    static const char *const keys[] = {"kind", "engine_lib", "config_path", "plugins"};
    char **slots[] = {&spec->kind, &spec->engine_lib, &spec->config_path, NULL};
    int rc = 0;
    for (size_t k = 0; k < 4 && !rc; k++) {
        const json_member *m = json_member_get(members, n, keys[k]);
        if (!m) continue;
        reader r = {m->value, m->value + m->len, json, err, err_len, "open spec"}; /* offsets from the spec's start */
        if (k == 1) spec->has_engine_lib = 1;
        if (k == 2) spec->has_config_path = 1;
        if (!slots[k]) rc = parse_plugins(&r, spec);
        else if (!is_null(&r)) rc = parse_string(&r, slots[k]);
    }
    json_members_free(members, n);
    if (rc) open_spec_free(spec);
    return rc;
}

void open_spec_free(open_spec *spec) {
    free(spec->kind);
    free(spec->engine_lib);
    free(spec->config_path);
    for (size_t i = 0; i < spec->n_plugins; i++) free(spec->plugins[i]);
    free(spec->plugins);
    memset(spec, 0, sizeof *spec);
}

/* ---- one object's members, each value as its text ---- */

int json_members(const char *json, size_t len, const char *doc, json_member **members, size_t *n, char *err,
                 size_t err_len) {
    *members = NULL;
    *n = 0;
    reader r = {json, json + len, json, err, err_len, doc};
    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{') return fail(&r, "expected an object");
    r.p++;
    skip_ws(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
    } else {
        for (;;) {
            char *key;
            skip_ws(&r);
            if (parse_string(&r, &key)) goto bad;
            json_member *grown = realloc(*members, (*n + 1) * sizeof *grown);
            if (!grown) { free(key); fail(&r, "out of memory"); goto bad; }
            *members = grown;
            json_member *m = &grown[(*n)++];
            m->key = key;
            skip_ws(&r);
            if (r.p >= r.end || *r.p != ':') { fail(&r, "expected ':'"); goto bad; }
            r.p++;
            skip_ws(&r);
            m->value = r.p;
            if (skip_value(&r, 1)) goto bad;
            m->len = (size_t)(r.p - m->value);
            skip_ws(&r);
            if (r.p < r.end && *r.p == ',') { r.p++; continue; }
            if (r.p < r.end && *r.p == '}') { r.p++; break; }
            fail(&r, "expected ',' or '}'");
            goto bad;
        }
    }
    skip_ws(&r);
    if (r.p != r.end) { fail(&r, "trailing data"); goto bad; }
    return 0;
bad:
    json_members_free(*members, *n);
    *members = NULL;
    *n = 0;
    return -1;
}

void json_members_free(json_member *members, size_t n) {
    for (size_t i = 0; i < n; i++) free(members[i].key);
    free(members);
}

const json_member *json_member_get(const json_member *members, size_t n, const char *key) {
    for (size_t i = n; i-- > 0;) /* the last of a repeated key, as Python's json */
        if (strcmp(members[i].key, key) == 0) return &members[i];
    return NULL;
}

int json_is_null(const json_member *m) { return m->len == 4 && memcmp(m->value, "null", 4) == 0; }

int json_string_of(const json_member *m, char **out, size_t *len) {
    reader r = {m->value, m->value + m->len, m->value, NULL, 0, ""};
    *out = NULL;
    if (parse_string(&r, out) || r.p != r.end) {
        free(*out);
        *out = NULL;
        return -1;
    }
    if (len) *len = strlen(*out);
    return 0;
}

/* One JSON number at p (up to end): 0 and *out, or -1.  skip_value has bounded it. */
static int number_at(const char *p, const char *end, double *out, const char **next) {
    const char *q = p;
    if (q < end && *q == '-') q++;
    if (q >= end || *q < '0' || *q > '9') return -1;
    char text[64];
    const char *stop = q;
    while (stop < end && *stop && strchr("+-0123456789.eE", *stop)) stop++;
    if ((size_t)(stop - p) >= sizeof text) return -1;
    memcpy(text, p, (size_t)(stop - p));
    text[stop - p] = '\0';
    char *tail;
    *out = strtod(text, &tail);
    if (*tail) return -1;
    *next = stop;
    return 0;
}

int json_number_of(const json_member *m, double *out) {
    const char *next;
    return number_at(m->value, m->value + m->len, out, &next) == 0 && next == m->value + m->len ? 0 : -1;
}

int json_numbers_of(const json_member *m, double *out, size_t max, size_t *n) {
    reader r = {m->value, m->value + m->len, m->value, NULL, 0, ""};
    *n = 0;
    if (r.p >= r.end || *r.p != '[') return -1;
    r.p++;
    skip_ws(&r);
    if (r.p < r.end && *r.p == ']') return r.p + 1 == r.end ? 0 : -1;
    for (;;) {
        double v;
        skip_ws(&r);
        if (number_at(r.p, r.end, &v, &r.p)) return -1;
        if (*n < max) out[*n] = v;
        ++*n;
        skip_ws(&r);
        if (r.p < r.end && *r.p == ',') { r.p++; continue; }
        if (r.p < r.end && *r.p == ']') return r.p + 1 == r.end ? 0 : -1;
        return -1;
    }
}
