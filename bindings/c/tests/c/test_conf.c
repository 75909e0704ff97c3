/*
 * switchyard_conf: every setting is checked when it is set (like rd_kafka_conf_set) — NULL
 * arguments, unknown or malformed names, values out of range, unreadable or non-PEM files —
 * each refused with its code and a message naming the setting, leaving the conf as it was; a
 * conf meant for one kind of object is refused by the others; the TLS options of
 * switchyard_client_connect_with are checked before anything is contacted; producers and
 * consumers made with a conf work, and a Kafka property librdkafka refuses fails the send with
 * a typed error within a bounded time.
 *
 * Environment: SWITCHYARD_TEST_CONFIG_FILE (a valid desired-state file),
 * SWITCHYARD_TEST_TOPIC_A (a logical topic in it), SWITCHYARD_TEST_TMPDIR (scratch directory).
 */
#include "check.h"

static const char *config_file;
static const char *topic_a;
static const char *tmpdir;

/* Bytes that are not UTF-8. */
static const char BAD_UTF8[] = {'a', (char)0xff, (char)0xfe, 0};

static const char CERT_PEM[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
static const char KEY_PEM[] = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

/* Writes `text` to a file named `name` in the scratch directory; its path goes to `path`. */
static int write_file(char *path, size_t len, const char *name, const char *text) {
    snprintf(path, len, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) return 1;
    fputs(text, f);
    return fclose(f) != 0;
}

static int set_refuses_null_arguments(void) {
    switchyard_conf *conf = switchyard_conf_new();
    CHECK(conf != NULL);
    CHECK_FAILS(switchyard_conf_set(NULL, "linger.ms", "5"), SWITCHYARD_NULL_POINTER, "conf");
    CHECK_FAILS(switchyard_conf_set(conf, NULL, "5"), SWITCHYARD_NULL_POINTER, "name");
    CHECK_FAILS(switchyard_conf_set(conf, "linger.ms", NULL), SWITCHYARD_NULL_POINTER,
                "value (of linger.ms)");
    CHECK(switchyard_conf_dup(NULL) == NULL);
    CHECK(strstr(last_error(), "conf is NULL") != NULL);
    switchyard_conf_free(NULL);
    switchyard_conf_free(conf);
    return 0;
}

static int set_refuses_bad_names_and_values(void) {
    switchyard_conf *conf = switchyard_conf_new();
    CHECK(conf != NULL);
    /* Names. */
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.initial.timeout", "5"),
                SWITCHYARD_INVALID_ARGUMENT, "unknown Switchyard setting");
    CHECK_FAILS(switchyard_conf_set(conf, "Linger.MS", "5"), SWITCHYARD_INVALID_ARGUMENT,
                "property key \"Linger.MS\" is malformed");
    CHECK_FAILS(switchyard_conf_set(conf, "", "5"), SWITCHYARD_INVALID_ARGUMENT, "malformed");
    CHECK_FAILS(switchyard_conf_set(conf, BAD_UTF8, "5"), SWITCHYARD_INVALID_ARGUMENT, "UTF-8");
    CHECK_FAILS(switchyard_conf_set(conf, "bootstrap.servers", "127.0.0.1:9092"),
                SWITCHYARD_INVALID_ARGUMENT, "comes from the config service");
    /* Values. */
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.initial.timeout.ms", "soon"),
                SWITCHYARD_INVALID_ARGUMENT,
                "switchyard.initial.timeout.ms must be a whole number of milliseconds");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.initial.timeout.ms", "-1"),
                SWITCHYARD_INVALID_ARGUMENT, "from 0 to 2147483647");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.watch.stall.timeout.ms", "50"),
                SWITCHYARD_INVALID_ARGUMENT, "from 100 to 3600000");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.max.in.flight", "0"),
                SWITCHYARD_INVALID_ARGUMENT, "switchyard.max.in.flight must be a whole number");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.auto.commit", "1"),
                SWITCHYARD_INVALID_ARGUMENT, "true or false");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.client.id", ""),
                SWITCHYARD_INVALID_ARGUMENT, "switchyard.client.id");
    CHECK_FAILS(switchyard_conf_set(conf, "linger.ms", BAD_UTF8), SWITCHYARD_INVALID_ARGUMENT,
                "linger.ms is not valid UTF-8");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.ca.pem", "hello"),
                SWITCHYARD_INVALID_ARGUMENT, "no PEM block of type CERTIFICATE");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.key.pem", CERT_PEM),
                SWITCHYARD_INVALID_ARGUMENT, "PRIVATE KEY");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.certificate.pem", KEY_PEM),
                SWITCHYARD_INVALID_ARGUMENT, "CERTIFICATE");
    /* None of that was recorded: a copy connects with the defaults (nothing to refuse). */
    CHECK_RC(switchyard_conf_set(conf, "switchyard.initial.timeout.ms", "100"), SWITCHYARD_OK);
    CHECK_RC(switchyard_conf_set(conf, "switchyard.cache.enable", "false"), SWITCHYARD_OK);
    switchyard_conf *copy = switchyard_conf_dup(conf);
    CHECK(copy != NULL);
    switchyard_conf_free(conf);
    switchyard_client *c = (switchyard_client *)0x1;
    double t0 = now_s();
    CHECK_RC(switchyard_client_connect_conf("http://127.0.0.1:1", "c-tests", NULL, NULL, copy, &c),
             SWITCHYARD_NO_CONFIG);
    CHECK(c == NULL);
    CHECK_MSG(now_s() - t0 < 10, "NO_CONFIG after %.1f s with a 100 ms initial timeout",
              now_s() - t0);
    switchyard_conf_free(copy);
    return 0;
}

