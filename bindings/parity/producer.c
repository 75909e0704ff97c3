/*
 * Parity scenario producer in C (bindings/parity/run_parity.py starts it).
 *
 *   parity-producer ENDPOINT APP TOPIC KEYS RATE
 *
 * Connects to the config service at ENDPOINT as application APP (bearer token from
 * SWITCHYARD_TOKEN when set) and sends keyed records to logical TOPIC at about RATE records/s,
 * round-robin over KEYS keys "k00", "k01", ... with payload "KEY:SEQ" (SEQ counts per key from
 * 0), until standard input closes, serving its delivery reports itself while it waits
 * (switchyard_producer_poll, so the callbacks run on this thread through the route change and
 * the move). Then it flushes, releases the producer and prints its summary. Output lines (stdout):
 *
 *   ready
 *   progress sent=N delivered=D failed=F [CLUSTER/PHYSICAL=COUNT ...]   (every ~200 ms)
 *   key KEY sent=N delivered=D
 *   failed KEY SEQ RESULT_NAME MESSAGE                                 (one per failed send)
 *   location CLUSTER/PHYSICAL COUNT
 *   summary sent=N delivered=D failed=F
 *
 * A send refused at once and a send whose delivery callback reports a failure are both
 * "failed" lines: nothing is dropped silently. Exits 0 after printing the summary, 1 when it
 * cannot connect or create the producer, 2 on bad arguments.
 */
#include "parity.h"

_Static_assert(sizeof(uintptr_t) >= 8, "user_data packs a key index and a sequence number");

#define MAX_LOCATIONS 16
#define MAX_FAILURES 10000
#define SEQ_BITS 40

typedef struct {
    char name[2 * SWITCHYARD_NAME_MAX + 1];
    long count;
} location;

typedef struct {
    int key;
    long seq;
    switchyard_result rc;
    char message[256];
} failure;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long sent_per_key[PARITY_MAX_KEYS];
static long delivered_per_key[PARITY_MAX_KEYS];
static long delivered_total, failed_total;
static location locations[MAX_LOCATIONS];
static int n_locations;
static long unplaced; /* deliveries to more locations than MAX_LOCATIONS */
static failure failures[MAX_FAILURES];
static long n_failures_kept;

/* Caller holds mu. */
static void record_failure(int key, long seq, switchyard_result rc, const char *message) {
    failed_total++;
    if (n_failures_kept < MAX_FAILURES) {
        failure *f = &failures[n_failures_kept++];
        f->key = key;
        f->seq = seq;
        f->rc = rc;
        snprintf(f->message, sizeof f->message, "%s", message);
    }
}

static void on_delivery(void *user_data, switchyard_result rc, const switchyard_delivery *d) {
    uintptr_t packed = (uintptr_t)user_data;
    int key = (int)(packed >> SEQ_BITS);
    long seq = (long)(packed & (((uintptr_t)1 << SEQ_BITS) - 1));
    const char *message = rc == SWITCHYARD_OK ? "" : parity_last_error();
    pthread_mutex_lock(&mu);
    if (rc != SWITCHYARD_OK) {
        record_failure(key, seq, rc, message);
    } else {
        delivered_total++;
        delivered_per_key[key]++;
        char name[sizeof locations[0].name];
        snprintf(name, sizeof name, "%s/%s", d->cluster, d->physical_topic);
        int i = 0;
        while (i < n_locations && strcmp(locations[i].name, name) != 0) i++;
        if (i == n_locations && n_locations < MAX_LOCATIONS) {
            memcpy(locations[i].name, name, sizeof name);
            n_locations++;
        }
        if (i < n_locations) {
            locations[i].count++;
        } else {
            unplaced++;
        }
    }
    pthread_mutex_unlock(&mu);
}

static void print_progress(long sent) {
    pthread_mutex_lock(&mu);
    printf("progress sent=%ld delivered=%ld failed=%ld", sent, delivered_total, failed_total);
    for (int i = 0; i < n_locations; i++) printf(" %s=%ld", locations[i].name, locations[i].count);
    pthread_mutex_unlock(&mu);
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s ENDPOINT APP TOPIC KEYS RATE\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[1], *app = argv[2], *topic = argv[3];
    int keys = (int)parity_parse_long("KEYS", argv[4], 1, PARITY_MAX_KEYS);
    long rate = parity_parse_long("RATE", argv[5], 1, 1000000);

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
    switchyard_producer *producer = NULL;
    rc = switchyard_producer_new(client, &producer);
    if (rc != SWITCHYARD_OK) {
        fprintf(stderr, "producer: %s: %s\n", switchyard_result_name(rc), parity_last_error());
        switchyard_client_free(client);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    long sent = 0;
    int next_key = 0;
    double start = parity_now(), last_progress = start;
    while (!atomic_load(&parity_stop)) {
        double now = parity_now();
        if (now - last_progress >= 0.2) {
            print_progress(sent);
            last_progress = now;
        }
        long due = (long)((now - start) * (double)rate) - sent;
        if (due <= 0) {
            /* Wait by serving delivery reports on this thread (callbacks run here). */
            rc = switchyard_producer_poll(producer, 2, NULL);
            if (rc != SWITCHYARD_OK) {
                printf("poll %s %s\n", switchyard_result_name(rc), parity_last_error());
                fflush(stdout);
                parity_sleep_ms(2);
            }
            continue;
        }
        if (due > 200) due = 200;
        for (long i = 0; i < due; i++) {
            int k = next_key;
            next_key = (next_key + 1) % keys;
            long seq = sent_per_key[k]++;
            char key[16], payload[48];
            int key_len = snprintf(key, sizeof key, "k%02d", k);
            int payload_len = snprintf(payload, sizeof payload, "%s:%ld", key, seq);
            uintptr_t packed = ((uintptr_t)k << SEQ_BITS) | (uintptr_t)seq;
            rc = switchyard_producer_send(producer, topic, (const uint8_t *)key, (size_t)key_len,
                                          (const uint8_t *)payload, (size_t)payload_len,
                                          on_delivery, (void *)packed);
            sent++;
            if (rc != SWITCHYARD_OK) {
                const char *message = parity_last_error();
                pthread_mutex_lock(&mu);
                record_failure(k, seq, rc, message);
                pthread_mutex_unlock(&mu);
            }
        }
    }

    rc = switchyard_producer_flush(producer, 60000);
    if (rc != SWITCHYARD_OK) {
        printf("flush %s %s\n", switchyard_result_name(rc), parity_last_error());
    }
    /* Sends still in flight get their (failure) callback before this returns. */
    switchyard_producer_free(producer);
    switchyard_client_free(client);
    pthread_join(watcher, NULL);

    print_progress(sent);
    for (int k = 0; k < keys; k++) {
        printf("key k%02d sent=%ld delivered=%ld\n", k, sent_per_key[k], delivered_per_key[k]);
    }
    for (long i = 0; i < n_failures_kept; i++) {
        printf("failed k%02d %ld %s %s\n", failures[i].key, failures[i].seq,
               switchyard_result_name(failures[i].rc), failures[i].message);
    }
    if (failed_total > n_failures_kept) {
        printf("failed_not_listed %ld\n", failed_total - n_failures_kept);
    }
    for (int i = 0; i < n_locations; i++) {
        printf("location %s %ld\n", locations[i].name, locations[i].count);
    }
    if (unplaced > 0) printf("location ? %ld\n", unplaced);
    printf("summary sent=%ld delivered=%ld failed=%ld\n", sent, delivered_total, failed_total);
    fflush(stdout);
    return 0;
}
