/*
 * Shared helpers of the C participants of the cross-language parity scenario
 * (bindings/parity/run_parity.py drives them; see there for the line protocol).
 */
#ifndef SWITCHYARD_PARITY_H
#define SWITCHYARD_PARITY_H

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "switchyard.h"

/* Keys are "k00".."k999"; payloads "KEY:SEQ". */
#define PARITY_MAX_KEYS 1000

static inline double parity_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void parity_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The last switchyard error on this thread, with newlines flattened (one protocol line). */
static inline const char *parity_last_error(void) {
    static _Thread_local char buf[1024];
    switchyard_last_error_message(buf, sizeof buf, NULL);
    for (char *p = buf; *p; p++) {
        if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return buf;
}

/* Parses a decimal integer in [lo, hi]; exits with status 2 and a precise message otherwise. */
static inline long parity_parse_long(const char *what, const char *s, long lo, long hi) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "%s must be an integer in [%ld, %ld], got \"%s\"\n", what, lo, hi, s);
        exit(2);
    }
    return v;
}

/* Parses "kNN:SEQ" (key index < PARITY_MAX_KEYS, SEQ >= 0); returns 0 on success. */
static inline int parity_parse_payload(const uint8_t *p, size_t len, int *key, long *seq) {
    char buf[64];
    if (p == NULL || len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    if (buf[0] != 'k') return -1;
    char *end = NULL;
    errno = 0;
    long k = strtol(buf + 1, &end, 10);
    if (errno != 0 || end == buf + 1 || *end != ':' || k < 0 || k >= PARITY_MAX_KEYS) return -1;
    const char *s = end + 1;
    long q = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || q < 0) return -1;
    *key = (int)k;
    *seq = q;
    return 0;
}

/* Set once standard input reaches end of file (or fails): the driver's stop signal. */
static atomic_int parity_stop;

static void *parity_stdin_watcher(void *arg) {
    (void)arg;
    char buf[256];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0 && errno != EINTR) break;
    }
    atomic_store(&parity_stop, 1);
    return NULL;
}

#endif
