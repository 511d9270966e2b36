/* LD_PRELOAD shim for the clock-skew tests: shifts this process's wall clock by
 * BGTASKS_CLOCK_SKEW seconds (e.g. "30" or "-30"); monotonic clocks stay real.
 *
 * Only the wall-clock reads are wrapped: clock_gettime(CLOCK_REALTIME*), gettimeofday()
 * and time(), which is what Python's time.time() and datetime.now() use. (libfaketime
 * also rewrites sleeps and timed waits, and breaks Python's time.sleep with EINVAL.)
 * Built by tests/e2e/test_e2e_clock_skew.py with: cc -shared -fPIC -o skew.so clock_skew.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long skew_seconds(void) {
    const char *value = getenv("BGTASKS_CLOCK_SKEW");
    return value ? strtol(value, NULL, 10) : 0;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *) = NULL;
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(clock, ts);
    if (rc == 0 && ts && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE))
        ts->tv_sec += skew_seconds();
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    static int (*real)(struct timeval *restrict, void *restrict) = NULL;
    if (!real) real = (int (*)(struct timeval *restrict, void *restrict))dlsym(RTLD_NEXT, "gettimeofday");
    int rc = real(tv, tz);
    if (rc == 0 && tv) tv->tv_sec += skew_seconds();
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
