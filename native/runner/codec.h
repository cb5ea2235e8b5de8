/* Base64 and JSON text helpers for soak-runner's protocol lines. */
#ifndef SOAK_RUNNER_CODEC_H
#define SOAK_RUNNER_CODEC_H

#include <stddef.h>

/* A growable byte buffer (always NUL-terminated after its len bytes). */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} sbuf;

void sbuf_init(sbuf *b);
void sbuf_free(sbuf *b);
int sbuf_add(sbuf *b, const void *data, size_t len); /* 0 ok, -1 out of memory */
int sbuf_str(sbuf *b, const char *s);
int sbuf_fmt(sbuf *b, const char *fmt, ...);

/* Standard alphabet with '=' padding.  Decode returns 0, or -1 on bad input
 * (bad character, bad length or bad padding).  *out is malloc'd, NUL-terminated. */
int b64_decode(const char *in, size_t in_len, char **out, size_t *out_len);
int b64_encode(sbuf *b, const void *data, size_t len);

/* Appends a JSON string literal (with quotes).  Bytes that are not valid
 * UTF-8 become U+FFFD, as Python's json.dumps of a str decoded with "replace". */
int json_quote(sbuf *b, const char *s, size_t len);

/* 1 if the len bytes are valid UTF-8 (Python's bytes.decode() accepts them). */
int utf8_valid(const char *s, size_t len);

/* Pulls string members out of a JSON object: {"key": "value", "list": ["a", "b"]}.
 * The open spec is small and flat, so this is all the runner needs. */
typedef struct {
    char *kind;
    char *engine_lib;
    char *config_path;
    char **plugins;
    size_t n_plugins;
    int has_engine_lib; /* the key is present (its value may be null) */
    int has_config_path;
} open_spec;

/* Returns 0, or -1 with a message in err. */
int open_spec_parse(const char *json, size_t len, open_spec *spec, char *err, size_t err_len);
void open_spec_free(open_spec *spec);

/* A JSON object read one level deep: each member's key, and its value as text (into the parsed
 * JSON; a nested object stays text, e.g. a config to hand to the engine as it came).  The oracle's
 * payloads (soak/oracle/wire.py) are read so. */
typedef struct {
    char *key;
    const char *value;
    size_t len;
} json_member;

/* Returns 0, or -1 with a message ("invalid <doc> JSON: ...") in err. */
int json_members(const char *json, size_t len, const char *doc, json_member **members, size_t *n, char *err,
                 size_t err_len);
void json_members_free(json_member *members, size_t n);
/* The member named key (the last one if repeated, as Python's json), or NULL. */
const json_member *json_member_get(const json_member *members, size_t n, const char *key);
int json_is_null(const json_member *m);
/* A string value, unescaped (malloc'd; a \u0000 is refused); 0, or -1 when it is no string. */
int json_string_of(const json_member *m, char **out, size_t *len);
/* A number value; 0, or -1 when it is no number. */
int json_number_of(const json_member *m, double *out);
/* An array of numbers: its length in *n, the first max of them in out; 0, or -1 when it is none. */
int json_numbers_of(const json_member *m, double *out, size_t max, size_t *n);

#endif
