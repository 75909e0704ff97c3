/*
 * Sends into a full local queue, on real Kafka: the cluster's client properties allow one
 * record in the Kafka client's queue (`queue.buffering.max.messages: 1`, from the
 * desired-state file), so every send waits for the previous record's delivery report.
 *
 * - From the application's thread, switchyard_producer_send blocks until there is room and
 *   returns SWITCHYARD_OK: every record is delivered, each callback runs once, in send order.
 * - Inside a delivery callback (whose record still fills the queue, and the queue only drains
 *   once the callback returns) the send does not wait: it is accepted, and its callback gets
 *   SWITCHYARD_KAFKA ("Queue full", retriable) with the record's key and payload handed back.
 *
 * Environment: SWITCHYARD_KAFKA_CLUSTERS (the first is used), SWITCHYARD_TEST_TOPIC_A (a
 * topic on that cluster), SWITCHYARD_TEST_TMPDIR, SWITCHYARD_TEST_RUN.
 */
#include <stdatomic.h>

#include "check.h"

#define N 30

static const char *topic;
static char config_path[1024];
static char tag[256];

typedef struct {
    atomic_int calls;
    switchyard_result rc;
    int32_t partition;
    int64_t offset;
    int order; /* position among all callbacks */
} slot;

static slot slots[N];
static atomic_int arrived;

static void on_delivery(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    slot *s = user_data;
    s->rc = rc;
    s->partition = d->partition;
    s->offset = d->offset;
    s->order = atomic_fetch_add(&arrived, 1);
    atomic_fetch_add(&s->calls, 1);
}

static int write_config(void) {
    const char *clusters = getenv("SWITCHYARD_KAFKA_CLUSTERS");
    const char *tmp = getenv("SWITCHYARD_TEST_TMPDIR");
    const char *run = getenv("SWITCHYARD_TEST_RUN");
    topic = getenv("SWITCHYARD_TEST_TOPIC_A");
    CHECK(clusters && tmp && run && topic);
    char east[256];
    size_t n = strcspn(clusters, ";");
    CHECK(n > 0 && n < sizeof east);
    memcpy(east, clusters, n);
    east[n] = 0;
    snprintf(tag, sizeof tag, "%s-backpressure", run);
    snprintf(config_path, sizeof config_path, "%s/backpressure.yaml", tmp);
    FILE *f = fopen(config_path, "w");
    CHECK(f != NULL);
    fprintf(f,
            "clusters:\n"
            "  - name: east\n"
            "    bootstrap: [\"%s\"]\n"
            "    properties:\n"
            "      queue.buffering.max.messages: 1\n"
            "topics:\n"
            "  - name: %s\n"
            "    cluster: east\n"
            "    partitions: 3\n",
            east, topic);
    CHECK(fclose(f) == 0);
    return 0;
}

static switchyard_client *client;
static switchyard_producer *producer;

static int sends_from_the_app_thread_wait_for_room_and_all_arrive_in_order(void) {
    CHECK(write_config() == 0);
    CHECK_RC(switchyard_client_from_file(config_path, "c-backpressure", &client), SWITCHYARD_OK);
    CHECK_RC(switchyard_producer_new(client, &producer), SWITCHYARD_OK);
    char payload[300];
    for (int i = 0; i < N; i++) {
        snprintf(payload, sizeof payload, "%s|%d", tag, i);
        CHECK_RC(switchyard_producer_send(producer, topic, (const uint8_t *)"one-key", 7,
                                          (const uint8_t *)payload, strlen(payload),
                                          on_delivery, &slots[i]),
                 SWITCHYARD_OK);
    }
    CHECK_RC(switchyard_producer_flush(producer, 60000), SWITCHYARD_OK);
    CHECK(switchyard_producer_in_flight(producer) == 0);
    for (int i = 0; i < N; i++) {
        CHECK_MSG(atomic_load(&slots[i].calls) == 1, "send %d: %d callbacks", i,
                  atomic_load(&slots[i].calls));
        CHECK_MSG(slots[i].rc == SWITCHYARD_OK, "send %d: %s", i,
                  switchyard_result_name(slots[i].rc));
        CHECK_MSG(slots[i].order == i, "send %d reported as number %d", i, slots[i].order);
        if (i > 0) {
            /* One key: one partition, offsets in send order. */
            CHECK(slots[i].partition == slots[0].partition);
            CHECK_MSG(slots[i].offset > slots[i - 1].offset, "send %d offset %lld after %lld",
                      i, (long long)slots[i].offset, (long long)slots[i - 1].offset);
        }
    }
    return 0;
}

