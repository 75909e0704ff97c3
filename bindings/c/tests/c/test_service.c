/*
 * A client connected to a live config service (the real `switchyard serve` binary), on real
 * Kafka: two threads send continuously while an operator moves the topic to another cluster
 * (`switchyard apply`); every send gets exactly one successful callback, each key's records go
 * to the old cluster then the new one (never back), a consumer that was reading before the
 * change receives every record exactly once from both clusters, at the position its delivery
 * report gave, and each key's records are written in send order on each cluster. Also:
 * synchronous sends from several threads, and freeing a producer with sends in flight (every
 * send still gets exactly one callback).
 *
 * Environment: SWITCHYARD_TEST_ENDPOINT (http://host:port), SWITCHYARD_TEST_TOPIC_S (on
 * "east", moved to "west" by SWITCHYARD_TEST_REROUTE_CMD), SWITCHYARD_TEST_TOPIC_B and
 * SWITCHYARD_TEST_PHYSICAL_B (on "west"), SWITCHYARD_TEST_TMPDIR, SWITCHYARD_TEST_RUN.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

#define THREADS 2
#define MAX_PER_THREAD 20000
#define AFTER_SWITCH 300
#define KEYS 4

static const char *endpoint, *topic_s, *topic_b, *physical_b, *reroute_cmd, *tmpdir;
static char tag[256];
static switchyard_client *client;

typedef struct {
    atomic_int calls;
    switchyard_result rc;
    char cluster[SWITCHYARD_NAME_MAX];
    int32_t partition;
    int64_t offset;
} slot;

static slot slots[THREADS][MAX_PER_THREAD];
static int sent[THREADS];
static atomic_int send_errors;
static uint64_t version_before;

/* Records delivered to the new cluster so far (the senders stop some time after the first). */
static atomic_int delivered_west;

static void on_delivery(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    slot *s = user_data;
    if (rc == SWITCHYARD_OK && strcmp(d->cluster, "west") == 0) atomic_fetch_add(&delivered_west, 1);
    s->rc = rc;
    memcpy(s->cluster, d->cluster, sizeof s->cluster);
    s->partition = d->partition;
    s->offset = d->offset;
    atomic_fetch_add(&s->calls, 1);
}

static int connect_with_a_dead_endpoint_first(void) {
    char endpoints[1024], cache[4096];
    snprintf(endpoints, sizeof endpoints, "http://127.0.0.1:1, %s", endpoint);
    snprintf(cache, sizeof cache, "%s/service-test.snapshot", tmpdir);
    /* With options: a short watch stall timeout (the failover test of the Rust SDK exercises
     * it; here it must be accepted and change nothing else). */
    switchyard_connect_options o = {0};
    o.watch_stall_timeout_ms = 2000;
    CHECK_RC(switchyard_client_connect_with(endpoints, "c-tests", NULL, cache, &o, &client),
             SWITCHYARD_OK);
    CHECK(client != NULL);
    version_before = switchyard_client_config_version(client);
    CHECK(version_before >= 1);
    /* The last-known-good cache is written (in the background). */
    double deadline = now_s() + 10;
    while (access(cache, R_OK) != 0 && now_s() < deadline) sleep_ms(20);
    CHECK_MSG(access(cache, R_OK) == 0, "no cache file %s", cache);
    return 0;
}

/* ---- sends during a route change ---- */

typedef struct {
    int thread;
    switchyard_producer *producer;
} sender_arg;

static void *sender(void *arg) {
    sender_arg *a = arg;
    int after = -1;
    for (int j = 0; j < MAX_PER_THREAD; j++) {
        char key[32], payload[300];
        snprintf(key, sizeof key, "t%dk%d", a->thread, j % KEYS);
        snprintf(payload, sizeof payload, "%s|%d|%d", tag, a->thread, j);
        if (switchyard_producer_send(a->producer, topic_s, (const uint8_t *)key, strlen(key),
                                     (const uint8_t *)payload, strlen(payload), on_delivery,
                                     &slots[a->thread][j]) != SWITCHYARD_OK) {
            atomic_fetch_add(&send_errors, 1);
            fprintf(stderr, "send failed: %s\n", last_error());
            break;
        }
        sent[a->thread] = j + 1;
        /* Until the change has reached the client and its sends arrive on the new cluster (an
         * event, not a time: the switch waits for the new cluster's client to be ready). */
        if (after < 0 && switchyard_client_config_version(client) > version_before &&
            atomic_load(&delivered_west) > 0)
            after = j;
        if (after >= 0 && j - after >= AFTER_SWITCH) break;
        if (j % 20 == 19) sleep_ms(5);
    }
    return NULL;
}

