/*
 * C producer throughput: switchyard-c vs raw librdkafka, same broker, same topic, same run.
 *
 *   producer_bench BOOTSTRAP TOPIC CONFIG_FILE MESSAGES ROUNDS
 *
 * CONFIG_FILE is a desired-state file whose logical topic TOPIC is the physical topic TOPIC on
 * BOOTSTRAP. Both producers send MESSAGES keyed 100-byte records (key "k<i % 1000>") with the
 * same properties (acks=all, enable.idempotence=true, linger.ms=5 — the SDK's producer
 * defaults) and count a record once its delivery report arrived; a run ends when every report
 * has. Rounds alternate raw / switchyard; each prints both rates and the ratio. Run by
 * bindings/c/bench/run.sh, which builds everything in release mode.
 *
 * The raw side is librdkafka used the way a careful C program would: one topic handle,
 * rd_kafka_producev with RD_KAFKA_MSG_F_COPY, rd_kafka_poll(rk, 0) after each send to serve
 * delivery reports, rd_kafka_poll(rk, 1) and retry on a full queue, rd_kafka_flush at the end.
 * It is the librdkafka that rdkafka-sys builds for the SDK (same version, statically linked).
 *
 * Each round runs, in this order:
 * - raw librdkafka;
 * - the floor: the same raw loop plus the least per-record bookkeeping a routing layer with
 *   per-record callbacks needs (see floor_ctx below), to show what such bookkeeping alone costs;
 * - switchyard-c through a topic handle (switchyard_topic_send, named once like the raw side's
 *   rd_kafka_topic_t; the ratio of the issue-8 target);
 * - switchyard-c by name (switchyard_producer_send, which checks and looks up the topic name in
 *   every call).
 * Both switchyard-c runs poll after each send (switchyard_producer_poll). With SY_ONLY set in
 * the environment only the topic-handle run is made (for profiling; the ratios printed are then
 * meaningless).
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rdkafka.h"
#include "switchyard.h"

#define PAYLOAD 100
/* Longest wait for the last delivery reports of a run (a broker that stopped writing, e.g. on a
 * full disk, fails the bench instead of hanging it). */
#define DRAIN_S 120

static const char *PROPS[][2] = {
    {"acks", "all"},
    {"enable.idempotence", "true"},
    {"linger.ms", "5"},
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of the whole process (all threads), seconds. */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU microseconds per message of the last run of each side. */
static double raw_cpu_us, sy_cpu_us;

static void die(const char *what, const char *why) {
    fprintf(stderr, "%s: %s\n", what, why);
    exit(1);
}

/* ---- raw librdkafka ---- */

static long raw_ok, raw_err;

static void raw_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) {
        raw_err++;
    } else {
        raw_ok++;
    }
}

/* The floor: the raw loop plus the least per-record bookkeeping a layer that routes records
 * and completes each one with its own callback needs — a small context allocated per record
 * (callback and user data) and freed in its delivery report, an in-flight counter (for flush)
 * and a per-topic gate counter (for draining a topic before a route change), each counted up
 * and down atomically, and the callback called through its pointer. */
typedef void (*floor_cb)(void *user_data, int failed);

typedef struct {
    floor_cb cb;
    void *user_data;
} floor_ctx;

static atomic_long floor_in_flight, floor_gate;

static void floor_count(void *user_data, int failed) {
    (void)user_data;
    if (failed) {
        raw_err++;
    } else {
        raw_ok++;
    }
}

static void floor_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    floor_ctx *ctx = m->_private;
    if (ctx == NULL) { /* the warm-up record */
        raw_dr(rk, m, opaque);
        return;
    }
    atomic_fetch_sub(&floor_gate, 1);
    ctx->cb(ctx->user_data, m->err != 0);
    atomic_fetch_sub(&floor_in_flight, 1);
    free(ctx);
}

static double raw_run(const char *bootstrap, const char *topic, long n, const char *payload,
                      int with_floor) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err) != RD_KAFKA_CONF_OK)
        die("conf", err);
    for (size_t i = 0; i < sizeof PROPS / sizeof PROPS[0]; i++) {
        if (rd_kafka_conf_set(conf, PROPS[i][0], PROPS[i][1], err, sizeof err) != RD_KAFKA_CONF_OK)
            die("conf", err);
    }
    rd_kafka_conf_set_dr_msg_cb(conf, with_floor ? floor_dr : raw_dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (rk == NULL) die("rd_kafka_new", err);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);

    /* Warm up: connection, metadata, producer id — as a running service would have. */
    raw_ok = raw_err = 0;
    if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, (void *)payload,
                         PAYLOAD, "warm", 4, NULL) != 0)
        die("warm-up", rd_kafka_err2str(rd_kafka_last_error()));
    rd_kafka_flush(rk, 30000);
    if (raw_ok != 1) die("warm-up", "not delivered");
    raw_ok = raw_err = 0;

    double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < n; i++) {
        char key[16];
        int klen = snprintf(key, sizeof key, "k%ld", i % 1000);
        floor_ctx *ctx = NULL;
        if (with_floor) {
            if ((ctx = malloc(sizeof *ctx)) == NULL) die("floor", "out of memory");
            ctx->cb = floor_count;
            ctx->user_data = NULL;
            atomic_fetch_add(&floor_in_flight, 1);
            atomic_fetch_add(&floor_gate, 1);
        }
        for (;;) {
            rd_kafka_resp_err_t e = rd_kafka_producev(
                rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, (size_t)klen),
                RD_KAFKA_V_VALUE((void *)payload, PAYLOAD),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(ctx), RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) die("producev", rd_kafka_err2str(e));
            rd_kafka_poll(rk, 1);
        }
        rd_kafka_poll(rk, 0);
    }
    double give_up = now_s() + DRAIN_S;
    while (raw_ok + raw_err < n) {
        if (now_s() > give_up) die("raw", "delivery reports missing after the drain limit");
        rd_kafka_flush(rk, 1000);
    }
    double secs = now_s() - t0;
    raw_cpu_us = (cpu_s() - c0) * 1e6 / (double)n;
    if (raw_err != 0) die("raw", "delivery errors");
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return (double)n / secs;
}

