/*
 * Every entry point given NULL or invalid arguments returns an error code with a last-error
 * message (never a crash); every _free(NULL) is a no-op; result codes, names, retriability and
 * the last-error buffer contract; routing errors delivered to callbacks with the record handed
 * back; blocking calls refused inside a callback; freeing a producer whose records cannot be
 * delivered gives each of them exactly one SWITCHYARD_CLOSED callback; a REJECT quota gives
 * SWITCHYARD_QUOTA_EXCEEDED with the record handed back.
 *
 * Environment: SWITCHYARD_TEST_CONFIG_FILE (a valid desired-state file),
 * SWITCHYARD_TEST_TOPIC_A (a logical topic in it), SWITCHYARD_TEST_TMPDIR (scratch directory).
 */
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

static const char *config_file;
static const char *topic_a;
static const char *tmpdir;

/* Bytes that are not UTF-8. */
static const char BAD_UTF8[] = {'a', (char)0xff, (char)0xfe, 0};

static int version_and_codes(void) {
    const char *v = switchyard_version();
    CHECK(v != NULL && strlen(v) > 0 && strchr(v, '.') != NULL);
    CHECK(strcmp(switchyard_result_name(SWITCHYARD_OK), "SWITCHYARD_OK") == 0);
    CHECK(strcmp(switchyard_result_name(SWITCHYARD_INTERNAL), "SWITCHYARD_INTERNAL") == 0);
    CHECK(strcmp(switchyard_result_name(SWITCHYARD_QUOTA_EXCEEDED),
                 "SWITCHYARD_QUOTA_EXCEEDED") == 0);
    CHECK(strcmp(switchyard_result_name(9999), "SWITCHYARD_UNKNOWN_RESULT") == 0);
    CHECK(switchyard_result_is_retriable(SWITCHYARD_TIMEOUT));
    CHECK(switchyard_result_is_retriable(SWITCHYARD_NO_CONFIG));
    CHECK(switchyard_result_is_retriable(SWITCHYARD_QUOTA_EXCEEDED));
    CHECK(!switchyard_result_is_retriable(SWITCHYARD_OK));
    CHECK(!switchyard_result_is_retriable(SWITCHYARD_NULL_POINTER));
    CHECK(!switchyard_result_is_retriable(SWITCHYARD_UNKNOWN_TOPIC));
    CHECK(!switchyard_result_is_retriable(12345));
    return 0;
}

static void *fresh_thread_last_error(void *arg) {
    size_t *out = arg;
    char buf[8] = "xxxxxxx";
    *out = 999;
    if (switchyard_last_error_message(buf, sizeof buf, out) != SWITCHYARD_OK || buf[0] != 0) {
        *out = 1000;
    }
    return NULL;
}

