#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t pos;
    char *err;
    size_t err_len;
    int failed;
} parser;

static void fail(parser *p, const char *what) {
    if (!p->failed && p->err && p->err_len) snprintf(p->err, p->err_len, "%s at byte %zu", what, p->pos);
    p->failed = 1;
}

static void skip_ws(parser *p) {
    while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r') p->pos++;
}

static json_value *new_value(json_type t) {
    json_value *v = calloc(1, sizeof(*v));
    if (v) v->type = t;
    return v;
}

static json_value *parse_value(parser *p, int depth);

static void put_utf8(char **out, unsigned cp) {
    char *o = *out;
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    *out = o;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static char *parse_string_raw(parser *p) {
    if (p->s[p->pos] != '"') { fail(p, "expected string"); return NULL; }
    p->pos++;
    size_t start = p->pos;
    size_t len = 0;
    while (p->s[start + len] && p->s[start + len] != '"') {
        if (p->s[start + len] == '\\' && p->s[start + len + 1]) len++;
        len++;
    }
    char *out = malloc(len * 2 + 8), *o = out;
    if (!out) { fail(p, "out of memory"); return NULL; }
    while (p->s[p->pos] && p->s[p->pos] != '"') {
        char c = p->s[p->pos++];
        if (c != '\\') { *o++ = c; continue; }
        char e = p->s[p->pos++];
        switch (e) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '/': *o++ = '/'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'n': *o++ = '\n'; break;
            case 'r': *o++ = '\r'; break;
            case 't': *o++ = '\t'; break;
            case 'u': {
                unsigned cp;
                if (hex4(p->s + p->pos, &cp)) { fail(p, "bad \\u escape"); free(out); return NULL; }
                p->pos += 4;
                if (cp >= 0xD800 && cp < 0xDC00 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
                    unsigned lo;
                    if (!hex4(p->s + p->pos + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                        p->pos += 6;
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                }
                put_utf8(&o, cp);
                break;
            }
            default: fail(p, "bad escape"); free(out); return NULL;
        }
    }
    if (p->s[p->pos] != '"') { fail(p, "unterminated string"); free(out); return NULL; }
    p->pos++;
    *o = 0;
    return out;
}

static json_value *parse_container(parser *p, int depth, int is_object) {
    json_value *v = new_value(is_object ? JSON_OBJECT : JSON_ARRAY);
    json_value **tail = &v->child;
    char close = is_object ? '}' : ']';
    p->pos++;
    skip_ws(p);
    if (p->s[p->pos] == close) { p->pos++; return v; }
    for (;;) {
        char *key = NULL;
        skip_ws(p);
        if (is_object) {
            key = parse_string_raw(p);
            if (!key) break;
            skip_ws(p);
            if (p->s[p->pos] != ':') { free(key); fail(p, "expected ':'"); break; }
            p->pos++;
        }
        json_value *item = parse_value(p, depth + 1);
        if (!item) { free(key); break; }
        item->key = key;
        *tail = item;
        tail = &item->next;
        skip_ws(p);
        if (p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->s[p->pos] == close) { p->pos++; return v; }
        fail(p, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        break;
    }
    json_free(v);
    return NULL;
}

static json_value *parse_value(parser *p, int depth) {
    if (depth > 64) { fail(p, "nesting too deep"); return NULL; }
    skip_ws(p);
    char c = p->s[p->pos];
    if (c == '{') return parse_container(p, depth, 1);
    if (c == '[') return parse_container(p, depth, 0);
    if (c == '"') {
        char *s = parse_string_raw(p);
        if (!s) return NULL;
        json_value *v = new_value(JSON_STRING);
        v->string = s;
        return v;
    }
    if (!strncmp(p->s + p->pos, "true", 4)) { p->pos += 4; json_value *v = new_value(JSON_BOOL); v->number = 1; return v; }
    if (!strncmp(p->s + p->pos, "false", 5)) { p->pos += 5; return new_value(JSON_BOOL); }
    if (!strncmp(p->s + p->pos, "null", 4)) { p->pos += 4; return new_value(JSON_NULL); }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char *end;
        double d = strtod(p->s + p->pos, &end);
        if (end == p->s + p->pos) { fail(p, "bad number"); return NULL; }
        p->pos = (size_t)(end - p->s);
        json_value *v = new_value(JSON_NUMBER);
        v->number = d;
        return v;
    }
    fail(p, "unexpected character");
    return NULL;
}

json_value *json_parse(const char *text, char *err, size_t err_len) {
    parser p = {text, 0, err, err_len, 0};
    if (!text) { fail(&p, "no text"); return NULL; }
    json_value *v = parse_value(&p, 0);
    if (v) {
        skip_ws(&p);
        if (p.s[p.pos]) { fail(&p, "trailing characters"); json_free(v); return NULL; }
    }
    return v;
}

void json_free(json_value *v) {
    while (v) {
        json_value *next = v->next;
        json_free(v->child);
        free(v->string);
        free(v->key);
        free(v);
        v = next;
    }
}

const json_value *json_get(const json_value *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (const json_value *c = obj->child; c; c = c->next)
        if (c->key && !strcmp(c->key, key)) return c;
    return NULL;
}

double json_number(const json_value *obj, const char *key, double fallback) {
    const json_value *v = json_get(obj, key);
    return (v && (v->type == JSON_NUMBER || v->type == JSON_BOOL)) ? v->number : fallback;
}

const char *json_string(const json_value *obj, const char *key, const char *fallback) {
    const json_value *v = json_get(obj, key);
    return (v && v->type == JSON_STRING) ? v->string : fallback;
}

int json_bool(const json_value *obj, const char *key, int fallback) {
    const json_value *v = json_get(obj, key);
    return (v && (v->type == JSON_BOOL || v->type == JSON_NUMBER)) ? v->number != 0 : fallback;
}