/* ---- switchyard-c ---- */

static atomic_long sy_ok, sy_err;

static void sy_dr(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    (void)user_data;
    (void)d;
    if (rc == SWITCHYARD_OK) {
        atomic_fetch_add_explicit(&sy_ok, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&sy_err, 1, memory_order_relaxed);
    }
}

static void sy_check(const char *what, switchyard_result rc) {
    if (rc != SWITCHYARD_OK) {
        char msg[512];
        switchyard_last_error_message(msg, sizeof msg, NULL);
        die(what, msg);
    }
}

static double sy_run(const char *config, const char *topic, long n, const char *payload,
                     int by_name) {
    switchyard_client *c = NULL;
    sy_check("from_file", switchyard_client_from_file(config, "c-bench", &c));
    switchyard_producer *p = NULL;
    sy_check("producer_new", switchyard_producer_new(c, &p));
    switchyard_topic *t = NULL;
    sy_check("topic_new", switchyard_topic_new(p, topic, &t));
    /* Warm up the lane and its cluster client, like the raw side. */
    sy_check("warm-up", switchyard_producer_send_sync(p, topic, (const uint8_t *)"warm", 4,
                                                     (const uint8_t *)payload, PAYLOAD, NULL));
    atomic_store(&sy_ok, 0);
    atomic_store(&sy_err, 0);

    double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < n; i++) {
        char key[16];
        int klen = snprintf(key, sizeof key, "k%ld", i % 1000);
        if (by_name) {
            sy_check("send", switchyard_producer_send(p, topic, (const uint8_t *)key,
                                                      (size_t)klen, (const uint8_t *)payload,
                                                      PAYLOAD, sy_dr, NULL));
        } else {
            sy_check("send", switchyard_topic_send(t, (const uint8_t *)key, (size_t)klen,
                                                   (const uint8_t *)payload, PAYLOAD, sy_dr,
                                                   NULL));
        }
        sy_check("poll", switchyard_producer_poll(p, 0, NULL));
    }
    sy_check("flush", switchyard_producer_flush(p, DRAIN_S * 1000));
    double secs = now_s() - t0;
    sy_cpu_us = (cpu_s() - c0) * 1e6 / (double)n;
    if (atomic_load(&sy_ok) != n || atomic_load(&sy_err) != 0) die("switchyard", "delivery errors");
    switchyard_topic_free(t);
    switchyard_producer_free(p);
    switchyard_client_free(c);
    return (double)n / secs;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC CONFIG_FILE MESSAGES ROUNDS\n", argv[0]);
        return 2;
    }
    const char *bootstrap = argv[1], *topic = argv[2], *config = argv[3];
    long n = atol(argv[4]);
    int rounds = atoi(argv[5]);
    char payload[PAYLOAD];
    memset(payload, 'x', sizeof payload);

    printf("C producer throughput: %ld x %d-byte keyed messages, acks=all, idempotent, "
           "linger.ms=5, librdkafka %s, switchyard-c %s\n",
           n, PAYLOAD, rd_kafka_version_str(), switchyard_version());
    double raw_sum = 0, floor_sum = 0, sy_sum = 0, name_sum = 0, best_raw = 0, best_sy = 0;
    int sy_only = getenv("SY_ONLY") != NULL;
    for (int r = 1; r <= rounds; r++) {
        double raw = 1, raw_us = 0, fl = 1, fl_us = 0, by_name = 1, name_us = 0;
        if (!sy_only) {
            raw = raw_run(bootstrap, topic, n, payload, 0);
            raw_us = raw_cpu_us;
            fl = raw_run(bootstrap, topic, n, payload, 1);
            fl_us = raw_cpu_us;
        }
        double sy = sy_run(config, topic, n, payload, 0);
        double sy_us = sy_cpu_us;
        if (!sy_only) {
            by_name = sy_run(config, topic, n, payload, 1);
            name_us = sy_cpu_us;
        }
        printf("round %d: raw librdkafka %.0f msg/s (%.2f us CPU/msg); floor %.0f msg/s (%.2f us), "
               "ratio %.3f; switchyard-c %.0f msg/s (%.2f us), ratio %.3f; by name %.0f msg/s "
               "(%.2f us), ratio %.3f\n",
               r, raw, raw_us, fl, fl_us, fl / raw, sy, sy_us, sy / raw, by_name,
               name_us, by_name / raw);
        fflush(stdout);
        raw_sum += raw;
        floor_sum += fl;
        sy_sum += sy;
        name_sum += by_name;
        if (raw > best_raw) best_raw = raw;
        if (sy > best_sy) best_sy = sy;
    }
    printf("mean: raw librdkafka %.0f msg/s; floor %.0f msg/s, ratio %.3f; switchyard-c %.0f "
           "msg/s, ratio %.3f; by name %.0f msg/s, ratio %.3f\n",
           raw_sum / rounds, floor_sum / rounds, floor_sum / raw_sum, sy_sum / rounds,
           sy_sum / raw_sum, name_sum / rounds, name_sum / raw_sum);
    printf("best: raw librdkafka %.0f msg/s, switchyard-c %.0f msg/s, ratio %.3f\n", best_raw,
           best_sy, best_sy / best_raw);
    return 0;
}
