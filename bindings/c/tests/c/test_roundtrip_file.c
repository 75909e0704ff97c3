/*
 * Round trip on real Kafka with a client configured from a desired-state file: asynchronous
 * sends with callbacks to two logical topics on two clusters (by name and through topic
 * handles), flush, a synchronous send; a consumer reads every record back with the right
 * logical topic, cluster, physical topic, key, payload, headers, partition and offset, and
 * commits; a new member of the group starts after the commits. Producer and consumer outlive
 * the client handle they were made from. The client's metrics text counts sends under their
 * topic and cluster.
 *
 * Environment: SWITCHYARD_TEST_CONFIG_FILE, SWITCHYARD_TEST_TOPIC_A (on cluster "east",
 * physical name = logical), SWITCHYARD_TEST_TOPIC_B (on "west"), SWITCHYARD_TEST_PHYSICAL_B,
 * SWITCHYARD_TEST_RUN (unique per run).
 */
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

#define N_A 200
#define N_B 100
#define N (N_A + N_B)
#define SYNC_INDEX N /* one more record, sent synchronously */
#define KEYS 7

static const char *config_file, *topic_a, *topic_b, *physical_b;
static char tag[256];

typedef struct {
    atomic_int calls;
    switchyard_result rc;
    char cluster[SWITCHYARD_NAME_MAX];
    char physical[SWITCHYARD_NAME_MAX];
    char topic[SWITCHYARD_NAME_MAX];
    int32_t partition;
    int64_t offset;
} slot;

static slot slots[N + 1];
static switchyard_producer *callback_producer;

static void on_delivery(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    slot *s = user_data;
    s->rc = rc;
    memcpy(s->cluster, d->cluster, sizeof s->cluster);
    memcpy(s->physical, d->physical_topic, sizeof s->physical);
    memcpy(s->topic, d->topic, sizeof s->topic);
    s->partition = d->partition;
    s->offset = d->offset;
    atomic_fetch_add(&s->calls, 1);
}

static void record(int i, char *key, size_t klen, char *payload, size_t plen) {
    snprintf(key, klen, "k%d", i % KEYS);
    snprintf(payload, plen, "%s|%d", tag, i);
}

/* Index of one of our records from its payload, or -1 for a record of another run/test. */
static int index_of(const uint8_t *payload, size_t len) {
    size_t tl = strlen(tag);
    if (payload == NULL || len <= tl + 1 || memcmp(payload, tag, tl) != 0 || payload[tl] != '|') {
        return -1;
    }
    char buf[32];
    size_t n = len - tl - 1;
    if (n >= sizeof buf) return -1;
    memcpy(buf, payload + tl + 1, n);
    buf[n] = 0;
    if (strcmp(buf, "marker") == 0) return N + 1;
    return atoi(buf);
}

static switchyard_producer *producer;
static switchyard_consumer *consumer;
static const char *group_topics[2];
static char group[300];

