/*
 * TLS from C: a client connects to config services over https with the CA given in a conf or
 * in switchyard_connect_options, and with a client certificate to one that requires it (mTLS);
 * a missing or untrusted client certificate, an untrusted CA, the system's roots (which do not
 * know the test CA) and an http:// endpoint of a TLS service each fail with SWITCHYARD_NO_CONFIG
 * and a message naming the cause within the initial timeout, never a hang or a crash (SIGPIPE
 * from a connection the service closed is blocked on the library's threads). Then records are produced
 * and consumed through the C API over the secured Kafka listeners the service hands out: SASL_SSL
 * with SCRAM-SHA-512 and SSL with a client certificate.
 *
 * Environment (scripts/test-bindings.sh sets it when Kafka runs with `kafka.sh start --secure`,
 * as scripts/test.sh starts it): SWITCHYARD_TEST_TLS_ENDPOINT (https, no client certificate
 * needed), SWITCHYARD_TEST_MTLS_ENDPOINT (https, client certificate required), both serving app
 * "c-secure" with SWITCHYARD_TEST_SECURE_TOKEN, SWITCHYARD_TEST_TOPIC_SCRAM (on the SASL_SSL
 * cluster "secure"), SWITCHYARD_TEST_TOPIC_CERT (on the mTLS cluster "certs"),
 * SWITCHYARD_KAFKA_TLS_DIR (ca.pem, client.pem/.key, other-ca.pem), SWITCHYARD_TEST_TMPDIR,
 * SWITCHYARD_TEST_RUN. Missing variables fail the program.
 */
#include "check.h"

#define APP "c-secure"
#define RECORDS 20
/* Initial timeout of the connects that must fail; each must fail within it plus this slack. */
#define FAIL_TIMEOUT_MS 2000
#define FAIL_SLACK_S 5.0

static const char *tls_endpoint, *mtls_endpoint, *token, *topic_scram, *topic_cert, *tls_dir,
    *tmpdir, *run;

static const char *secured_env(const char *name) {
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        fprintf(stderr,
                "%s is not set: run ./scripts/test.sh (it starts Kafka with --secure) or "
                "scripts/test-bindings.sh with the secured listeners' variables\n",
                name);
        exit(2);
    }
    return v;
}

static void tls_file(char *out, size_t len, const char *name) {
    snprintf(out, len, "%s/%s", tls_dir, name);
}

/* A conf with the test CA, `initial_ms` and no cache; with `client` the client certificate. */
static switchyard_conf *tls_conf(const char *ca, int client, const char *initial_ms) {
    char path[4096];
    switchyard_conf *conf = switchyard_conf_new();
    if (conf == NULL) return NULL;
    int bad = 0;
    if (ca != NULL) {
        tls_file(path, sizeof path, ca);
        bad |= switchyard_conf_set(conf, "switchyard.ca.location", path) != SWITCHYARD_OK;
    }
    if (client) {
        tls_file(path, sizeof path, "client.pem");
        bad |= switchyard_conf_set(conf, "switchyard.certificate.location", path) != SWITCHYARD_OK;
        tls_file(path, sizeof path, "client.key");
        bad |= switchyard_conf_set(conf, "switchyard.key.location", path) != SWITCHYARD_OK;
    }
    bad |= switchyard_conf_set(conf, "switchyard.initial.timeout.ms", initial_ms) != SWITCHYARD_OK;
    bad |= switchyard_conf_set(conf, "switchyard.cache.enable", "false") != SWITCHYARD_OK;
    if (bad) {
        fprintf(stderr, "tls_conf: %s\n", last_error());
        switchyard_conf_free(conf);
        return NULL;
    }
    return conf;
}

static int connects_with_the_ca_from_a_conf(void) {
    switchyard_conf *conf = tls_conf("ca.pem", 0, "20000");
    CHECK(conf != NULL);
    switchyard_client *c = NULL;
    CHECK_RC(switchyard_client_connect_conf(tls_endpoint, APP, token, NULL, conf, &c),
             SWITCHYARD_OK);
    switchyard_conf_free(conf);
    CHECK(switchyard_client_config_version(c) >= 1);
    switchyard_client_free(c);
    return 0;
}

