/*
 * dht_view.c - the few accessors a node service needs on top of the core
 * API (svc_dht.h, last section): set the overlay address once it is known,
 * and read what the store holds so a bus answer can include records this
 * node keeps itself. Kept apart from dht.c so the core files stay as the
 * simulator exercises them.
 */
#include <string.h>

#include "dht_internal.h"

void
dht_set_overlay_addr(dht_t *d, const dht_addr_t *addr)
{
    d->cfg.overlay_addr = *addr;
}

size_t
dht_record_count(const dht_t *d)
{
    return d->store.n;
}

const name_record_t *
dht_name_held(const dht_t *d, const uint8_t key[static DHT_ID_LEN])
{
    return dht__store_get_name(d, key);
}

size_t
dht_providers_held(const dht_t *d, const uint8_t key[static DHT_ID_LEN], dht_provider_t *out,
                   size_t n)
{
    const dht_provider_t *v[DHT_MAX_PROVIDERS_PER_KEY];
    size_t got = dht__store_get_providers(d, key, v, n < DHT_MAX_PROVIDERS_PER_KEY ? n :
                                                     DHT_MAX_PROVIDERS_PER_KEY);
    for (size_t i = 0; i < got; i++)
        out[i] = *v[i];
    return got;
}