static int produce_with_callbacks_and_flush(void) {
    switchyard_client *client = NULL;
    CHECK_RC(switchyard_client_from_file(config_file, "c-tests", &client), SWITCHYARD_OK);
    CHECK_RC(switchyard_producer_new(client, &producer), SWITCHYARD_OK);
    group_topics[0] = topic_a;
    group_topics[1] = topic_b;
    snprintf(group, sizeof group, "%s-group", tag);
    CHECK_RC(switchyard_consumer_new(client, group, group_topics, 2, 0, &consumer),
             SWITCHYARD_OK);
    /* The handles keep what they need: the client handle may go first. */
    switchyard_client_free(client);
    switchyard_topic *handle_a = NULL, *handle_b = NULL;
    CHECK_RC(switchyard_topic_new(producer, topic_a, &handle_a), SWITCHYARD_OK);
    CHECK_RC(switchyard_topic_new(producer, topic_b, &handle_b), SWITCHYARD_OK);

    for (int i = 0; i < N; i++) {
        char key[16], payload[300];
        record(i, key, sizeof key, payload, sizeof payload);
        const char *topic = i < N_A ? topic_a : topic_b;
        if (i % 10 == 0) {
            /* Every tenth record carries headers. */
            char idx[16];
            snprintf(idx, sizeof idx, "%d", i);
            switchyard_header h[2] = {
                {"idx", (const uint8_t *)idx, strlen(idx)},
                {"empty", NULL, 0},
            };
            CHECK_RC(switchyard_producer_send_with_headers(
                         producer, topic, (const uint8_t *)key, strlen(key),
                         (const uint8_t *)payload, strlen(payload), h, 2, on_delivery, &slots[i]),
                     SWITCHYARD_OK);
            continue;
        }
        if (i % 2 == 1) {
            /* Every other record goes through the topic's handle. */
            CHECK_RC(switchyard_topic_send(i < N_A ? handle_a : handle_b, (const uint8_t *)key,
                                           strlen(key), (const uint8_t *)payload,
                                           strlen(payload), on_delivery, &slots[i]),
                     SWITCHYARD_OK);
            continue;
        }
        CHECK_RC(switchyard_producer_send(producer, topic, (const uint8_t *)key, strlen(key),
                                          (const uint8_t *)payload, strlen(payload),
                                          on_delivery, &slots[i]),
                 SWITCHYARD_OK);
    }
    CHECK_RC(switchyard_producer_flush(producer, 60000), SWITCHYARD_OK);
    switchyard_topic_free(handle_a);
    switchyard_topic_free(handle_b);
    CHECK(switchyard_producer_in_flight(producer) == 0);
    for (int i = 0; i < N; i++) {
        slot *s = &slots[i];
        CHECK_MSG(atomic_load(&s->calls) == 1, "record %d: %d callbacks", i,
                  atomic_load(&s->calls));
        CHECK_MSG(s->rc == SWITCHYARD_OK, "record %d: %s", i, switchyard_result_name(s->rc));
        CHECK(s->partition >= 0 && s->partition < 3 && s->offset >= 0);
        if (i < N_A) {
            CHECK(strcmp(s->cluster, "east") == 0 && strcmp(s->physical, topic_a) == 0);
            CHECK(strcmp(s->topic, topic_a) == 0);
        } else {
            CHECK(strcmp(s->cluster, "west") == 0 && strcmp(s->physical, physical_b) == 0);
            CHECK(strcmp(s->topic, topic_b) == 0);
        }
    }

    /* A synchronous send, ordered after the asynchronous ones. */
    char key[16], payload[300];
    record(SYNC_INDEX, key, sizeof key, payload, sizeof payload);
    switchyard_delivery d;
    CHECK_RC(switchyard_producer_send_sync(producer, topic_a, (const uint8_t *)key, strlen(key),
                                           (const uint8_t *)payload, strlen(payload), &d),
             SWITCHYARD_OK);
    CHECK(strcmp(d.cluster, "east") == 0 && strcmp(d.topic, topic_a) == 0);
    CHECK(d.partition >= 0 && d.offset >= 0 && d.config_version >= 1);
    slot *s = &slots[SYNC_INDEX];
    s->rc = SWITCHYARD_OK;
    strcpy(s->cluster, d.cluster);
    s->partition = d.partition;
    s->offset = d.offset;
    return 0;
}

