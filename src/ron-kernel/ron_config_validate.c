/*
 * ron_config_validate.c - the checks a whole snapshot must pass after all
 * sources are applied: numeric addresses, seeds, service names, and the rules
 * that tie keys together (backoff_max >= backoff_initial, both or neither of
 * https_cert/https_key, a power-of-two bus capacity).
 * Invariant: a snapshot the store hands out has passed ron_config_validate.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>

#include "ron_config_internal.h"

int
ron_addr_split(const char *addr, char *host_out, size_t host_cap, int *port_out)
{
    const char *colon, *hs, *he;
    uint64_t port;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (rb == NULL || rb[1] != ':')
            return RON_EINVAL;
        hs = addr + 1, he = rb, colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL)
            return RON_EINVAL;
        hs = addr, he = colon;
    }
    if (he == hs || (size_t)(he - hs) >= host_cap)
        return RON_EINVAL;
    if (ron_parse_u64(colon + 1, strlen(colon + 1), &port) < 0 || port > 65535)
        return RON_EINVAL;
    memcpy(host_out, hs, (size_t)(he - hs));
    host_out[he - hs] = '\0';
    *port_out = (int)port;
    return 0;
}

/* An address key must be a numeric IPv4/IPv6 literal with a port. */
static int
addr_check(const char *path, const char *addr, char *err, size_t cap)
{
    char host[RON_CONFIG_ADDR_MAX];
    unsigned char bin[16];
    int port;
    if (ron_addr_split(addr, host, sizeof host, &port) < 0 ||
        (inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1)) {
        cfg__errf(err, cap, "key '%s': '%s' is not an address (IPv4:port or [IPv6]:port)", path, addr);
        return RON_ECONFIG;
    }
    return 0;
}

/* A seed is [ID@]HOST:PORT; HOST may be a name. */
static int
seed_check(const char *seed, char *err, size_t cap)
{
    const char *at = strchr(seed, '@');
    const char *hp = at != NULL ? at + 1 : seed;
    char host[RON_CONFIG_ADDR_MAX];
    int port;
    if (at != NULL) {
        for (const char *p = seed; p < at; p++)
            if (!isalnum((unsigned char)*p) && *p != ':')
                goto bad;
        if (at == seed)
            goto bad;
    }
    if (ron_addr_split(hp, host, sizeof host, &port) < 0 || port == 0)
        goto bad;
    return 0;
bad:
    cfg__errf(err, cap, "key 'seeds': '%s' is not [ID@]HOST:PORT", seed);
    return RON_ECONFIG;
}

static bool
name_ok(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-'))
            return false;
    return true;
}

int
ron_config_validate(const ron_config_t *cfg, char *err, size_t cap)
{
    for (size_t i = 0; i < cfg__n_keys; i++) {
        const cfg_key_t *k = &cfg__keys[i];
        const char *s = (const char *)cfg + k->off;
        if (k->kind == CFG_K_ADDR) {
            if (s[0] == '\0' && k->opt)
                continue;
            if (addr_check(k->info.path, s, err, cap) < 0)
                return RON_ECONFIG;
        } else if (k->kind == CFG_K_U64) {
            uint64_t v = *(const uint64_t *)(const void *)s;
            if (v < k->min || v > k->max) {
                cfg__errf(err, cap, "key '%s': out of range", k->info.path);
                return RON_ECONFIG;
            }
        }
    }
    if ((cfg->bus_capacity & (cfg->bus_capacity - 1)) != 0) {
        cfg__errf(err, cap, "key 'bus.capacity': %llu is not a power of two",
             (unsigned long long)cfg->bus_capacity);
        return RON_ECONFIG;
    }
    if (cfg->data_dir[0] == '\0') {
        cfg__errf(err, cap, "key 'data_dir': empty");
        return RON_ECONFIG;
    }
    for (size_t i = 0; i < cfg->n_seeds; i++)
        if (seed_check(cfg->seeds[i], err, cap) < 0)
            return RON_ECONFIG;
    for (size_t i = 0; i < cfg->n_services; i++) {
        if (!name_ok(cfg->services[i])) {
            cfg__errf(err, cap, "key 'services': '%s' is not a service name ([a-z0-9-]+)",
                 cfg->services[i]);
            return RON_ECONFIG;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->services[i], cfg->services[j]) == 0) {
                cfg__errf(err, cap, "key 'services': '%s' listed twice", cfg->services[i]);
                return RON_ECONFIG;
            }
    }
    if (cfg->supervisor.backoff_max_ms < cfg->supervisor.backoff_initial_ms) {
        cfg__errf(err, cap, "key 'supervisor.backoff_max_ms': below supervisor.backoff_initial_ms");
        return RON_ECONFIG;
    }
    if (cfg->supervisor.unhealthy_after_ms <= cfg->supervisor.heartbeat_ms) {
        cfg__errf(err, cap, "key 'supervisor.unhealthy_after_ms': must exceed supervisor.heartbeat_ms");
        return RON_ECONFIG;
    }
    if ((cfg->https_cert[0] == '\0') != (cfg->https_key[0] == '\0')) {
        cfg__errf(err, cap, "keys 'https_cert' and 'https_key': give both or neither");
        return RON_ECONFIG;
    }
    return 0;
}

bool
ron_config_amnesia(const ron_config_t *cfg)
{
    return cfg->amnesia_set ? cfg->amnesia : cfg->profile == RON_PROFILE_MICRO;
}