typedef struct {
    atomic_int outer_calls;
    switchyard_result outer_rc;
    switchyard_result nested_send_rc; /* what switchyard_producer_send returned in the callback */
    atomic_int inner_calls;
    switchyard_result inner_rc;
    char inner_error[1024];
    bool inner_retriable;
    char inner_payload[64];
    size_t inner_payload_len;
    int inner_key_ok;
} nested;

static nested nest;

static void on_inner(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    nested *n = user_data;
    n->inner_rc = rc;
    switchyard_last_error_message(n->inner_error, sizeof n->inner_error, NULL);
    n->inner_retriable = switchyard_last_error_is_retriable();
    n->inner_key_ok = d->key != NULL && d->key_len == 7 && memcmp(d->key, "one-key", 7) == 0;
    n->inner_payload_len = d->payload_len < sizeof n->inner_payload ? d->payload_len : 0;
    if (d->payload != NULL) memcpy(n->inner_payload, d->payload, n->inner_payload_len);
    atomic_fetch_add(&n->inner_calls, 1);
}

static void on_outer(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    (void)d;
    nested *n = user_data;
    n->outer_rc = rc;
    n->nested_send_rc = switchyard_producer_send(producer, topic, (const uint8_t *)"one-key", 7,
                                                 (const uint8_t *)"inner", 5, on_inner, n);
    atomic_fetch_add(&n->outer_calls, 1);
}

static int a_send_inside_a_callback_fails_fast_on_the_full_queue(void) {
    CHECK(producer != NULL);
    CHECK_RC(switchyard_producer_send(producer, topic, (const uint8_t *)"one-key", 7,
                                      (const uint8_t *)"outer", 5, on_outer, &nest),
             SWITCHYARD_OK);
    /* Waits for both callbacks: the inner send counts in flight until its callback returned. */
    CHECK_RC(switchyard_producer_flush(producer, 60000), SWITCHYARD_OK);
    CHECK(atomic_load(&nest.outer_calls) == 1);
    CHECK_MSG(nest.outer_rc == SWITCHYARD_OK, "outer: %s", switchyard_result_name(nest.outer_rc));
    CHECK_MSG(nest.nested_send_rc == SWITCHYARD_OK, "nested send returned %s",
              switchyard_result_name(nest.nested_send_rc));
    CHECK(atomic_load(&nest.inner_calls) == 1);
    CHECK_MSG(nest.inner_rc == SWITCHYARD_KAFKA, "inner: %s (%s)",
              switchyard_result_name(nest.inner_rc), nest.inner_error);
    CHECK_MSG(strstr(nest.inner_error, "Queue full") != NULL, "inner error: %s",
              nest.inner_error);
    CHECK(nest.inner_retriable);
    CHECK(nest.inner_key_ok);
    CHECK(nest.inner_payload_len == 5 && memcmp(nest.inner_payload, "inner", 5) == 0);
    switchyard_producer_free(producer);
    producer = NULL;
    switchyard_client_free(client);
    client = NULL;
    return 0;
}

int main(void) {
    RUN(sends_from_the_app_thread_wait_for_room_and_all_arrive_in_order);
    RUN(a_send_inside_a_callback_fails_fast_on_the_full_queue);
    if (producer != NULL) switchyard_producer_free(producer);
    if (client != NULL) switchyard_client_free(client);
    return check_failures;
}