static int consume_everything_back_and_commit(void) {
    static int seen[N + 1];
    int got = 0, foreign = 0;
    double deadline = now_s() + 120;
    while (got < N + 1) {
        CHECK_MSG(now_s() < deadline, "only %d of %d records within 120 s", got, N + 1);
        switchyard_message *m = NULL;
        switchyard_result rc = switchyard_consumer_poll(consumer, 1000, &m);
        if (rc == SWITCHYARD_TIMEOUT) {
            CHECK(m == NULL);
            continue;
        }
        CHECK_RC(rc, SWITCHYARD_OK);
        CHECK(m != NULL);
        size_t plen = 0, klen = 0;
        const uint8_t *payload = switchyard_message_payload(m, &plen);
        const uint8_t *key = switchyard_message_key(m, &klen);
        int i = index_of(payload, plen);
        if (i < 0 || i > N) {
            foreign++;
            switchyard_message_free(m);
            continue;
        }
        CHECK_MSG(seen[i] == 0, "record %d received twice", i);
        seen[i] = 1;
        got++;
        char want_key[16], want_payload[300];
        record(i, want_key, sizeof want_key, want_payload, sizeof want_payload);
        CHECK(klen == strlen(want_key) && memcmp(key, want_key, klen) == 0);
        CHECK(plen == strlen(want_payload) && memcmp(payload, want_payload, plen) == 0);
        int on_a = i < N_A || i == SYNC_INDEX;
        CHECK(strcmp(switchyard_message_topic(m), on_a ? topic_a : topic_b) == 0);
        CHECK(strcmp(switchyard_message_cluster(m), on_a ? "east" : "west") == 0);
        CHECK(strcmp(switchyard_message_physical_topic(m), on_a ? topic_a : physical_b) == 0);
        /* Exactly where the delivery report said it was written. */
        CHECK_MSG(switchyard_message_partition(m) == slots[i].partition &&
                      switchyard_message_offset(m) == slots[i].offset,
                  "record %d at %d/%lld, delivered at %d/%lld", i,
                  switchyard_message_partition(m), (long long)switchyard_message_offset(m),
                  slots[i].partition, (long long)slots[i].offset);
        CHECK(switchyard_message_timestamp_ms(m) > 0);
        if (i < N && i % 10 == 0) {
            CHECK(switchyard_message_header_count(m) == 2);
            const char *name = NULL;
            const uint8_t *value = NULL;
            size_t name_len = 0, value_len = 0;
            char idx[16];
            snprintf(idx, sizeof idx, "%d", i);
            CHECK_RC(switchyard_message_header(m, 0, &name, &name_len, &value, &value_len),
                     SWITCHYARD_OK);
            CHECK(name_len == 3 && memcmp(name, "idx", 3) == 0);
            CHECK(value_len == strlen(idx) && memcmp(value, idx, value_len) == 0);
            CHECK_RC(switchyard_message_header(m, 1, &name, &name_len, NULL, &value_len),
                     SWITCHYARD_OK);
            CHECK(name_len == 5 && memcmp(name, "empty", 5) == 0 && value_len == 0);
            CHECK_FAILS(switchyard_message_header(m, 2, NULL, NULL, NULL, NULL),
                        SWITCHYARD_INVALID_ARGUMENT, "out of range");
        } else {
            CHECK(switchyard_message_header_count(m) == 0);
            CHECK_FAILS(switchyard_message_header(m, 0, NULL, NULL, NULL, NULL),
                        SWITCHYARD_INVALID_ARGUMENT, "out of range");
        }
        CHECK_RC(switchyard_consumer_commit(consumer, m), SWITCHYARD_OK);
        switchyard_message_free(m);
    }
    fprintf(stderr, "received %d records (%d of other tests)\n", got, foreign);
    /* Nothing more of ours: a zero timeout returns at once. */
    for (int j = 0; j < 20; j++) {
        switchyard_message *m = NULL;
        switchyard_result rc = switchyard_consumer_poll(consumer, 0, &m);
        CHECK(rc == SWITCHYARD_OK || rc == SWITCHYARD_TIMEOUT);
        if (m != NULL) {
            size_t plen = 0;
            const uint8_t *p = switchyard_message_payload(m, &plen);
            CHECK_MSG(index_of(p, plen) < 0, "an extra record of ours");
            switchyard_message_free(m);
        }
    }
    return 0;
}

static int a_new_member_starts_after_the_commits(void) {
    /* Another consumer's message cannot be committed through this one. */
    switchyard_consumer_free(consumer);
    consumer = NULL;

    char key[] = "marker";
    char payload[300];
    snprintf(payload, sizeof payload, "%s|marker", tag);
    CHECK_RC(switchyard_producer_send_sync(producer, topic_a, (const uint8_t *)key, strlen(key),
                                           (const uint8_t *)payload, strlen(payload), NULL),
             SWITCHYARD_OK);

    switchyard_client *client = NULL;
    CHECK_RC(switchyard_client_from_file(config_file, "c-tests", &client), SWITCHYARD_OK);
    switchyard_consumer *again = NULL, *other = NULL;
    CHECK_RC(switchyard_consumer_new(client, group, group_topics, 2, 0, &again), SWITCHYARD_OK);
    double deadline = now_s() + 120;
    int marker = 0;
    switchyard_message *keep = NULL;
    while (!marker) {
        CHECK_MSG(now_s() < deadline, "the marker did not arrive within 120 s");
        switchyard_message *m = NULL;
        switchyard_result rc = switchyard_consumer_poll(again, 1000, &m);
        if (rc == SWITCHYARD_TIMEOUT) continue;
        CHECK_RC(rc, SWITCHYARD_OK);
        size_t plen = 0;
        const uint8_t *p = switchyard_message_payload(m, &plen);
        int i = index_of(p, plen);
        CHECK_MSG(i < 0 || i == N + 1, "committed record %d delivered again", i);
        if (i == N + 1) {
            marker = 1;
            keep = m;
        } else {
            switchyard_message_free(m);
        }
    }
    const char *one[] = {topic_a};
    CHECK_RC(switchyard_consumer_new(client, "c-tests-other-group", one, 1, 0, &other),
             SWITCHYARD_OK);
    CHECK_FAILS(switchyard_consumer_commit(other, keep), SWITCHYARD_INVALID_ARGUMENT,
                "another consumer");
    CHECK_RC(switchyard_consumer_commit(again, keep), SWITCHYARD_OK);
    /* A message outlives its consumer. */
    switchyard_consumer_free(again);
    CHECK(strcmp(switchyard_message_topic(keep), topic_a) == 0);
    switchyard_message_free(keep);
    switchyard_consumer_free(other);
    switchyard_producer_free(producer);
    switchyard_client_free(client);
    return 0;
}

