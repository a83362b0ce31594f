/*
 * tx_limits.c - the hardening layer's accounting, without I/O: the
 * configuration with its defaults, the connection and in-flight counters,
 * the per-source token buckets and the reject counters of tx_stats_t.
 * Invariants: conns_active <= max_conns and inflight <= max_inflight at all
 * times; the bucket table never grows (rate_sources slots, a power of two,
 * probed in a window of TX_BUCKET_WINDOW; a full window evicts its least
 * recently used slot and counts it).
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "ron_err.h"
#include "ron_util.h"
#include "tx_internal.h"

#define TX_BUCKET_WINDOW 8 /* slots probed per source */

static const char *const tx_reject_names[TX_REJECT__COUNT] = {
    [TX_REJECT_MAX_CONNS] = "max_conns",
    [TX_REJECT_INFLIGHT] = "inflight",
    [TX_REJECT_RATE] = "rate",
    [TX_REJECT_HEADER_TIMEOUT] = "header_timeout",
    [TX_REJECT_BODY_TIMEOUT] = "body_timeout",
    [TX_REJECT_IDLE_TIMEOUT] = "idle_timeout",
    [TX_REJECT_WRITE_TIMEOUT] = "write_timeout",
    [TX_REJECT_BODY_TOO_LARGE] = "body_too_large",
    [TX_REJECT_HEADERS_TOO_LARGE] = "headers_too_large",
    [TX_REJECT_DECODE_BOMB] = "compression_bomb",
    [TX_REJECT_BAD_ENCODING] = "bad_encoding",
    [TX_REJECT_MALFORMED] = "malformed",
    [TX_REJECT_H2_REFUSED] = "h2_refused_stream",
    [TX_REJECT_H2_FLOOD] = "h2_flood",
    [TX_REJECT_H2_PROTOCOL] = "h2_protocol",
};

static const char *const tx_tls_fail_names[TX_TLS_FAIL__COUNT] = {
    [TX_TLS_FAIL_TIMEOUT] = "timeout",
    [TX_TLS_FAIL_VERSION] = "version",
    [TX_TLS_FAIL_CIPHER] = "cipher",
    [TX_TLS_FAIL_PLAINTEXT] = "plaintext",
    [TX_TLS_FAIL_EOF] = "eof",
    [TX_TLS_FAIL_OTHER] = "other",
};

const char *
tx_tls_fail_name(tx_tls_fail_t f)
{
    return (unsigned)f < TX_TLS_FAIL__COUNT ? tx_tls_fail_names[f] : "unknown";
}

const char *
tx_reject_name(tx_reject_t r)
{
    return (unsigned)r < TX_REJECT__COUNT ? tx_reject_names[r] : "unknown";
}

void
tx_config_default(tx_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_conns = TX_DEFAULT_MAX_CONNS;
    cfg->max_inflight = TX_DEFAULT_MAX_INFLIGHT;
    cfg->rate_rps = TX_DEFAULT_RATE_RPS;
    cfg->rate_burst = TX_DEFAULT_RATE_BURST;
    cfg->rate_sources = TX_DEFAULT_RATE_SOURCES;
    cfg->header_timeout_ms = TX_DEFAULT_HEADER_TIMEOUT_MS;
    cfg->body_timeout_ms = TX_DEFAULT_BODY_TIMEOUT_MS;
    cfg->idle_timeout_ms = TX_DEFAULT_IDLE_TIMEOUT_MS;
    cfg->write_timeout_ms = TX_DEFAULT_WRITE_TIMEOUT_MS;
    cfg->max_body = TX_DEFAULT_MAX_BODY;
    cfg->max_header_bytes = TX_DEFAULT_MAX_HEADER_BYTES;
    cfg->max_headers = TX_DEFAULT_MAX_HEADERS;
    cfg->decode_ratio = TX_DEFAULT_DECODE_RATIO;
    cfg->max_decoded = TX_DEFAULT_MAX_DECODED;
    cfg->retry_after_s = TX_DEFAULT_RETRY_AFTER_S;
    cfg->tls_handshake_ms = TX_DEFAULT_TLS_HANDSHAKE_MS;
    cfg->h2_max_streams = TX_DEFAULT_H2_MAX_STREAMS;
    cfg->h2_flood_max = TX_DEFAULT_H2_FLOOD_MAX;
    cfg->h2_flood_window_ms = TX_DEFAULT_H2_FLOOD_WINDOW_MS;
    cfg->stream_idle_ms = TX_DEFAULT_STREAM_IDLE_MS;
}

#define TX_FILL(f) out->f = in->f != 0 ? in->f : d.f
void
tx__config_fill(tx_config_t *out, const tx_config_t *in)
{
    tx_config_t d;

    tx_config_default(&d);
    if (in == NULL) {
        *out = d;
        return;
    }
    TX_FILL(max_conns);
    TX_FILL(max_inflight);
    TX_FILL(rate_rps);
    TX_FILL(rate_sources);
    TX_FILL(header_timeout_ms);
    TX_FILL(body_timeout_ms);
    TX_FILL(idle_timeout_ms);
    TX_FILL(write_timeout_ms);
    TX_FILL(max_body);
    TX_FILL(max_header_bytes);
    TX_FILL(max_headers);
    TX_FILL(decode_ratio);
    TX_FILL(max_decoded);
    TX_FILL(retry_after_s);
    TX_FILL(tls_handshake_ms);
    TX_FILL(h2_max_streams);
    TX_FILL(h2_flood_max);
    TX_FILL(h2_flood_window_ms);
    TX_FILL(stream_idle_ms);
    out->h2_disabled = in->h2_disabled;
    out->rate_burst = in->rate_burst != 0 ? in->rate_burst : out->rate_rps;
    out->rate_disabled = in->rate_disabled;
}
#undef TX_FILL