static atomic_int reroute_status = -1;

static void *rerouter(void *arg) {
    (void)arg;
    sleep_ms(500);
    atomic_store(&reroute_status, system(reroute_cmd));
    return NULL;
}

/* The consumer reads concurrently, from before the change until it has every record. */
static atomic_int total_sent = -1;
static atomic_int consumer_ready;
static atomic_int consumer_failed;
static int received[THREADS][MAX_PER_THREAD];
/* Where the consumer read each record (compared with the delivery reports at the end: a record
 * can be read before its delivery callback has run). */
static int read_west[THREADS][MAX_PER_THREAD];
static int32_t read_partition[THREADS][MAX_PER_THREAD];
static int64_t read_offset[THREADS][MAX_PER_THREAD];
static char consumer_error[2048];

static void *reader(void *arg) {
    switchyard_consumer *c = arg;
    int got = 0;
    double deadline = now_s() + 180;
    for (;;) {
        int want = atomic_load(&total_sent);
        if (want >= 0 && got >= want) break;
        if (now_s() > deadline) {
            snprintf(consumer_error, sizeof consumer_error, "only %d of %d records in 180 s",
                     got, want);
            break;
        }
        switchyard_message *m = NULL;
        switchyard_result rc = switchyard_consumer_poll(c, 500, &m);
        atomic_store(&consumer_ready, 1);
        if (rc == SWITCHYARD_TIMEOUT) continue;
        if (rc != SWITCHYARD_OK) {
            snprintf(consumer_error, sizeof consumer_error, "poll: %s: %s",
                     switchyard_result_name(rc), last_error());
            break;
        }
        size_t plen = 0;
        const uint8_t *p = switchyard_message_payload(m, &plen);
        char buf[300];
        if (plen >= sizeof buf) plen = sizeof buf - 1;
        memcpy(buf, p, plen);
        buf[plen] = 0;
        size_t tl = strlen(tag);
        int t = -1, j = -1;
        if (strncmp(buf, tag, tl) == 0 && sscanf(buf + tl, "|%d|%d", &t, &j) == 2 && t >= 0 &&
            t < THREADS && j >= 0 && j < MAX_PER_THREAD) {
            const char *cluster = switchyard_message_cluster(m);
            int west = strcmp(cluster, "west") == 0;
            if (received[t][j]++ != 0) {
                snprintf(consumer_error, sizeof consumer_error, "record %d/%d twice", t, j);
            } else if (strcmp(switchyard_message_topic(m), topic_s) != 0) {
                snprintf(consumer_error, sizeof consumer_error, "wrong logical topic %s",
                         switchyard_message_topic(m));
            }
            read_west[t][j] = west;
            read_partition[t][j] = switchyard_message_partition(m);
            read_offset[t][j] = switchyard_message_offset(m);
            got++;
        }
        switchyard_message_free(m);
        if (consumer_error[0]) break;
    }
    if (consumer_error[0]) atomic_store(&consumer_failed, 1);
    return NULL;
}

