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
 */
#ifndef SOAK_CRASH_H
#define SOAK_CRASH_H

#ifdef __cplusplus
extern "C" {
#endif

/* Installs the handler (once per process; a second call only changes fd).
 * Returns 0, or -1 when sigaction failed. */
int soak_crash_install(int fd);

#ifdef __cplusplus
}
#endif
#endif
