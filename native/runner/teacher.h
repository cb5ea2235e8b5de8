/* soak-runner's worker commands `reference` and `check`: the wrong-answer oracle on the device.
 *
 * The C twin of the Python worker's soak/oracle/wire.py (payloads and result fields), teacher.py (the
 * turn through the engine's forward) and turn.py (TurnCheck: the turn's summary).  The per-step
 * measures come from native/oracle, compiled into the runner: the same code the Python worker loads,
 * so the same turn on the same engine gives the same numbers.  The candidate's logits never leave. */
#ifndef SOAK_RUNNER_TEACHER_H
#define SOAK_RUNNER_TEACHER_H

#include <stddef.h>

#include "codec.h"
#include "loader.h"

typedef struct {
    const char *kind;  /* the result's error_kind (bad_command, bad_input, engine_error) */
    int rc;            /* the SOAK_ERR_* it is sent with */
    const char *hint;  /* the fix, or NULL */
    char message[512];
} teacher_error;

/* Runs `op` ("reference" or "check") with its decoded JSON payload on the open engine.  Returns 0
 * with the result's fields in `fields` (",\"turn\":{...}" or ",\"oracle\":{...}") and the turn's text
 * (what soak shows as its output) in `text`; or -1 with `err` filled. */
int teacher_run(const engine_api *api, soak_engine *engine, const char *op, const char *payload, size_t len,
                sbuf *fields, sbuf *text, teacher_error *err);

/* A new engine was opened: its vocabulary is not known until its first forward. */
void teacher_forget(void);

#endif