/* The client's metrics text (switchyard_client_metrics): sends counted under their logical topic
 * and the cluster they went to, the length protocol, truncation at a line end, NULL checks. */
static int metrics_text_counts_the_sends(void) {
    switchyard_client *client = NULL;
    CHECK_RC(switchyard_client_from_file(config_file, "c-tests-metrics", &client), SWITCHYARD_OK);
    switchyard_producer *p = NULL;
    CHECK_RC(switchyard_producer_new(client, &p), SWITCHYARD_OK);
    const char payload[] = "metrics-probe"; /* not of the form tag|index: no test counts it */
    for (int i = 0; i < 3; i++) {
        CHECK_RC(switchyard_producer_send_sync(p, topic_b, (const uint8_t *)"m", 1,
                                               (const uint8_t *)payload, strlen(payload), NULL),
                 SWITCHYARD_OK);
    }
    size_t need = 0, got = 0;
    CHECK_RC(switchyard_client_metrics(client, NULL, 0, &need), SWITCHYARD_OK);
    CHECK(need > 0);
    size_t cap = need + 4096;
    char *text = malloc(cap);
    CHECK(text != NULL);
    CHECK_RC(switchyard_client_metrics(client, text, cap, &got), SWITCHYARD_OK);
    CHECK(got < cap && strlen(text) == got);
    char want[600];
    snprintf(want, sizeof want,
             "\nswitchyard_client_messages_sent_total{app=\"c-tests-metrics\",cluster=\"west\","
             "topic=\"%s\"} 3\n",
             topic_b);
    CHECK_MSG(strstr(text, want) != NULL, "no%sin:\n%s", want, text);
    snprintf(want, sizeof want,
             "\nswitchyard_client_bytes_sent_total{app=\"c-tests-metrics\",cluster=\"west\","
             "topic=\"%s\"} %zu\n",
             topic_b, 3 * strlen(payload));
    CHECK_MSG(strstr(text, want) != NULL, "no%sin:\n%s", want, text);
    CHECK(strstr(text, "# TYPE switchyard_client_send_latency_seconds histogram\n") != NULL);
    /* A short buffer: NUL-terminated, cut after a whole line, the full length reported. */
    char small[200];
    CHECK_RC(switchyard_client_metrics(client, small, sizeof small, &got), SWITCHYARD_OK);
    size_t n = strlen(small);
    CHECK(got >= sizeof small && n > 0 && n < sizeof small && small[n - 1] == '\n');
    CHECK(strncmp(small, text, n) == 0);
    CHECK_FAILS(switchyard_client_metrics(NULL, small, sizeof small, NULL),
                SWITCHYARD_NULL_POINTER, "client");
    CHECK_FAILS(switchyard_client_metrics(client, NULL, 5, NULL), SWITCHYARD_NULL_POINTER, "buf");
    free(text);
    switchyard_producer_free(p);
    switchyard_client_free(client);
    return 0;
}

/* switchyard_producer_poll: callbacks run inside it on the calling thread (as many as it says),
 * each exactly once; a program that stops polling still gets every callback (the switchyard
 * threads take over); poll inside a callback runs nothing and must not wait; argument checks. */
#define N_POLL 400

static pthread_t poll_thread;
static atomic_int poll_calls[N_POLL], poll_here, poll_elsewhere, poll_inner_rc;

static void on_polled(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    (void)d;
    atomic_int *c = user_data;
    if (rc == SWITCHYARD_OK) atomic_fetch_add(c, 1);
    if (pthread_equal(pthread_self(), poll_thread)) {
        atomic_fetch_add(&poll_here, 1);
    } else {
        atomic_fetch_add(&poll_elsewhere, 1);
    }
    if (c == &poll_calls[0]) {
        /* Inside a callback: a poll that would wait is refused; one that would not, runs
         * nothing. */
        size_t served = 99;
        switchyard_result a = switchyard_producer_poll(callback_producer, 10, &served);
        switchyard_result b = switchyard_producer_poll(callback_producer, 0, &served);
        atomic_store(&poll_inner_rc,
                     a == SWITCHYARD_INVALID_ARGUMENT && b == SWITCHYARD_OK && served == 0 ? 1
                                                                                           : 2);
    }
}