static int connects_with_the_ca_as_pem_text(void) {
    char path[4096], pem[16384];
    tls_file(path, sizeof path, "ca.pem");
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    size_t n = fread(pem, 1, sizeof pem - 1, f);
    fclose(f);
    CHECK(n > 0 && n < sizeof pem - 1);
    pem[n] = 0;
    switchyard_conf *conf = switchyard_conf_new();
    CHECK(conf != NULL);
    CHECK_RC(switchyard_conf_set(conf, "switchyard.ca.pem", pem), SWITCHYARD_OK);
    CHECK_RC(switchyard_conf_set(conf, "switchyard.cache.enable", "false"), SWITCHYARD_OK);
    CHECK_RC(switchyard_conf_set(conf, "switchyard.client.id", "c-tls-test-client"), SWITCHYARD_OK);
    switchyard_client *c = NULL;
    CHECK_RC(switchyard_client_connect_conf(tls_endpoint, APP, token, NULL, conf, &c),
             SWITCHYARD_OK);
    switchyard_conf_free(conf);
    CHECK(switchyard_client_config_version(c) >= 1);
    switchyard_client_free(c);
    return 0;
}

static int connects_with_tls_connect_options(void) {
    char ca[4096], cert[4096], key[4096], cache[4096];
    tls_file(ca, sizeof ca, "ca.pem");
    tls_file(cert, sizeof cert, "client.pem");
    tls_file(key, sizeof key, "client.key");
    switchyard_connect_options o = {0};
    o.initial_timeout_ms = 20000;
    o.ca_cert_path = ca;
    o.client_cert_path = cert;
    o.client_key_path = key;
    snprintf(cache, sizeof cache, "%s/tls-options-%s.snapshot", tmpdir, run);
    switchyard_client *c = NULL;
    CHECK_RC(switchyard_client_connect_with(mtls_endpoint, APP, token, cache, &o, &c),
             SWITCHYARD_OK);
    CHECK(switchyard_client_config_version(c) >= 1);
    switchyard_client_free(c);
    return 0;
}

static int mtls_service_accepts_a_client_certificate_from_a_conf(void) {
    switchyard_conf *conf = tls_conf("ca.pem", 1, "20000");
    CHECK(conf != NULL);
    switchyard_client *c = NULL;
    CHECK_RC(switchyard_client_connect_conf(mtls_endpoint, APP, token, NULL, conf, &c),
             SWITCHYARD_OK);
    switchyard_conf_free(conf);
    CHECK(switchyard_client_config_version(c) >= 1);
    switchyard_client_free(c);
    return 0;
}

/* The last-error message of the last connect that fails_in_time checked. */
static char failure[2048];

/* Connecting to `endpoint` with `conf` fails with NO_CONFIG within the initial timeout (plus
 * slack), the message containing `cause` (NULL: any message). */
static int fails_in_time(const char *endpoint, switchyard_conf *conf, const char *cause) {
    CHECK(conf != NULL);
    switchyard_client *c = (switchyard_client *)0x1;
    double t0 = now_s();
    switchyard_result rc = switchyard_client_connect_conf(endpoint, APP, token, NULL, conf, &c);
    double took = now_s() - t0;
    switchyard_conf_free(conf);
    snprintf(failure, sizeof failure, "%s", last_error());
    fprintf(stderr, "  %s: %s after %.2f s: %s\n", endpoint, switchyard_result_name(rc), took,
            failure);
    CHECK_RC(rc, SWITCHYARD_NO_CONFIG);
    CHECK(c == NULL);
    CHECK_MSG(cause == NULL || strstr(failure, cause) != NULL, "last error %s lacks \"%s\"",
              failure, cause);
    CHECK_MSG(took < FAIL_TIMEOUT_MS / 1000.0 + FAIL_SLACK_S, "failed only after %.1f s", took);
    return 0;
}

/* A refused client certificate is named as the cause, or the failure is one the SDK (at
 * 4112e0e) gives no hint for: the TLS alert lost and the write seeing a broken pipe. Any other
 * message is a failure; refused_client_certificates_are_named_as_the_cause wants the hint. */