static int last_error_buffer_contract(void) {
    /* A thread with no failure yet has an empty message. */
    pthread_t t;
    size_t fresh_len = 0;
    CHECK(pthread_create(&t, NULL, fresh_thread_last_error, &fresh_len) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(fresh_len == 0);

    /* Make a failure on this thread. */
    switchyard_client *c = (switchyard_client *)0x1;
    CHECK_RC(switchyard_client_from_file(NULL, "app", &c), SWITCHYARD_NULL_POINTER);
    CHECK(c == NULL);

    size_t full = 0;
    CHECK_RC(switchyard_last_error_message(NULL, 0, &full), SWITCHYARD_OK);
    CHECK(full > 4);
    CHECK_RC(switchyard_last_error_message(NULL, 5, &full), SWITCHYARD_NULL_POINTER);
    char small[5];
    memset(small, 'x', sizeof small);
    size_t n = 0;
    CHECK_RC(switchyard_last_error_message(small, sizeof small, &n), SWITCHYARD_OK);
    CHECK(n == full);             /* full length reported: truncation detectable */
    CHECK(strlen(small) == 4);    /* len - 1 bytes and a NUL */
    char big[512];
    CHECK_RC(switchyard_last_error_message(big, sizeof big, NULL), SWITCHYARD_OK);
    CHECK(strlen(big) == full);
    CHECK(strstr(big, "path is NULL") != NULL);
    /* A successful call does not clear it (errno-like); reading does not change it. */
    CHECK(strcmp(switchyard_version(), "") != 0);
    CHECK(strcmp(last_error(), big) == 0);
    CHECK(!switchyard_last_error_is_retriable());
    return 0;
}

static int free_null_is_a_noop(void) {
    switchyard_client_free(NULL);
    switchyard_producer_free(NULL);
    switchyard_consumer_free(NULL);
    switchyard_message_free(NULL);
    return 0;
}

static int client_arguments(void) {
    switchyard_client *c = (switchyard_client *)0x1;
    CHECK_FAILS(switchyard_client_connect("http://127.0.0.1:1", "app", NULL, NULL, NULL),
                SWITCHYARD_NULL_POINTER, "out");
    CHECK_FAILS(switchyard_client_connect(NULL, "app", NULL, NULL, &c),
                SWITCHYARD_NULL_POINTER, "endpoints");
    CHECK(c == NULL);
    c = (switchyard_client *)0x1;
    CHECK_FAILS(switchyard_client_connect("http://127.0.0.1:1", NULL, NULL, NULL, &c),
                SWITCHYARD_NULL_POINTER, "app");
    CHECK(c == NULL);
    CHECK_FAILS(switchyard_client_connect("http://127.0.0.1:1", BAD_UTF8, NULL, NULL, &c),
                SWITCHYARD_INVALID_ARGUMENT, "UTF-8");
    CHECK_FAILS(switchyard_client_connect(BAD_UTF8, "app", NULL, NULL, &c),
                SWITCHYARD_INVALID_ARGUMENT, "UTF-8");
    CHECK_FAILS(switchyard_client_connect("http://127.0.0.1:1", "app", BAD_UTF8, NULL, &c),
                SWITCHYARD_INVALID_ARGUMENT, "token");
    CHECK_FAILS(switchyard_client_connect(" , ,", "app", NULL, NULL, &c),
                SWITCHYARD_INVALID_ARGUMENT, "endpoint");
    CHECK_FAILS(switchyard_client_connect("http://127.0.0.1:1", "", NULL, NULL, &c),
                SWITCHYARD_INVALID_ARGUMENT, "app");
    CHECK_FAILS(switchyard_client_connect("http://127.0.0.1:1", "bad app!", NULL, NULL, &c),
                SWITCHYARD_INVALID_ARGUMENT, "app");
    CHECK_FAILS(switchyard_client_connect("http://127.0.0.1:1", "app", NULL, "", &c),
                SWITCHYARD_INVALID_ARGUMENT, "cache_path");
    CHECK(c == NULL);

    CHECK_FAILS(switchyard_client_from_file(config_file, "app", NULL), SWITCHYARD_NULL_POINTER,
                "out");
    CHECK_FAILS(switchyard_client_from_file(NULL, "app", &c), SWITCHYARD_NULL_POINTER, "path");
    CHECK_FAILS(switchyard_client_from_file(config_file, NULL, &c), SWITCHYARD_NULL_POINTER,
                "app");
    CHECK_FAILS(switchyard_client_from_file(config_file, BAD_UTF8, &c),
                SWITCHYARD_INVALID_ARGUMENT, "UTF-8");
    CHECK(switchyard_client_config_version(NULL) == 0);
    CHECK(c == NULL);
    return 0;
}

static int from_file_errors_are_cache_errors(void) {
    char path[4096];
    switchyard_client *c = NULL;
    snprintf(path, sizeof path, "%s/does-not-exist.yaml", tmpdir);
    CHECK_FAILS(switchyard_client_from_file(path, "app", &c), SWITCHYARD_CACHE, "unreadable");
    CHECK(c == NULL);

    snprintf(path, sizeof path, "%s/invalid.yaml", tmpdir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs("clusters:\n  - name: east\n    bootstrap: [\"127.0.0.1:1\"]\n    typo_key: 1\n", f);
    fclose(f);
    CHECK_FAILS(switchyard_client_from_file(path, "app", &c), SWITCHYARD_CACHE, "typo_key");
    CHECK(c == NULL);
    return 0;
}

static int unreachable_service_gives_no_config(void) {
    char cache[4096];
    snprintf(cache, sizeof cache, "%s/unreachable.snapshot", tmpdir);
    switchyard_client *c = (switchyard_client *)0x1;
    double t0 = now_s();
    /* Port 1 on loopback refuses connections; there is no cache: NO_CONFIG after ~10 s. */
    CHECK_RC(switchyard_client_connect("http://127.0.0.1:1", "c-tests", NULL, cache, &c),
             SWITCHYARD_NO_CONFIG);
    CHECK(c == NULL);
    CHECK(switchyard_last_error_is_retriable());
    CHECK(now_s() - t0 < 30);
    return 0;
}

/* switchyard_client_connect_with: options are checked before anything is contacted; a short
 * initial timeout ends the wait for an unreachable service early. */
static int connect_options_are_checked(void) {
    switchyard_client *c = (switchyard_client *)0x1;
    switchyard_connect_options o = {0};
    o.initial_timeout_ms = -1;
    CHECK_FAILS(switchyard_client_connect_with("http://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "initial_timeout_ms");
    CHECK(c == NULL);
    o.initial_timeout_ms = 0;
    o.watch_stall_timeout_ms = -5;
    CHECK_FAILS(switchyard_client_connect_with("http://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "watch_stall_timeout_ms");
    o.watch_stall_timeout_ms = 50;
    CHECK_FAILS(switchyard_client_connect_with("http://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "between 100 ms and 1 h");
    o.watch_stall_timeout_ms = 3600001;
    CHECK_FAILS(switchyard_client_connect_with("http://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "between 100 ms and 1 h");
    /* Valid options; nothing answers on port 1 and there is no cache: NO_CONFIG once the
     * 300 ms initial timeout has passed. */
    char cache[4096];
    snprintf(cache, sizeof cache, "%s/options.snapshot", tmpdir);
    o.initial_timeout_ms = 300;
    o.watch_stall_timeout_ms = 1000;
    CHECK_RC(switchyard_client_connect_with("http://127.0.0.1:1", "c-tests", NULL, cache, &o, &c),
             SWITCHYARD_NO_CONFIG);
    CHECK(c == NULL);
    CHECK_FAILS(switchyard_client_connect_with(NULL, "c-tests", NULL, NULL, &o, &c),
                SWITCHYARD_NULL_POINTER, "endpoints");
    return 0;
}

/* ---- producer ---- */

typedef struct {
    atomic_int calls;
    atomic_int unknown_topic;
    atomic_int record_handed_back;
    atomic_int flush_refused;
    atomic_int sync_refused;
    atomic_int resend_ok;
    atomic_int message_ok;
    const switchyard_producer *producer;
    atomic_int resend; /* the first callback sends once more from inside the callback */
} cb_state;

static void on_delivery(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    cb_state *s = user_data;
    if (rc == SWITCHYARD_UNKNOWN_TOPIC) atomic_fetch_add(&s->unknown_topic, 1);
    if (d != NULL && d->partition == -1 && d->offset == -1 && d->payload_len == 7 &&
        d->payload != NULL && memcmp(d->payload, "payload", 7) == 0 && d->key_len == 3 &&
        memcmp(d->key, "key", 3) == 0 && strcmp(d->topic, "no-such-topic") == 0 &&
        d->cluster[0] == 0) {
        atomic_fetch_add(&s->record_handed_back, 1);
    }
    /* The failure reason is readable on the callback's thread. */
    char msg[256];
    if (switchyard_last_error_message(msg, sizeof msg, NULL) == SWITCHYARD_OK &&
        strstr(msg, "no-such-topic") != NULL) {
        atomic_fetch_add(&s->message_ok, 1);
    }
    /* Blocking calls are refused here rather than deadlocking. */
    if (switchyard_producer_flush(s->producer, 1000) == SWITCHYARD_INVALID_ARGUMENT) {
        atomic_fetch_add(&s->flush_refused, 1);
    }
    switchyard_delivery out;
    if (switchyard_producer_send_sync(s->producer, "no-such-topic", NULL, 0, NULL, 0, &out) ==
        SWITCHYARD_INVALID_ARGUMENT) {
        atomic_fetch_add(&s->sync_refused, 1);
    }
    /* Sending from a callback is allowed. */
    int expected = 1;
    if (atomic_compare_exchange_strong(&s->resend, &expected, 0)) {
        if (switchyard_producer_send(s->producer, "no-such-topic", (const uint8_t *)"key", 3,
                                     (const uint8_t *)"payload", 7, on_delivery,
                                     s) == SWITCHYARD_OK) {
            atomic_fetch_add(&s->resend_ok, 1);
        }
    }
    atomic_fetch_add(&s->calls, 1);
}

static int producer_arguments_and_routing_errors(void) {
    switchyard_client *c = NULL;
    CHECK_RC(switchyard_client_from_file(config_file, "c-tests", &c), SWITCHYARD_OK);
    CHECK(c != NULL);
    CHECK(switchyard_client_config_version(c) >= 1);

    switchyard_producer *p = (switchyard_producer *)0x1;
    CHECK_FAILS(switchyard_producer_new(NULL, &p), SWITCHYARD_NULL_POINTER, "client");
    CHECK(p == NULL);
    CHECK_FAILS(switchyard_producer_new(c, NULL), SWITCHYARD_NULL_POINTER, "out");
    CHECK_RC(switchyard_producer_new(c, &p), SWITCHYARD_OK);
    CHECK(p != NULL);

    cb_state s;
    memset(&s, 0, sizeof s);
    s.producer = p;
    const uint8_t *k = (const uint8_t *)"key";
    const uint8_t *v = (const uint8_t *)"payload";
    CHECK_FAILS(switchyard_producer_send(NULL, topic_a, k, 3, v, 7, on_delivery, &s),
                SWITCHYARD_NULL_POINTER, "producer");
    CHECK_FAILS(switchyard_producer_send(p, NULL, k, 3, v, 7, on_delivery, &s),
                SWITCHYARD_NULL_POINTER, "topic");
    CHECK_FAILS(switchyard_producer_send(p, BAD_UTF8, k, 3, v, 7, on_delivery, &s),
                SWITCHYARD_INVALID_ARGUMENT, "UTF-8");
    CHECK_FAILS(switchyard_producer_send(p, "", k, 3, v, 7, on_delivery, &s),
                SWITCHYARD_INVALID_ARGUMENT, "empty");
    CHECK_FAILS(switchyard_producer_send(p, topic_a, NULL, 3, v, 7, on_delivery, &s),
                SWITCHYARD_NULL_POINTER, "key");
    CHECK_FAILS(switchyard_producer_send(p, topic_a, k, 3, NULL, 7, on_delivery, &s),
                SWITCHYARD_NULL_POINTER, "payload");
    CHECK_FAILS(switchyard_producer_send(p, topic_a, k, (size_t)-1, v, 7, on_delivery, &s),
                SWITCHYARD_INVALID_ARGUMENT, "too large");
    switchyard_delivery d;
    CHECK_FAILS(switchyard_producer_send_sync(NULL, topic_a, k, 3, v, 7, &d),
                SWITCHYARD_NULL_POINTER, "producer");
    CHECK_FAILS(switchyard_producer_send_sync(p, NULL, k, 3, v, 7, &d), SWITCHYARD_NULL_POINTER,
                "topic");
    switchyard_header no_name[1] = {{NULL, v, 7}};
    switchyard_header bad_name[1] = {{BAD_UTF8, v, 7}};
    switchyard_header null_value[1] = {{"h", NULL, 7}};
    CHECK_FAILS(switchyard_producer_send_with_headers(p, topic_a, k, 3, v, 7, NULL, 1,
                                                      on_delivery, &s),
                SWITCHYARD_NULL_POINTER, "headers");
    CHECK_FAILS(switchyard_producer_send_with_headers(p, topic_a, k, 3, v, 7, no_name, 1,
                                                      on_delivery, &s),
                SWITCHYARD_NULL_POINTER, "headers[0].name");
    CHECK_FAILS(switchyard_producer_send_with_headers(p, topic_a, k, 3, v, 7, bad_name, 1,
                                                      on_delivery, &s),
                SWITCHYARD_INVALID_ARGUMENT, "headers[0].name");
    CHECK_FAILS(switchyard_producer_send_with_headers(p, topic_a, k, 3, v, 7, null_value, 1,
                                                      on_delivery, &s),
                SWITCHYARD_NULL_POINTER, "headers[0].value");
    CHECK_FAILS(switchyard_producer_send_with_headers(NULL, topic_a, k, 3, v, 7, NULL, 0,
                                                      on_delivery, &s),
                SWITCHYARD_NULL_POINTER, "producer");
    CHECK_FAILS(switchyard_producer_flush(NULL, 0), SWITCHYARD_NULL_POINTER, "producer");
    CHECK(switchyard_producer_in_flight(NULL) == 0);
    /* Rejected sends are not queued: no callback, nothing in flight. */
    CHECK(switchyard_producer_in_flight(p) == 0);
    CHECK_RC(switchyard_producer_flush(p, 0), SWITCHYARD_OK);
    CHECK(atomic_load(&s.calls) == 0);

    /* A routing error arrives in the callback, with the record handed back. */
    atomic_store(&s.resend, 1);
    CHECK_RC(switchyard_producer_send(p, "no-such-topic", k, 3, v, 7, on_delivery, &s),
             SWITCHYARD_OK);
    CHECK_RC(switchyard_producer_flush(p, 10000), SWITCHYARD_OK);
    CHECK(switchyard_producer_in_flight(p) == 0);
    CHECK(atomic_load(&s.calls) == 2); /* the original and the one sent from the callback */
    CHECK(atomic_load(&s.resend_ok) == 1);
    CHECK(atomic_load(&s.unknown_topic) == 2);
    CHECK(atomic_load(&s.record_handed_back) == 2);
    CHECK(atomic_load(&s.message_ok) == 2);
    CHECK(atomic_load(&s.flush_refused) == 2);
    CHECK(atomic_load(&s.sync_refused) == 2);

    /* NULL callback: fire and forget, still flushed. */
    CHECK_RC(switchyard_producer_send(p, "no-such-topic", NULL, 0, NULL, 0, NULL, NULL),
             SWITCHYARD_OK);
    CHECK_RC(switchyard_producer_flush(p, 10000), SWITCHYARD_OK);

    /* Synchronous send: the error is the return value; the delivery names the topic. */
    memset(&d, 0x55, sizeof d);
    CHECK_FAILS(switchyard_producer_send_sync(p, "no-such-topic", k, 3, v, 7, &d),
                SWITCHYARD_UNKNOWN_TOPIC, "no-such-topic");
    CHECK(strcmp(d.topic, "no-such-topic") == 0);
    CHECK(d.partition == -1 && d.offset == -1 && d.cluster[0] == 0 && d.key == NULL);
    CHECK(!switchyard_last_error_is_retriable());
    CHECK_FAILS(switchyard_producer_send_sync(p, "no-such-topic", NULL, 0, NULL, 0, NULL),
                SWITCHYARD_UNKNOWN_TOPIC, "no-such-topic");

    /* Topic handles: the name is checked and looked up once, when the handle is made. */
    switchyard_topic *t = (switchyard_topic *)0x1;
    CHECK_FAILS(switchyard_topic_new(NULL, topic_a, &t), SWITCHYARD_NULL_POINTER, "producer");
    CHECK(t == NULL);
    CHECK_FAILS(switchyard_topic_new(p, topic_a, NULL), SWITCHYARD_NULL_POINTER, "out");
    CHECK_FAILS(switchyard_topic_new(p, NULL, &t), SWITCHYARD_NULL_POINTER, "topic");
    CHECK_FAILS(switchyard_topic_new(p, BAD_UTF8, &t), SWITCHYARD_INVALID_ARGUMENT, "UTF-8");
    CHECK_FAILS(switchyard_topic_new(p, "", &t), SWITCHYARD_INVALID_ARGUMENT, "empty");
    t = (switchyard_topic *)0x1;
    CHECK_FAILS(switchyard_topic_new(p, "no-such-topic", &t), SWITCHYARD_UNKNOWN_TOPIC,
                "no-such-topic");
    CHECK(t == NULL);
    CHECK_RC(switchyard_topic_new(p, topic_a, &t), SWITCHYARD_OK);
    CHECK(t != NULL);
    CHECK_FAILS(switchyard_topic_send(NULL, k, 3, v, 7, on_delivery, &s), SWITCHYARD_NULL_POINTER,
                "topic");
    CHECK_FAILS(switchyard_topic_send(t, NULL, 3, v, 7, on_delivery, &s), SWITCHYARD_NULL_POINTER,
                "key");
    CHECK_FAILS(switchyard_topic_send(t, k, 3, NULL, 7, on_delivery, &s),
                SWITCHYARD_NULL_POINTER, "payload");
    CHECK_FAILS(switchyard_topic_send(t, k, (size_t)-1, v, 7, on_delivery, &s),
                SWITCHYARD_INVALID_ARGUMENT, "too large");
    /* A send through the handle is a send of its producer: in flight there, flushed there. */
    atomic_store(&s.calls, 0);
    CHECK_RC(switchyard_topic_send(t, k, 3, v, 7, NULL, NULL), SWITCHYARD_OK);
    CHECK_RC(switchyard_producer_flush(p, 30000), SWITCHYARD_OK);
    CHECK(switchyard_producer_in_flight(p) == 0);
    switchyard_topic_free(t);
    switchyard_topic_free(NULL);

    switchyard_producer_free(p);
    switchyard_client_free(c);
    return 0;
}

/* ---- free with undeliverable sends: every callback runs, with SWITCHYARD_CLOSED ---- */

static atomic_int closed_calls, closed_rc;

static void on_closed(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    (void)user_data;
    if (rc == SWITCHYARD_CLOSED && d != NULL && d->partition == -1) {
        atomic_fetch_add(&closed_rc, 1);
    }
    atomic_fetch_add(&closed_calls, 1);
}

static int free_gives_undelivered_sends_a_closed_callback(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/dead-cluster.yaml", tmpdir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    /* Nothing listens on port 1: records to this cluster cannot be delivered. */
    fputs("clusters:\n  - name: dead\n    bootstrap: [\"127.0.0.1:1\"]\n"
          "topics:\n  - name: nowhere\n    cluster: dead\n    partitions: 1\n",
          f);
    fclose(f);
    switchyard_client *c = NULL;
    CHECK_RC(switchyard_client_from_file(path, "c-tests", &c), SWITCHYARD_OK);
    switchyard_producer *p = NULL;
    CHECK_RC(switchyard_producer_new(c, &p), SWITCHYARD_OK);
    switchyard_client_free(c);
    enum { SENDS = 20 };
    for (int i = 0; i < SENDS; i++) {
        CHECK_RC(switchyard_producer_send(p, "nowhere", NULL, 0, (const uint8_t *)"x", 1,
                                          on_closed, NULL),
                 SWITCHYARD_OK);
    }
    CHECK_FAILS(switchyard_producer_flush(p, 200), SWITCHYARD_TIMEOUT, "in flight");
    CHECK(switchyard_last_error_is_retriable());
    CHECK(switchyard_producer_in_flight(p) == SENDS);
    CHECK(atomic_load(&closed_calls) == 0);
    double t0 = now_s();
    switchyard_producer_free(p); /* waits up to 10 s, then gives up on them */
    double took = now_s() - t0;
    CHECK_MSG(atomic_load(&closed_calls) == SENDS, "%d callbacks for %d sends",
              atomic_load(&closed_calls), SENDS);
    CHECK(atomic_load(&closed_rc) == SENDS);
    CHECK_MSG(took >= 9 && took < 30, "free took %.1f s", took);
    return 0;
}

/* ---- quotas: a REJECT quota fails sends with SWITCHYARD_QUOTA_EXCEEDED ---- */

static atomic_int quota_ok, quota_rejected, quota_handed_back, quota_retriable;

static void on_quota(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    (void)user_data;
    if (rc == SWITCHYARD_OK) atomic_fetch_add(&quota_ok, 1);
    if (rc == SWITCHYARD_QUOTA_EXCEEDED) {
        atomic_fetch_add(&quota_rejected, 1);
        if (d->payload_len == 5 && memcmp(d->payload, "quota", 5) == 0) {
            atomic_fetch_add(&quota_handed_back, 1);
        }
        if (switchyard_last_error_is_retriable() && switchyard_result_is_retriable(rc)) {
            atomic_fetch_add(&quota_retriable, 1);
        }
    }
}

static int reject_quota_gives_quota_exceeded(void) {
    /* The configuration limits app "c-quota-app" to 1 record/s (burst 1) on topic A, REJECT. */
    switchyard_client *c = NULL;
    CHECK_RC(switchyard_client_from_file(config_file, "c-quota-app", &c), SWITCHYARD_OK);
    switchyard_producer *p = NULL;
    CHECK_RC(switchyard_producer_new(c, &p), SWITCHYARD_OK);
    enum { SENDS = 5 };
    for (int i = 0; i < SENDS; i++) {
        CHECK_RC(switchyard_producer_send(p, topic_a, NULL, 0, (const uint8_t *)"quota", 5,
                                          on_quota, NULL),
                 SWITCHYARD_OK);
    }
    CHECK_RC(switchyard_producer_flush(p, 60000), SWITCHYARD_OK);
    CHECK(atomic_load(&quota_ok) + atomic_load(&quota_rejected) == SENDS);
    CHECK_MSG(atomic_load(&quota_ok) >= 1 && atomic_load(&quota_rejected) >= SENDS - 2,
              "%d delivered, %d rejected", atomic_load(&quota_ok),
              atomic_load(&quota_rejected));
    CHECK(atomic_load(&quota_handed_back) == atomic_load(&quota_rejected));
    CHECK(atomic_load(&quota_retriable) == atomic_load(&quota_rejected));
    /* The same through the synchronous call. */
    CHECK_FAILS(switchyard_producer_send_sync(p, topic_a, NULL, 0, (const uint8_t *)"quota", 5,
                                              NULL),
                SWITCHYARD_QUOTA_EXCEEDED, "quota");
    switchyard_producer_free(p);
    switchyard_client_free(c);
    return 0;
}

/* ---- consumer and message ---- */

static int consumer_and_message_arguments(void) {
    switchyard_client *c = NULL;
    CHECK_RC(switchyard_client_from_file(config_file, "c-tests", &c), SWITCHYARD_OK);
    const char *topics[] = {topic_a};
    const char *with_null[] = {topic_a, NULL};
    const char *with_bad[] = {topic_a, BAD_UTF8};
    const char *with_illegal[] = {"bad topic name"};
    switchyard_consumer *k = (switchyard_consumer *)0x1;
    CHECK_FAILS(switchyard_consumer_new(NULL, "g", topics, 1, 0, &k), SWITCHYARD_NULL_POINTER,
                "client");
    CHECK(k == NULL);
    CHECK_FAILS(switchyard_consumer_new(c, NULL, topics, 1, 0, &k), SWITCHYARD_NULL_POINTER,
                "group");
    CHECK_FAILS(switchyard_consumer_new(c, BAD_UTF8, topics, 1, 0, &k),
                SWITCHYARD_INVALID_ARGUMENT, "UTF-8");
    CHECK_FAILS(switchyard_consumer_new(c, "", topics, 1, 0, &k), SWITCHYARD_INVALID_ARGUMENT,
                "group");
    CHECK_FAILS(switchyard_consumer_new(c, "g", NULL, 1, 0, &k), SWITCHYARD_NULL_POINTER,
                "topics");
    CHECK_FAILS(switchyard_consumer_new(c, "g", topics, 0, 0, &k), SWITCHYARD_INVALID_ARGUMENT,
                "at least one");
    CHECK_FAILS(switchyard_consumer_new(c, "g", with_null, 2, 0, &k), SWITCHYARD_NULL_POINTER,
                "topics[1]");
    CHECK_FAILS(switchyard_consumer_new(c, "g", with_bad, 2, 0, &k),
                SWITCHYARD_INVALID_ARGUMENT, "topics[1]");
    CHECK_FAILS(switchyard_consumer_new(c, "g", with_illegal, 1, 0, &k),
                SWITCHYARD_INVALID_ARGUMENT, "topic");
    CHECK_FAILS(switchyard_consumer_new(c, "g", topics, 1, 0, NULL), SWITCHYARD_NULL_POINTER,
                "out");
    CHECK(k == NULL);

    CHECK_RC(switchyard_consumer_new(c, "c-tests-args", topics, 1, 0, &k), SWITCHYARD_OK);
    CHECK(k != NULL);
    switchyard_message *m = (switchyard_message *)0x1;
    CHECK_FAILS(switchyard_consumer_poll(NULL, 0, &m), SWITCHYARD_NULL_POINTER, "consumer");
    CHECK(m == NULL);
    CHECK_FAILS(switchyard_consumer_poll(k, 0, NULL), SWITCHYARD_NULL_POINTER, "message");
    CHECK_FAILS(switchyard_consumer_commit(NULL, NULL), SWITCHYARD_NULL_POINTER, "consumer");
    CHECK_FAILS(switchyard_consumer_commit(k, NULL), SWITCHYARD_NULL_POINTER, "message");

    /* Accessors on NULL: sentinel values, no crash. */
    size_t len = 77;
    CHECK(switchyard_message_topic(NULL) == NULL);
    CHECK(switchyard_message_cluster(NULL) == NULL);
    CHECK(switchyard_message_physical_topic(NULL) == NULL);
    CHECK(switchyard_message_partition(NULL) == -1);
    CHECK(switchyard_message_offset(NULL) == -1);
    CHECK(switchyard_message_timestamp_ms(NULL) == -1);
    CHECK(switchyard_message_key(NULL, &len) == NULL && len == 0);
    len = 77;
    CHECK(switchyard_message_payload(NULL, &len) == NULL && len == 0);
    CHECK(switchyard_message_key(NULL, NULL) == NULL);
    CHECK(switchyard_message_header_count(NULL) == 0);
    CHECK(strstr(last_error(), "message is NULL") != NULL);
    CHECK_FAILS(switchyard_message_header(NULL, 0, NULL, NULL, NULL, NULL),
                SWITCHYARD_NULL_POINTER, "message");

    switchyard_consumer_free(k);
    switchyard_client_free(c);
    return 0;
}

int main(void) {
    config_file = require_env("SWITCHYARD_TEST_CONFIG_FILE");
    topic_a = require_env("SWITCHYARD_TEST_TOPIC_A");
    tmpdir = require_env("SWITCHYARD_TEST_TMPDIR");
    RUN(version_and_codes);
    RUN(last_error_buffer_contract);
    RUN(free_null_is_a_noop);
    RUN(client_arguments);
    RUN(from_file_errors_are_cache_errors);
    RUN(unreachable_service_gives_no_config);
    RUN(connect_options_are_checked);
    RUN(producer_arguments_and_routing_errors);
    RUN(free_gives_undelivered_sends_a_closed_callback);
    RUN(reject_quota_gives_quota_exceeded);
    RUN(consumer_and_message_arguments);
    return check_failures;
}