static int poll_runs_callbacks_on_the_calling_thread(void) {
    switchyard_client *client = NULL;
    CHECK_RC(switchyard_client_from_file(config_file, "c-tests-poll", &client), SWITCHYARD_OK);
    switchyard_producer *p = NULL;
    CHECK_RC(switchyard_producer_new(client, &p), SWITCHYARD_OK);
    callback_producer = p;
    poll_thread = pthread_self();
    const char payload[] = "poll-probe"; /* not of the form tag|index: no test counts it */
    size_t served_total = 0;
    /* Send and poll after every send, then poll until every callback ran: the polls serve
     * the reports (after at most ~10 ms in which a switchyard thread may still serve some). */
    for (int i = 0; i < N_POLL; i++) {
        CHECK_RC(switchyard_producer_send(p, topic_a, (const uint8_t *)"p", 1,
                                          (const uint8_t *)payload, strlen(payload), on_polled,
                                          &poll_calls[i]),
                 SWITCHYARD_OK);
        size_t served = 0;
        CHECK_RC(switchyard_producer_poll(p, 0, &served), SWITCHYARD_OK);
        served_total += served;
    }
    time_t give_up = time(NULL) + 60;
    while (atomic_load(&poll_here) + atomic_load(&poll_elsewhere) < N_POLL) {
        CHECK_MSG(time(NULL) < give_up, "%d of %d callbacks after 60 s",
                  atomic_load(&poll_here) + atomic_load(&poll_elsewhere), N_POLL);
        size_t served = 0;
        CHECK_RC(switchyard_producer_poll(p, 100, &served), SWITCHYARD_OK);
        served_total += served;
    }
    CHECK_RC(switchyard_producer_flush(p, 60000), SWITCHYARD_OK);
    for (int i = 0; i < N_POLL; i++) {
        CHECK_MSG(atomic_load(&poll_calls[i]) == 1, "record %d: %d successful callbacks", i,
                  atomic_load(&poll_calls[i]));
    }
    CHECK_MSG(served_total == (size_t)atomic_load(&poll_here),
              "poll said %zu, %d callbacks ran on this thread", served_total,
              atomic_load(&poll_here));
    CHECK_MSG(atomic_load(&poll_here) > 0, "no callback ran in poll (%d elsewhere)",
              atomic_load(&poll_elsewhere));
    CHECK_MSG(atomic_load(&poll_inner_rc) == 1, "poll inside a callback: %d",
              atomic_load(&poll_inner_rc));

    /* Stop polling: the switchyard threads run the callbacks; flush waits for them. */
    int before_here = atomic_load(&poll_here);
    atomic_int later = 0;
    for (int i = 0; i < 50; i++) {
        CHECK_RC(switchyard_producer_send(p, topic_a, (const uint8_t *)"p", 1,
                                          (const uint8_t *)payload, strlen(payload), on_polled,
                                          &later),
                 SWITCHYARD_OK);
    }
    CHECK_RC(switchyard_producer_flush(p, 60000), SWITCHYARD_OK);
    CHECK_MSG(atomic_load(&later) == 50, "%d of 50 callbacks", atomic_load(&later));
    CHECK(atomic_load(&poll_here) == before_here);

    size_t served = 0;
    CHECK_FAILS(switchyard_producer_poll(NULL, 0, &served), SWITCHYARD_NULL_POINTER, "producer");
    CHECK_RC(switchyard_producer_poll(p, 0, NULL), SWITCHYARD_OK);
    CHECK_RC(switchyard_producer_poll(p, 1, &served), SWITCHYARD_OK);
    CHECK(served == 0);
    switchyard_producer_free(p);
    switchyard_client_free(client);
    return 0;
}

int main(void) {
    config_file = require_env("SWITCHYARD_TEST_CONFIG_FILE");
    topic_a = require_env("SWITCHYARD_TEST_TOPIC_A");
    topic_b = require_env("SWITCHYARD_TEST_TOPIC_B");
    physical_b = require_env("SWITCHYARD_TEST_PHYSICAL_B");
    snprintf(tag, sizeof tag, "file-%s-%d", require_env("SWITCHYARD_TEST_RUN"), (int)getpid());
    RUN(produce_with_callbacks_and_flush);
    if (check_failures) return check_failures;
    RUN(consume_everything_back_and_commit);
    RUN(a_new_member_starts_after_the_commits);
    RUN(metrics_text_counts_the_sends);
    RUN(poll_runs_callbacks_on_the_calling_thread);
    return check_failures;
}