static int names_the_client_certificate_or_is_known_hintless(void) {
    CHECK_MSG(strstr(failure, "client certificate") != NULL ||
                  strstr(failure, "broken pipe") != NULL,
              "last error %s names neither the client certificate nor a broken pipe", failure);
    return 0;
}

static char no_cert_failure[2048], untrusted_cert_failure[2048];

static int mtls_service_refuses_a_client_without_certificate(void) {
    int r = fails_in_time(mtls_endpoint, tls_conf("ca.pem", 0, "2000"), NULL);
    snprintf(no_cert_failure, sizeof no_cert_failure, "%s", failure);
    return r != 0 ? r : names_the_client_certificate_or_is_known_hintless();
}

static int mtls_service_refuses_an_untrusted_client_certificate(void) {
    char path[4096];
    switchyard_conf *conf = tls_conf("ca.pem", 0, "2000");
    CHECK(conf != NULL);
    tls_file(path, sizeof path, "untrusted-client.pem");
    CHECK_RC(switchyard_conf_set(conf, "switchyard.certificate.location", path), SWITCHYARD_OK);
    tls_file(path, sizeof path, "untrusted-client.key");
    CHECK_RC(switchyard_conf_set(conf, "switchyard.key.location", path), SWITCHYARD_OK);
    int r = fails_in_time(mtls_endpoint, conf, NULL);
    snprintf(untrusted_cert_failure, sizeof untrusted_cert_failure, "%s", failure);
    return r != 0 ? r : names_the_client_certificate_or_is_known_hintless();
}

/* The two above, strictly: the message names the client certificate as the cause. */
static int refused_client_certificates_are_named_as_the_cause(void) {
    CHECK_MSG(strstr(no_cert_failure, "client certificate") != NULL, "no client certificate: %s",
              no_cert_failure);
    CHECK_MSG(strstr(untrusted_cert_failure, "client certificate") != NULL,
              "untrusted client certificate: %s", untrusted_cert_failure);
    return 0;
}

static int an_untrusted_ca_is_refused(void) {
    return fails_in_time(tls_endpoint, tls_conf("other-ca.pem", 0, "2000"), "certificate");
}

static int without_a_ca_the_system_roots_are_used(void) {
    /* The system's roots do not know the test CA. */
    return fails_in_time(tls_endpoint, tls_conf(NULL, 0, "2000"), "certificate");
}

static int an_http_endpoint_of_a_tls_service_fails_in_time(void) {
    char endpoint[1024];
    const char *hostport = strstr(tls_endpoint, "://");
    CHECK(hostport != NULL);
    snprintf(endpoint, sizeof endpoint, "http%s", hostport);
    return fails_in_time(endpoint, tls_conf("ca.pem", 0, "2000"), "https://");
}

/* Sends RECORDS records to `topic` and checks they went to `cluster`, then reads them back
 * with a fresh consumer group. */