void
tx__limits_init(tx_limits_t *l, const tx_config_t *cfg)
{
    memset(l, 0, sizeof *l);
    tx__config_fill(&l->cfg, cfg);
    l->nbuckets = TX_BUCKET_WINDOW;
    while (l->nbuckets < l->cfg.rate_sources)
        l->nbuckets *= 2;
    l->buckets = ron_xcalloc(l->nbuckets, sizeof *l->buckets);
    if (ron_random_bytes(&l->seed, sizeof l->seed) < 0)
        l->seed = ron_now_ns();
}

void
tx__limits_free(tx_limits_t *l)
{
    free(l->buckets);
    l->buckets = NULL;
}

int
tx__limits_conn_admit(tx_limits_t *l)
{
    if (l->stats.conns_active >= l->cfg.max_conns) {
        l->stats.rejects[TX_REJECT_MAX_CONNS]++;
        return RON_EBUSY;
    }
    l->stats.conns_active++;
    l->stats.conns_accepted++;
    return 0;
}

void
tx__limits_conn_release(tx_limits_t *l)
{
    l->stats.conns_active--;
    l->stats.conns_closed++;
}

int
tx__limits_inflight_admit(tx_limits_t *l)
{
    if (l->stats.inflight >= l->cfg.max_inflight) {
        l->stats.rejects[TX_REJECT_INFLIGHT]++;
        return RON_EBUSY;
    }
    l->stats.inflight++;
    l->stats.requests++;
    return 0;
}

void
tx__limits_inflight_release(tx_limits_t *l)
{
    l->stats.inflight--;
}

void
tx__limits_count(tx_limits_t *l, tx_reject_t r)
{
    l->stats.rejects[r]++;
}

/* IPv4 as v4-mapped; IPv6 by its /64, since one host commonly owns a /64. */
static void
tx_source_key(const struct sockaddr_storage *ss, uint8_t key[static 16])
{
    memset(key, 0, 16);
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &in->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(&in6->sin6_addr, mapped, 12) == 0)
            memcpy(key, &in6->sin6_addr, 16);
        else
            memcpy(key, &in6->sin6_addr, 8);
    }
}

static uint64_t
tx_key_hash(const uint8_t key[static 16], uint64_t seed)
{
    uint64_t a, b, h;

    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    h = seed ^ (a * 0x9e3779b97f4a7c15ull);
    h ^= b + 0x632be59bd9b4e019ull + (h << 6) + (h >> 2);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static void
tx_bucket_refill(const tx_limits_t *l, tx_bucket_t *b, uint64_t now_ms)
{
    uint64_t cap = (uint64_t)l->cfg.rate_burst * 1000;

    if (now_ms > b->last_ms) {
        uint64_t add = (now_ms - b->last_ms) * l->cfg.rate_rps; /* milli-tokens */
        b->tokens = b->tokens + add > cap ? cap : b->tokens + add;
        b->last_ms = now_ms;
    }
}

static tx_bucket_t *
tx_bucket_find(tx_limits_t *l, const uint8_t key[static 16], uint64_t now_ms)
{
    size_t mask = l->nbuckets - 1;
    size_t start = (size_t)tx_key_hash(key, l->seed) & mask;
    tx_bucket_t *empty = NULL, *full = NULL, *oldest = NULL;
    uint64_t cap = (uint64_t)l->cfg.rate_burst * 1000;

    for (size_t i = 0; i < TX_BUCKET_WINDOW; i++) {
        tx_bucket_t *b = &l->buckets[(start + i) & mask];
        if (!b->used) {
            if (empty == NULL)
                empty = b;
            continue;
        }
        if (memcmp(b->key, key, 16) == 0)
            return b;
        tx_bucket_refill(l, b, now_ms);
        if (b->tokens >= cap && full == NULL)
            full = b; /* refilled: forgetting it changes nothing */
        if (oldest == NULL || b->last_ms < oldest->last_ms)
            oldest = b;
    }
    if (empty != NULL) {
        l->stats.rate_sources++;
    } else if (full != NULL) {
        empty = full;
    } else {
        empty = oldest;
        l->stats.rate_evictions++;
    }
    memcpy(empty->key, key, 16);
    empty->used = true;
    empty->last_ms = now_ms;
    empty->tokens = cap;
    return empty;
}

int
tx__limits_rate_take(tx_limits_t *l, const struct sockaddr_storage *peer, uint64_t now_ms,
                     uint32_t *retry_s)
{
    uint8_t key[16];
    tx_bucket_t *b;

    if (l->cfg.rate_disabled)
        return 0;
    tx_source_key(peer, key);
    b = tx_bucket_find(l, key, now_ms);
    tx_bucket_refill(l, b, now_ms);
    if (b->tokens >= 1000) {
        b->tokens -= 1000;
        return 0;
    }
    /* seconds until one whole token, rounded up, at least 1 */
    *retry_s = (uint32_t)((1000 - b->tokens + (uint64_t)l->cfg.rate_rps * 1000 - 1) /
                          ((uint64_t)l->cfg.rate_rps * 1000));
    if (*retry_s == 0)
        *retry_s = 1;
    l->stats.rejects[TX_REJECT_RATE]++;
    return RON_EFLOOD;
}
