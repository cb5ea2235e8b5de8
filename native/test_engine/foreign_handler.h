/* A library's own fatal-signal handler, installed over soak's (foreign_handler.c;
 * FAULTS.md, `signal_handler`). */
#ifndef SOAK_TEST_FOREIGN_HANDLER_H
#define SOAK_TEST_FOREIGN_HANDLER_H

/* Installs it once per process, as libLLVM's sys::RegisterHandlers does;
 * chains: puts back the actions it replaced when it runs; hold_ms: its time in
 * the handler before that. */
void foreign_handler_install(int chains, int hold_ms);

#endif