static int round_trip(switchyard_client *client, const char *topic, const char *cluster) {
    switchyard_conf *pconf = switchyard_conf_new();
    CHECK(pconf != NULL);
    CHECK_RC(switchyard_conf_set(pconf, "linger.ms", "2"), SWITCHYARD_OK);
    CHECK_RC(switchyard_conf_set(pconf, "switchyard.max.in.flight", "1000"), SWITCHYARD_OK);
    switchyard_producer *p = NULL;
    CHECK_RC(switchyard_producer_new_conf(client, pconf, &p), SWITCHYARD_OK);
    switchyard_conf_free(pconf);
    char payload[64];
    for (int i = 0; i < RECORDS; i++) {
        int n = snprintf(payload, sizeof payload, "%s-%d", run, i);
        switchyard_delivery d;
        CHECK_RC(switchyard_producer_send_sync(p, topic, (const uint8_t *)"k", 1,
                                               (const uint8_t *)payload, (size_t)n, &d),
                 SWITCHYARD_OK);
        CHECK_MSG(strcmp(d.cluster, cluster) == 0, "delivered to %s, want %s", d.cluster,
                  cluster);
        CHECK(d.offset >= 0);
    }
    switchyard_producer_free(p);

    switchyard_conf *kconf = switchyard_conf_new();
    CHECK(kconf != NULL);
    CHECK_RC(switchyard_conf_set(kconf, "switchyard.auto.commit", "false"), SWITCHYARD_OK);
    CHECK_RC(switchyard_conf_set(kconf, "fetch.wait.max.ms", "50"), SWITCHYARD_OK);
    char group[256];
    snprintf(group, sizeof group, "%s-%s-group", run, cluster);
    const char *topics[] = {topic};
    switchyard_consumer *k = NULL;
    CHECK_RC(switchyard_consumer_new_conf(client, group, topics, 1, kconf, &k), SWITCHYARD_OK);
    switchyard_conf_free(kconf);
    int seen[RECORDS] = {0}, got = 0;
    double deadline = now_s() + 90;
    while (got < RECORDS && now_s() < deadline) {
        switchyard_message *m = NULL;
        switchyard_result rc = switchyard_consumer_poll(k, 1000, &m);
        if (rc == SWITCHYARD_TIMEOUT) continue;
        CHECK_RC(rc, SWITCHYARD_OK);
        CHECK(strcmp(switchyard_message_cluster(m), cluster) == 0);
        size_t len = 0;
        const uint8_t *v = switchyard_message_payload(m, &len);
        /* Ours is exactly "<run>-<i>". */
        int i = -1;
        for (int j = 0; j < RECORDS && i < 0; j++) {
            int n = snprintf(payload, sizeof payload, "%s-%d", run, j);
            if (v != NULL && len == (size_t)n && memcmp(v, payload, len) == 0) i = j;
        }
        /* Records of an earlier run on the same topics (a rerun by hand) are skipped. */
        if (i >= 0 && i < RECORDS && !seen[i]) {
            seen[i] = 1;
            got++;
        }
        CHECK_RC(switchyard_consumer_commit(k, m), SWITCHYARD_OK);
        switchyard_message_free(m);
    }
    switchyard_consumer_free(k);
    CHECK_MSG(got == RECORDS, "read %d of %d records from %s within 90 s", got, RECORDS, cluster);
    return 0;
}

static int produces_and_consumes_over_sasl_ssl_and_mtls(void) {
    switchyard_conf *conf = tls_conf("ca.pem", 1, "20000");
    CHECK(conf != NULL);
    CHECK_RC(switchyard_conf_set(conf, "socket.keepalive.enable", "true"), SWITCHYARD_OK);
    switchyard_client *client = NULL;
    CHECK_RC(switchyard_client_connect_conf(mtls_endpoint, APP, token, NULL, conf, &client),
             SWITCHYARD_OK);
    switchyard_conf_free(conf);
    int r = round_trip(client, topic_scram, "secure");
    if (r == 0) r = round_trip(client, topic_cert, "certs");
    switchyard_client_free(client);
    return r;
}

int main(void) {
    tls_endpoint = secured_env("SWITCHYARD_TEST_TLS_ENDPOINT");
    mtls_endpoint = secured_env("SWITCHYARD_TEST_MTLS_ENDPOINT");
    token = secured_env("SWITCHYARD_TEST_SECURE_TOKEN");
    topic_scram = secured_env("SWITCHYARD_TEST_TOPIC_SCRAM");
    topic_cert = secured_env("SWITCHYARD_TEST_TOPIC_CERT");
    tls_dir = secured_env("SWITCHYARD_KAFKA_TLS_DIR");
    tmpdir = require_env("SWITCHYARD_TEST_TMPDIR");
    run = require_env("SWITCHYARD_TEST_RUN");
    RUN(connects_with_the_ca_from_a_conf);
    RUN(connects_with_the_ca_as_pem_text);
    RUN(connects_with_tls_connect_options);
    RUN(mtls_service_accepts_a_client_certificate_from_a_conf);
    RUN(mtls_service_refuses_a_client_without_certificate);
    RUN(mtls_service_refuses_an_untrusted_client_certificate);
    RUN_TODO(refused_client_certificates_are_named_as_the_cause,
             "SDK: a refused client certificate that the watch sees as a broken pipe on https "
             "gets no hint (switchyard_proto::client::transport_hint)");
    RUN(an_untrusted_ca_is_refused);
    RUN(without_a_ca_the_system_roots_are_used);
    RUN(an_http_endpoint_of_a_tls_service_fails_in_time);
    RUN(produces_and_consumes_over_sasl_ssl_and_mtls);
    return check_failures;
}
