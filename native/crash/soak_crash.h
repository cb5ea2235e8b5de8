/* soak's fatal-signal handler: the native backtrace of the crashing thread.
 *
 * soak_crash_install(fd) hooks SIGSEGV, SIGBUS, SIGABRT, SIGFPE and SIGILL.  On
 * one of them the crashing thread writes, async-signal-safe (write(2), no malloc,
 * no stdio, no locks), to fd:
 *
 *   *** soak: fatal signal 11 (SIGSEGV), code 1, fault addr 0x0, pid 123, tid 130 ***
 *   soak backtrace (file offsets):
 *       #00 fo 0000000000001a2b  /path/to/module.so
 *       #01 fo 00000000000203f0  /path/to/other.so
 *   *** soak: end of backtrace ***
 *
 * one line per frame: the frame's offset in its module's FILE (read from
 * /proc/self/maps) and the module path.  The supervisor turns file offsets into
 * ELF addresses and symbol names afterwards (soak/backtrace.py), with the module
 * files at hand; nothing here symbolizes.  Then the handler puts back the action
 * that was there before (Python's faulthandler, Android's debuggerd, or the
 * default) and re-raises: the process dies of the same signal, and the previous
 * handler still runs.  Frame #00 is the faulting pc from the signal context; the
 * callers come from the unwinder (_Unwind_Backtrace, called once at install so
 * that nothing loads or resolves in the handler).
 *
 * Libraries loaded later may install their own handler over soak's: libLLVM
 * (PoCL's kernel compiler) does when OpenCL starts, with SA_RESETHAND.  Its
 * handler hands back to soak's, but while it runs the action is the default
 * one, so when several threads fault at once (every PoCL worker thread running
 * one bad kernel) the second ends the process before any handler wrote a line.
 * soak_crash_reassert(), called by the worker after each command, puts soak's
 * handler back on top of such a handler and keeps it in the chain: soak's dump
 * comes first, then the signal goes to that handler, then to the one before
 * soak's, then to the default action.
 */
#ifndef SOAK_CRASH_H
#define SOAK_CRASH_H

#ifdef __cplusplus
extern "C" {
#endif

/* Installs the handler (once per process; a second call only changes fd).
 * Returns 0, or -1 when sigaction failed. */
int soak_crash_install(int fd);

/* Puts soak's handler back where another one replaced it since with the default
 * action or with a handler that resets to it (SA_RESETHAND; that one then runs
 * after soak's dump), and writes a note naming the replacing module to fd.  A
 * handler without SA_RESETHAND stays first (it may recover from the signal).
 * Returns a bit mask of the signals taken back (bit i: the i-th of SIGSEGV,
 * SIGBUS, SIGABRT, SIGFPE, SIGILL), 0 when nothing had changed or before
 * soak_crash_install.  Not for a signal handler (it uses dladdr and stdio's
 * snprintf). */
int soak_crash_reassert(void);

#ifdef __cplusplus
}
#endif
#endif
