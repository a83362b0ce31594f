/*
 * fuzz_dht_datagram.c - fuzz target for the DHT datagram parser and the node
 * that consumes it. Properties: a datagram that decodes re-encodes to exactly
 * the same bytes (the format has one spelling); any datagram fed to a node is
 * used or dropped and counted, never crashes, and whatever the node answers
 * decodes and stays within 3x the datagram's size unless it held our token.
 */
#include <stdlib.h>
#include <string.h>

#include "svc_dht.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static dht_t *node;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static dht_msg_t m, back;
    uint8_t out[DHT_MAX_DATAGRAM];
    dht_addr_t from = {.family = 4, .ip = {192, 0, 2, 1}, .port = 5302}, to;
    ssize_t n;

    if (node == NULL) {
        dht_config_t cfg;
        dht_config_init(&cfg);
        memset(cfg.id, 0x42, sizeof cfg.id);
        cfg.wall_offset_ms = 1764000000000LL;
        node = dht_new(&cfg, 0, NULL);
        if (node == NULL)
            abort();
    }
    if (dht_msg_decode(&m, data, size) == 0) {
        n = dht_msg_encode(&m, out, sizeof out);
        if (n != (ssize_t)size || memcmp(out, data, size) != 0)
            abort();
    }
    uint64_t before = dht_stats(node)->rx_malformed + dht_stats(node)->rx_unsolicited;
    int rc = dht_input(node, data, size, &from, 1000);
    if (rc < 0 && dht_stats(node)->rx_malformed + dht_stats(node)->rx_unsolicited == before &&
        dht_stats(node)->rx_forged == 0)
        abort(); /* a drop that nothing counted */
    while ((n = dht_output_next(node, out, sizeof out, &to)) > 0) {
        if (dht_msg_decode(&back, out, (size_t)n) != 0)
            abort();
        if (back.reply && !(m.flags & DHT_MSG_F_TOKEN) && (size_t)n > 3 * size)
            abort();
    }
    return 0;
}
