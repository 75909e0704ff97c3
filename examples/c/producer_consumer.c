/*
 * Switchyard from C: produce records to a logical topic with delivery callbacks, flush, then
 * read them back with a consumer group and commit.
 *
 *   switchyard-example CONFIG TOPIC [COUNT]
 *
 * CONFIG is a config service endpoint list ("http://127.0.0.1:7070") or a desired-state file
 * ("examples/desired-state.yaml"). The logical TOPIC must be in that configuration; which
 * cluster and physical topic it means is the configuration's business, not this program's.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "switchyard.h"

static void fail(const char *what, switchyard_result rc) {
    char msg[512];
    switchyard_last_error_message(msg, sizeof msg, NULL);
    fprintf(stderr, "%s: %s: %s\n", what, switchyard_result_name(rc), msg);
    exit(1);
}

/* Callbacks run on a library thread: only atomics here. */
static atomic_int delivered, failed;

static void on_delivery(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    (void)user_data;
    if (rc == SWITCHYARD_OK) {
        atomic_fetch_add(&delivered, 1);
    } else {
        char msg[256];
        switchyard_last_error_message(msg, sizeof msg, NULL);
        fprintf(stderr, "send to %s failed: %s\n", d->topic, msg);
        atomic_fetch_add(&failed, 1);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONFIG TOPIC [COUNT]\n", argv[0]);
        return 2;
    }
    const char *config = argv[1], *topic = argv[2];
    int count = argc > 3 ? atoi(argv[3]) : 10;
    if (count <= 0) count = 10;
    printf("libswitchyard_c %s\n", switchyard_version());

    switchyard_client *client = NULL;
    switchyard_result rc;
    if (strncmp(config, "http://", 7) == 0 || strncmp(config, "https://", 8) == 0) {
        rc = switchyard_client_connect(config, "example-c", getenv("SWITCHYARD_TOKEN"), NULL,
                                       &client);
    } else {
        rc = switchyard_client_from_file(config, "example-c", &client);
    }
    if (rc != SWITCHYARD_OK) fail("connect", rc);
    printf("configuration version %llu\n",
           (unsigned long long)switchyard_client_config_version(client));

    /* A tag so this run recognises its own records among others in the topic. */
    char tag[64];
    snprintf(tag, sizeof tag, "example-%d-%ld", (int)getpid(), (long)time(NULL));

    switchyard_producer *producer = NULL;
    if ((rc = switchyard_producer_new(client, &producer)) != SWITCHYARD_OK) fail("producer", rc);
    for (int i = 0; i < count; i++) {
        char key[32], value[128];
        snprintf(key, sizeof key, "key-%d", i % 3);
        snprintf(value, sizeof value, "%s #%d", tag, i);
        /* By name; a hot loop to one topic can name it once instead: switchyard_topic_new,
         * then switchyard_topic_send (like a librdkafka topic handle). */
        rc = switchyard_producer_send(producer, topic, (const uint8_t *)key, strlen(key),
                                      (const uint8_t *)value, strlen(value), on_delivery, NULL);
        if (rc != SWITCHYARD_OK) fail("send", rc);
        /* Optional, like rd_kafka_poll: run the callbacks of delivered records here, on this
         * thread (cheaper than a hand-off per record); without it a switchyard thread runs
         * them. */
        if ((rc = switchyard_producer_poll(producer, 0, NULL)) != SWITCHYARD_OK) fail("poll", rc);
    }
    if ((rc = switchyard_producer_flush(producer, 30000)) != SWITCHYARD_OK) fail("flush", rc);
    printf("produced %d records (%d failed)\n", atomic_load(&delivered), atomic_load(&failed));
    switchyard_producer_free(producer);
    if (atomic_load(&failed) != 0) {
        switchyard_client_free(client);
        return 1;
    }

    const char *topics[] = {topic};
    switchyard_consumer *consumer = NULL;
    rc = switchyard_consumer_new(client, tag, topics, 1, 0, &consumer);
    if (rc != SWITCHYARD_OK) fail("consumer", rc);
    int mine = 0;
    time_t deadline = time(NULL) + 60;
    while (mine < count && time(NULL) < deadline) {
        switchyard_message *m = NULL;
        rc = switchyard_consumer_poll(consumer, 1000, &m);
        if (rc == SWITCHYARD_TIMEOUT) continue;
        if (rc != SWITCHYARD_OK) fail("poll", rc);
        size_t klen = 0, vlen = 0;
        const uint8_t *k = switchyard_message_key(m, &klen);
        const uint8_t *v = switchyard_message_payload(m, &vlen);
        if (v != NULL && vlen > strlen(tag) && memcmp(v, tag, strlen(tag)) == 0) {
            printf("%s [%s %s/%d@%lld] %.*s = %.*s\n", switchyard_message_topic(m),
                   switchyard_message_cluster(m), switchyard_message_physical_topic(m),
                   switchyard_message_partition(m), (long long)switchyard_message_offset(m),
                   (int)klen, k ? (const char *)k : "", (int)vlen, (const char *)v);
            mine++;
        }
        if ((rc = switchyard_consumer_commit(consumer, m)) != SWITCHYARD_OK) fail("commit", rc);
        switchyard_message_free(m);
    }
    printf("consumed %d records\n", mine);
    switchyard_consumer_free(consumer);
    switchyard_client_free(client);
    return mine == count ? 0 : 1;
}