static int sends_follow_a_route_change_without_loss(void) {
    switchyard_consumer *c = NULL;
    char group[300];
    snprintf(group, sizeof group, "%s-reroute", tag);
    const char *topics[] = {topic_s};
    CHECK_RC(switchyard_consumer_new(client, group, topics, 1, 1, &c), SWITCHYARD_OK);
    pthread_t rt;
    CHECK(pthread_create(&rt, NULL, reader, c) == 0);
    while (!atomic_load(&consumer_ready)) sleep_ms(10);

    switchyard_producer *p = NULL;
    CHECK_RC(switchyard_producer_new(client, &p), SWITCHYARD_OK);
    pthread_t st[THREADS], rr;
    sender_arg args[THREADS];
    CHECK(pthread_create(&rr, NULL, rerouter, NULL) == 0);
    for (int t = 0; t < THREADS; t++) {
        args[t].thread = t;
        args[t].producer = p;
        CHECK(pthread_create(&st[t], NULL, sender, &args[t]) == 0);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(st[t], NULL);
    pthread_join(rr, NULL);
    CHECK_MSG(atomic_load(&reroute_status) == 0, "the reroute command failed (status %d)",
              atomic_load(&reroute_status));
    CHECK(atomic_load(&send_errors) == 0);
    CHECK(switchyard_client_config_version(client) > version_before);
    CHECK_RC(switchyard_producer_flush(p, 60000), SWITCHYARD_OK);

    int total = 0, east = 0, west = 0;
    for (int t = 0; t < THREADS; t++) {
        int moved[KEYS] = {0};
        for (int j = 0; j < sent[t]; j++) {
            slot *s = &slots[t][j];
            CHECK_MSG(atomic_load(&s->calls) == 1, "record %d/%d: %d callbacks", t, j,
                      atomic_load(&s->calls));
            CHECK_MSG(s->rc == SWITCHYARD_OK, "record %d/%d: %s", t, j,
                      switchyard_result_name(s->rc));
            int on_west = strcmp(s->cluster, "west") == 0;
            CHECK(on_west || strcmp(s->cluster, "east") == 0);
            /* Per key: the old cluster, then the new one, never back. */
            CHECK_MSG(!(moved[j % KEYS] && !on_west), "record %d/%d went back to east", t, j);
            moved[j % KEYS] |= on_west;
            east += !on_west;
            west += on_west;
        }
        total += sent[t];
    }
    fprintf(stderr, "sent %d records: %d to east before the change, %d to west after\n", total,
            east, west);
    CHECK(east > 0 && west > 0);
    atomic_store(&total_sent, total);
    pthread_join(rt, NULL);
    CHECK_MSG(!atomic_load(&consumer_failed), "consumer: %s", consumer_error);
    for (int t = 0; t < THREADS; t++) {
        for (int j = 0; j < sent[t]; j++) {
            CHECK_MSG(received[t][j] == 1, "record %d/%d received %d times", t, j,
                      received[t][j]);
            slot *s = &slots[t][j];
            CHECK_MSG(read_west[t][j] == (strcmp(s->cluster, "west") == 0) &&
                          read_partition[t][j] == s->partition &&
                          read_offset[t][j] == s->offset,
                      "record %d/%d read at %s/%d/%lld, delivered to %s/%d/%lld", t, j,
                      read_west[t][j] ? "west" : "east", read_partition[t][j],
                      (long long)read_offset[t][j], s->cluster, s->partition,
                      (long long)s->offset);
        }
    }
    switchyard_consumer_free(c);
    switchyard_producer_free(p);
    return 0;
}

/* Per key, on each cluster, records are written in the order they were sent: offsets (from the
 * delivery reports, which the consumer confirmed above) grow with the send sequence. This is
 * the ordering guarantee across a route change: sends held while the route switches must not
 * be overtaken by later sends. */
static int each_keys_records_are_written_in_send_order(void) {
    for (int t = 0; t < THREADS; t++) {
        for (int k = 0; k < KEYS; k++) {
            int last[2] = {-1, -1};
            for (int j = k; j < sent[t]; j += KEYS) {
                slot *s = &slots[t][j];
                CHECK(s->rc == SWITCHYARD_OK);
                int w = strcmp(s->cluster, "west") == 0;
                if (last[w] >= 0) {
                    slot *p = &slots[t][last[w]];
                    CHECK_MSG(p->partition == s->partition && p->offset < s->offset,
                              "key t%dk%d on %s: record %d written at %d/%lld, after record %d "
                              "at %d/%lld",
                              t, k, s->cluster, last[w], p->partition, (long long)p->offset, j,
                              s->partition, (long long)s->offset);
                }
                last[w] = j;
            }
        }
    }
    return 0;
}

/* ---- synchronous sends from several threads ---- */

typedef struct {
    switchyard_producer *producer;
    int thread;
    int ok;
} sync_arg;

static void *sync_sender(void *arg) {
    sync_arg *a = arg;
    for (int j = 0; j < 20; j++) {
        char payload[300];
        snprintf(payload, sizeof payload, "%s|sync|%d|%d", tag, a->thread, j);
        switchyard_delivery d;
        if (switchyard_producer_send_sync(a->producer, topic_b, NULL, 0,
                                          (const uint8_t *)payload, strlen(payload),
                                          &d) == SWITCHYARD_OK &&
            strcmp(d.cluster, "west") == 0 && strcmp(d.physical_topic, physical_b) == 0 &&
            strcmp(d.topic, topic_b) == 0 && d.offset >= 0) {
            a->ok++;
        }
    }
    return NULL;
}

static int synchronous_sends_from_several_threads(void) {
    switchyard_producer *p = NULL;
    CHECK_RC(switchyard_producer_new(client, &p), SWITCHYARD_OK);
    pthread_t t[4];
    sync_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (sync_arg){p, i, 0};
        CHECK(pthread_create(&t[i], NULL, sync_sender, &a[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_MSG(a[i].ok == 20, "thread %d: %d of 20 sends ok", i, a[i].ok);
    }
    switchyard_producer_free(p);
    return 0;
}

/* ---- free with sends in flight ---- */

static atomic_int free_calls, free_ok, free_closed, free_other;

static void on_free_delivery(void *user_data, switchyard_result rc,
                             const switchyard_delivery *d) {
    (void)user_data;
    (void)d;
    if (rc == SWITCHYARD_OK) {
        atomic_fetch_add(&free_ok, 1);
    } else if (rc == SWITCHYARD_CLOSED) {
        atomic_fetch_add(&free_closed, 1);
    } else {
        atomic_fetch_add(&free_other, 1);
    }
    atomic_fetch_add(&free_calls, 1);
}

static int free_with_sends_in_flight_completes_every_callback(void) {
    switchyard_producer *p = NULL;
    CHECK_RC(switchyard_producer_new(client, &p), SWITCHYARD_OK);
    enum { SENDS = 500 };
    for (int j = 0; j < SENDS; j++) {
        char payload[300];
        snprintf(payload, sizeof payload, "%s|free|%d", tag, j);
        CHECK_RC(switchyard_producer_send(p, topic_b, NULL, 0, (const uint8_t *)payload,
                                          strlen(payload), on_free_delivery, NULL),
                 SWITCHYARD_OK);
    }
    switchyard_producer_free(p);
    /* free returned: every callback has run, exactly once. */
    CHECK_MSG(atomic_load(&free_calls) == SENDS, "%d callbacks for %d sends",
              atomic_load(&free_calls), SENDS);
    CHECK(atomic_load(&free_other) == 0);
    fprintf(stderr, "after free: %d delivered, %d closed\n", atomic_load(&free_ok),
            atomic_load(&free_closed));
    return 0;
}

int main(void) {
    endpoint = require_env("SWITCHYARD_TEST_ENDPOINT");
    topic_s = require_env("SWITCHYARD_TEST_TOPIC_S");
    topic_b = require_env("SWITCHYARD_TEST_TOPIC_B");
    physical_b = require_env("SWITCHYARD_TEST_PHYSICAL_B");
    reroute_cmd = require_env("SWITCHYARD_TEST_REROUTE_CMD");
    tmpdir = require_env("SWITCHYARD_TEST_TMPDIR");
    snprintf(tag, sizeof tag, "svc-%s-%d", require_env("SWITCHYARD_TEST_RUN"), (int)getpid());
    RUN(connect_with_a_dead_endpoint_first);
    if (check_failures) return check_failures;
    RUN(sends_follow_a_route_change_without_loss);
    RUN(each_keys_records_are_written_in_send_order);
    RUN(synchronous_sends_from_several_threads);
    RUN(free_with_sends_in_flight_completes_every_callback);
    switchyard_client_free(client);
    return check_failures;
}
