/* Named crash sites of the test engine (crash_sites.c; FAULTS.md, `crash` with `in`). */
#ifndef SOAK_TEST_CRASH_SITES_H
#define SOAK_TEST_CRASH_SITES_H

int crash_site_known(const char *name);
/* crashes inside the named function with sig ("segv", "abort", "bus", "fpe") */
void crash_in(const char *name, const char *sig);
const char *crash_site_names(void);
/* n threads (this one and n - 1 more) released together, each crashing in the
 * named function (NULL: soak_test_decode_step), as every worker thread of PoCL's
 * pthread device does when they run one bad kernel; n <= 1: this thread alone */
void crash_in_threads(const char *name, const char *sig, int n);

#endif