static int pem_files_are_read_and_checked_when_set(void) {
    char junk[4096], cert[4096], key[4096], missing[4096];
    CHECK(write_file(junk, sizeof junk, "junk.pem", "not a certificate\n") == 0);
    CHECK(write_file(cert, sizeof cert, "cert.pem", CERT_PEM) == 0);
    CHECK(write_file(key, sizeof key, "key.pem", KEY_PEM) == 0);
    snprintf(missing, sizeof missing, "%s/no-such-dir/ca.pem", tmpdir);
    switchyard_conf *conf = switchyard_conf_new();
    CHECK(conf != NULL);
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.ca.location", missing),
                SWITCHYARD_INVALID_ARGUMENT, "cannot read");
    CHECK(strstr(last_error(), "switchyard.ca.location") != NULL);
    CHECK(strstr(last_error(), missing) != NULL);
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.ca.location", junk),
                SWITCHYARD_INVALID_ARGUMENT, "holds no PEM block of type CERTIFICATE");
    CHECK(strstr(last_error(), "junk.pem") != NULL);
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.ca.location", ""),
                SWITCHYARD_INVALID_ARGUMENT, "empty");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.key.location", cert),
                SWITCHYARD_INVALID_ARGUMENT, "PRIVATE KEY");
    CHECK_FAILS(switchyard_conf_set(conf, "switchyard.certificate.location", key),
                SWITCHYARD_INVALID_ARGUMENT, "CERTIFICATE");
    CHECK_RC(switchyard_conf_set(conf, "switchyard.ca.location", cert), SWITCHYARD_OK);
    CHECK_RC(switchyard_conf_set(conf, "switchyard.certificate.location", cert), SWITCHYARD_OK);
    /* A certificate without its key is refused when the conf is used, before any contact. */
    switchyard_client *c = (switchyard_client *)0x1;
    CHECK_FAILS(switchyard_client_connect_conf("https://127.0.0.1:1", "c-tests", NULL, NULL,
                                               conf, &c),
                SWITCHYARD_INVALID_ARGUMENT, "needs its private key");
    CHECK(c == NULL);
    switchyard_conf_free(conf);
    return 0;
}

