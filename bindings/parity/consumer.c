/*
 * Parity scenario consumer in C (bindings/parity/run_parity.py starts it).
 *
 *   parity-consumer ENDPOINT APP GROUP TOPIC
 *
 * Joins consumer group GROUP over logical TOPIC (config service at ENDPOINT, application APP,
 * bearer token from SWITCHYARD_TOKEN when set) and, until standard input closes, prints every
 * record it receives and commits synchronously (manual commits): it takes a batch — the next
 * record, then up to 31 more already there — prints them, then commits the last record of
 * each partition in the batch and waits for each commit before it polls again. Output lines
 * (stdout):
 *
 *   ready                                                      (after the first poll returned)
 *   r KEY SEQ CLUSTER PHYSICAL PARTITION OFFSET LOGICAL        (one per record received)
 *   bad CLUSTER PHYSICAL PARTITION OFFSET                      (a payload that is not KEY:SEQ)
 *   commit_failed CLUSTER/PHYSICAL/PARTITION@OFFSET RESULT_NAME MESSAGE
 *   poll_error RESULT_NAME MESSAGE
 *   summary received=N commit_failures=C poll_errors=E
 *
 * Exits 0 after the summary, 1 when it cannot connect or create the consumer, 2 on bad
 * arguments.
 */
#include "parity.h"

/* Records handed out before one round of commits. */
#define BATCH_MAX 32

static int same_partition(const switchyard_message *a, const switchyard_message *b) {
    return switchyard_message_partition(a) == switchyard_message_partition(b) &&
           strcmp(switchyard_message_cluster(a), switchyard_message_cluster(b)) == 0 &&
           strcmp(switchyard_message_physical_topic(a), switchyard_message_physical_topic(b)) == 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s ENDPOINT APP GROUP TOPIC\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[1], *app = argv[2], *group = argv[3], *topic = argv[4];
    /* Line-buffered: the driver follows the records as they arrive. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    pthread_t watcher;
    if (pthread_create(&watcher, NULL, parity_stdin_watcher, NULL) != 0) {
        fprintf(stderr, "cannot start the stdin watcher thread\n");
        return 1;
    }
    switchyard_client *client = NULL;
    switchyard_result rc = switchyard_client_connect(endpoint, app, getenv("SWITCHYARD_TOKEN"),
                                                     NULL, &client);
    if (rc != SWITCHYARD_OK) {
        fprintf(stderr, "connect: %s: %s\n", switchyard_result_name(rc), parity_last_error());
        return 1;
    }
    switchyard_consumer *consumer = NULL;
    const char *topics[] = {topic};
    rc = switchyard_consumer_new(client, group, topics, 1, 0, &consumer);
    if (rc != SWITCHYARD_OK) {
        fprintf(stderr, "consumer: %s: %s\n", switchyard_result_name(rc), parity_last_error());
        switchyard_client_free(client);
        return 1;
    }

    long received = 0, commit_failures = 0, poll_errors = 0;
    int ready = 0;
    switchyard_message *batch[BATCH_MAX];
    while (!atomic_load(&parity_stop)) {
        /* A batch: the first record (waiting up to 200 ms), then whatever is already there. */
        size_t n = 0;
        int32_t timeout_ms = 200;
        while (n < BATCH_MAX) {
            switchyard_message *m = NULL;
            rc = switchyard_consumer_poll(consumer, timeout_ms, &m);
            if (!ready) {
                printf("ready\n");
                ready = 1;
            }
            if (rc == SWITCHYARD_TIMEOUT) break;
            if (rc != SWITCHYARD_OK) {
                poll_errors++;
                printf("poll_error %s %s\n", switchyard_result_name(rc), parity_last_error());
                parity_sleep_ms(100);
                break;
            }
            batch[n++] = m;
            timeout_ms = 0;
        }
        for (size_t i = 0; i < n; i++) {
            switchyard_message *m = batch[i];
            size_t len = 0;
            const uint8_t *payload = switchyard_message_payload(m, &len);
            int key = -1;
            long seq = -1;
            if (parity_parse_payload(payload, len, &key, &seq) != 0) {
                printf("bad %s %s %d %lld\n", switchyard_message_cluster(m),
                       switchyard_message_physical_topic(m), (int)switchyard_message_partition(m),
                       (long long)switchyard_message_offset(m));
            } else {
                received++;
                printf("r k%02d %ld %s %s %d %lld %s\n", key, seq, switchyard_message_cluster(m),
                       switchyard_message_physical_topic(m),
                       (int)switchyard_message_partition(m),
                       (long long)switchyard_message_offset(m), switchyard_message_topic(m));
            }
        }
        /* Processed (printed); now commit, in poll order, the last record of each partition in
         * the batch (a commit covers the earlier records of its partition). */
        for (size_t i = 0; i < n; i++) {
            int last = 1;
            for (size_t j = i + 1; j < n && last; j++) last = !same_partition(batch[i], batch[j]);
            if (!last) continue;
            rc = switchyard_consumer_commit(consumer, batch[i]);
            if (rc != SWITCHYARD_OK) {
                commit_failures++;
                printf("commit_failed %s/%s/%d@%lld %s %s\n", switchyard_message_cluster(batch[i]),
                       switchyard_message_physical_topic(batch[i]),
                       (int)switchyard_message_partition(batch[i]),
                       (long long)switchyard_message_offset(batch[i]), switchyard_result_name(rc),
                       parity_last_error());
            }
        }
        for (size_t i = 0; i < n; i++) switchyard_message_free(batch[i]);
    }
    switchyard_consumer_free(consumer);
    switchyard_client_free(client);
    pthread_join(watcher, NULL);
    printf("summary received=%ld commit_failures=%ld poll_errors=%ld\n", received,
           commit_failures, poll_errors);
    return 0;
}
