/* Minimal JSON reader for the test engine's config and fault plan.
 * Parses a whole document into a tree; no dependencies. */
#ifndef SOAK_TE_JSON_H
#define SOAK_TE_JSON_H

#include <stddef.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value {
    json_type type;
    double number;              /* JSON_NUMBER, JSON_BOOL (0/1) */
    char *string;               /* JSON_STRING (NUL-terminated, may hold no NUL) */
    char *key;                  /* set when this value is an object member */
    struct json_value *child;   /* first element / member */
    struct json_value *next;    /* next sibling */
} json_value;

/* Returns NULL on a syntax error and writes a message (with byte offset) to err. */
json_value *json_parse(const char *text, char *err, size_t err_len);
void json_free(json_value *v);

const json_value *json_get(const json_value *obj, const char *key);
double json_number(const json_value *obj, const char *key, double fallback);
const char *json_string(const json_value *obj, const char *key, const char *fallback);
int json_bool(const json_value *obj, const char *key, int fallback);

#endif