static int a_conf_for_another_object_is_refused(void) {
    switchyard_client *client = NULL;
    CHECK_RC(switchyard_client_from_file(config_file, "c-tests", &client), SWITCHYARD_OK);
    switchyard_conf *pconf = switchyard_conf_new();
    switchyard_conf *kconf = switchyard_conf_new();
    CHECK(pconf != NULL && kconf != NULL);
    CHECK_RC(switchyard_conf_set(pconf, "switchyard.max.cut.off.hold.ms", "5000"), SWITCHYARD_OK);
    CHECK_RC(switchyard_conf_set(pconf, "linger.ms", "2"), SWITCHYARD_OK);
    CHECK_RC(switchyard_conf_set(kconf, "switchyard.auto.commit", "true"), SWITCHYARD_OK);

    switchyard_client *c = (switchyard_client *)0x1;
    CHECK_FAILS(switchyard_client_connect_conf("http://127.0.0.1:1", "c-tests", NULL, NULL, pconf,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT,
                "switchyard.max.cut.off.hold.ms is a producer setting");
    CHECK(strstr(last_error(), "switchyard_client_connect_conf") != NULL);
    CHECK(c == NULL);
    switchyard_consumer *k = (switchyard_consumer *)0x1;
    const char *topics[] = {topic_a};
    CHECK_FAILS(switchyard_consumer_new_conf(client, "g", topics, 1, pconf, &k),
                SWITCHYARD_INVALID_ARGUMENT, "is a producer setting");
    CHECK(k == NULL);
    switchyard_producer *p = (switchyard_producer *)0x1;
    CHECK_FAILS(switchyard_producer_new_conf(client, kconf, &p), SWITCHYARD_INVALID_ARGUMENT,
                "switchyard.auto.commit is a consumer setting");
    CHECK(p == NULL);
    CHECK_FAILS(switchyard_producer_new_conf(NULL, pconf, &p), SWITCHYARD_NULL_POINTER, "client");
    CHECK_FAILS(switchyard_producer_new_conf(client, pconf, NULL), SWITCHYARD_NULL_POINTER, "out");
    CHECK_FAILS(switchyard_consumer_new_conf(client, NULL, topics, 1, kconf, &k),
                SWITCHYARD_NULL_POINTER, "group");

    /* Each with its own kind of conf (or NULL: the defaults). */
    CHECK_RC(switchyard_producer_new_conf(client, pconf, &p), SWITCHYARD_OK);
    CHECK(p != NULL);
    switchyard_producer_free(p);
    CHECK_RC(switchyard_producer_new_conf(client, NULL, &p), SWITCHYARD_OK);
    switchyard_producer_free(p);
    CHECK_RC(switchyard_consumer_new_conf(client, "g", topics, 1, kconf, &k), SWITCHYARD_OK);
    CHECK(k != NULL);
    switchyard_consumer_free(k);
    CHECK_RC(switchyard_consumer_new_conf(client, "g", topics, 1, NULL, &k), SWITCHYARD_OK);
    switchyard_consumer_free(k);
    switchyard_conf_free(pconf);
    switchyard_conf_free(kconf);
    switchyard_client_free(client);
    return 0;
}

static int connect_options_tls_files_are_checked(void) {
    char junk[4096], cert[4096], key[4096];
    CHECK(write_file(junk, sizeof junk, "junk2.pem", "not a certificate\n") == 0);
    CHECK(write_file(cert, sizeof cert, "cert2.pem", CERT_PEM) == 0);
    CHECK(write_file(key, sizeof key, "key2.pem", KEY_PEM) == 0);
    switchyard_client *c = (switchyard_client *)0x1;
    switchyard_connect_options o = {0};
    o.ca_cert_path = "/nonexistent/ca.pem";
    CHECK_FAILS(switchyard_client_connect_with("https://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "options.ca_cert_path: cannot read /nonexistent/ca.pem");
    CHECK(c == NULL);
    o.ca_cert_path = junk;
    CHECK_FAILS(switchyard_client_connect_with("https://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "no PEM block of type CERTIFICATE");
    o.ca_cert_path = cert;
    o.client_cert_path = cert;
    CHECK_FAILS(switchyard_client_connect_with("https://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "client_key_path is NULL");
    o.client_key_path = cert;
    CHECK_FAILS(switchyard_client_connect_with("https://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "options.client_key_path");
    o.client_cert_path = NULL;
    o.client_key_path = key;
    CHECK_FAILS(switchyard_client_connect_with("https://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "client_cert_path is NULL");
    o.client_key_path = "";
    CHECK_FAILS(switchyard_client_connect_with("https://127.0.0.1:1", "c-tests", NULL, NULL, &o,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "empty");
    CHECK(c == NULL);
    return 0;
}

static int cache_path_and_no_cache_conflict(void) {
    switchyard_conf *conf = switchyard_conf_new();
    CHECK(conf != NULL);
    CHECK_RC(switchyard_conf_set(conf, "switchyard.cache.enable", "false"), SWITCHYARD_OK);
    char cache[4096];
    snprintf(cache, sizeof cache, "%s/conf.snapshot", tmpdir);
    switchyard_client *c = (switchyard_client *)0x1;
    CHECK_FAILS(switchyard_client_connect_conf("http://127.0.0.1:1", "c-tests", NULL, cache, conf,
                                               &c),
                SWITCHYARD_INVALID_ARGUMENT, "switchyard.cache.enable is false");
    CHECK(c == NULL);
    switchyard_conf_free(conf);
    return 0;
}

static int a_property_librdkafka_refuses_fails_the_send(void) {
    switchyard_client *client = NULL;
    CHECK_RC(switchyard_client_from_file(config_file, "c-tests", &client), SWITCHYARD_OK);
    switchyard_conf *conf = switchyard_conf_new();
    CHECK(conf != NULL);
    /* Well-formed, so accepted here; librdkafka refuses it when the Kafka client is made. */
    CHECK_RC(switchyard_conf_set(conf, "linger.msec", "5"), SWITCHYARD_OK);
    switchyard_producer *p = NULL;
    CHECK_RC(switchyard_producer_new_conf(client, conf, &p), SWITCHYARD_OK);
    switchyard_conf_free(conf);
    double t0 = now_s();
    switchyard_delivery d;
    switchyard_result rc =
        switchyard_producer_send_sync(p, topic_a, NULL, 0, (const uint8_t *)"v", 1, &d);
    double took = now_s() - t0;
    CHECK_MSG(rc == SWITCHYARD_KAFKA, "send gave %s: %s", switchyard_result_name(rc),
              last_error());
    CHECK_MSG(strstr(last_error(), "linger.msec") != NULL, "last error: %s", last_error());
    CHECK_MSG(took < 30, "the send failed only after %.1f s", took);
    switchyard_producer_free(p);
    switchyard_client_free(client);
    return 0;
}

int main(void) {
    config_file = require_env("SWITCHYARD_TEST_CONFIG_FILE");
    topic_a = require_env("SWITCHYARD_TEST_TOPIC_A");
    tmpdir = require_env("SWITCHYARD_TEST_TMPDIR");
    RUN(set_refuses_null_arguments);
    RUN(set_refuses_bad_names_and_values);
    RUN(pem_files_are_read_and_checked_when_set);
    RUN(a_conf_for_another_object_is_refused);
    RUN(connect_options_tls_files_are_checked);
    RUN(cache_path_and_no_cache_conflict);
    RUN(a_property_librdkafka_refuses_fails_the_send);
    return check_failures;
}
