/*
 * sto_ram.c - the RAM backend of the object store, for amnesia: the same
 * operations as the file backend with every object, outboard and pin in
 * process memory and nothing on the filesystem.
 * Invariants: all state is guarded by s->lock; an object is freed when it
 * has left the index and its last reader has closed (refs), so GC never pulls
 * bytes from under a reader; stored bytes stay within the quota (pinned
 * bytes are refused with RON_ESTOREFULL, cache is evicted oldest first).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ron_err.h"
#include "ron_util.h"
#include "sto_internal.h"

typedef struct {
    uint8_t tenant[STO_TENANT_LEN];
    uint32_t count; /* > 0 */
} ram_pin_t;

struct sto__ramobj {
    uint8_t addr[STO_ADDR_LEN];
    sto__rec_t rec;
    uint8_t *data; /* rec.size bytes, in a buffer of data_cap (sto__ram_buf_grow) */
    size_t data_cap;
    uint8_t *ob;   /* sto_tree_outboard_len(rec.size) bytes */
    size_t ob_len;
    ram_pin_t *pins;
    size_t npins;
    int refs;      /* 1 for the index + 1 per open reader */
};

/*
 * Object buffers. The cost of a RAM put is the kernel's more than the copy's:
 * taking fresh pages one 4 KiB fault at a time costs more than copying and
 * hashing them. A buffer of STO__RAM_MAP_MIN or more is an anonymous mapping
 * whose pages are populated in batches just before the bytes are copied in
 * (MADV_POPULATE_WRITE over the range a write covers: one call instead of a
 * fault per page, and each page is zeroed while its copy is about to land,
 * still in cache; populating the whole object up front was measured slower),
 * and which grows by mremap (page tables move, bytes do not). Transparent
 * huge pages were measured slower and erratic here (compaction stalls).
 */
static void
ram_oom(size_t n)
{
    /* as ron_xmalloc: memory is not a peer's choice (max_object, quota) */
    fprintf(stderr, "ron: out of memory mapping %zu bytes\n", n);
    abort();
}

static uint8_t *
ram_map(size_t len)
{
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (m == MAP_FAILED)
        ram_oom(len);
    return m;
}

void
sto__ram_buf_populate(sto_put_t *p, size_t off, size_t len)
{
#ifdef MADV_POPULATE_WRITE
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p->buf + off) & ~(page - 1);
    uintptr_t b = ((uintptr_t)p->buf + off + len + page - 1) & ~(page - 1);

    if (p->cap < STO__RAM_MAP_MIN || len == 0)
        return;
    /* advisory: on failure (an old kernel) the copy faults the pages in */
    (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
#else
    (void)p, (void)off, (void)len;
#endif
}

void
sto__ram_buf_grow(sto_put_t *p, size_t need)
{
    size_t cap = p->cap != 0 ? p->cap : 65536;

    if (p->declared != STO_SIZE_UNKNOWN && p->declared >= need)
        cap = (size_t)p->declared; /* the whole object at once: no growth, no copy */
    while (cap < need)
        cap *= 2;
    if (cap < STO__RAM_MAP_MIN) {
        p->buf = ron_xrealloc(p->buf, cap);
    } else if (p->cap < STO__RAM_MAP_MIN) {
        uint8_t *m = ram_map(cap);
        if (p->len > 0)
            memcpy(m, p->buf, (size_t)p->len);
        free(p->buf);
        p->buf = m;
    } else {
        void *m = mremap(p->buf, p->cap, cap, MREMAP_MAYMOVE);
        if (m == MAP_FAILED)
            ram_oom(cap);
        p->buf = m;
    }
    p->cap = cap;
}

void
sto__ram_buf_free(uint8_t *buf, size_t cap)
{
    if (buf == NULL)
        return;
    if (cap >= STO__RAM_MAP_MIN)
        munmap(buf, cap);
    else
        free(buf);
}

static void
obj_unref(sto__ramobj_t *o)
{
    if (--o->refs > 0)
        return;
    sto__ram_buf_free(o->data, o->data_cap);
    free(o->ob);
    free(o->pins);
    free(o);
}

/* Index of addr in s->objs, or of where it would go (*found 0). */
static size_t
find(const sto_store_t *s, const uint8_t *addr, int *found)
{
    size_t lo = 0, hi = s->nobjs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(s->objs[mid]->addr, addr, STO_ADDR_LEN);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static sto__ramobj_t *
lookup(const sto_store_t *s, const uint8_t *addr)
{
    int found;
    size_t i = find(s, addr, &found);

    return found ? s->objs[i] : NULL;
}

static void
remove_at(sto_store_t *s, size_t i)
{
    sto__ramobj_t *o = s->objs[i];

    memmove(&s->objs[i], &s->objs[i + 1], (s->nobjs - i - 1) * sizeof(sto__ramobj_t *));
    s->nobjs--;
    s->ram_totals.objects--;
    s->ram_totals.stored_bytes -= o->rec.size;
    obj_unref(o);
}

void
sto__ram_close(sto_store_t *s)
{
    for (size_t i = 0; i < s->nobjs; i++)
        obj_unref(s->objs[i]);
    free(s->objs);
}

static ram_pin_t *
pin_find(sto__ramobj_t *o, const uint8_t *tenant)
{
    for (size_t i = 0; i < o->npins; i++)
        if (memcmp(o->pins[i].tenant, tenant, STO_TENANT_LEN) == 0)
            return &o->pins[i];
    return NULL;
}

enum { PIN_ADD, PIN_ENSURE, PIN_DROP };

/* Lock held. */
static int
pin_change(sto_store_t *s, sto__ramobj_t *o, const uint8_t *tenant, int mode)
{
    ram_pin_t *p = pin_find(o, tenant);

    if (mode == PIN_ENSURE && p != NULL)
        return 0;
    if (mode == PIN_DROP) {
        if (p == NULL)
            return RON_ENOTFOUND;
        o->rec.pins--;
        if (--p->count == 0)
            *p = o->pins[--o->npins];
        if (o->rec.pins == 0) {
            o->rec.state = STO_STATE_CACHE;
            o->rec.cache_since = sto__cache_stamp(s);
            s->ram_totals.pinned_bytes -= o->rec.size;
        }
        return 0;
    }
    if (o->rec.pins == UINT32_MAX)
        return RON_EINVAL;
    if (o->rec.pins == 0) {
        if (s->quota != 0 && s->ram_totals.pinned_bytes + o->rec.size > s->quota)
            return RON_ESTOREFULL;
        o->rec.state = STO_STATE_PINNED;
        o->rec.cache_since = 0;
        s->ram_totals.pinned_bytes += o->rec.size;
    }
    o->rec.pins++;
    if (p == NULL) {
        o->pins = ron_xrealloc(o->pins, (o->npins + 1) * sizeof(*o->pins));
        p = &o->pins[o->npins++];
        memcpy(p->tenant, tenant, STO_TENANT_LEN);
        p->count = 0;
    }
    p->count++;
    return 0;
}

int
sto__ram_gc(sto_store_t *s, uint64_t target, uint64_t *freed)
{
    *freed = 0;
    while (s->ram_totals.stored_bytes > target) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < s->nobjs; i++) {
            const sto__ramobj_t *o = s->objs[i];
            if (o->rec.state == STO_STATE_CACHE &&
                (best == SIZE_MAX || o->rec.cache_since < s->objs[best]->rec.cache_since))
                best = i;
        }
        if (best == SIZE_MAX)
            break; /* only pinned objects left */
        *freed += s->objs[best]->rec.size;
        sto__evicted(s, s->objs[best]->addr);
        remove_at(s, best);
    }
    return 0;
}

int
sto__ram_commit(sto_put_t *p, const uint8_t root[static STO_ADDR_LEN])
{
    sto_store_t *s = p->s;
    sto__ramobj_t *o;
    uint64_t freed;
    int found, rc;
    size_t i;

    pthread_mutex_lock(&s->lock);
    i = find(s, root, &found);
    if (found) {
        rc = p->pin ? pin_change(s, s->objs[i], p->tenant, PIN_ENSURE) : 0;
        goto out;
    }
    if (s->quota != 0) {
        if (s->ram_totals.pinned_bytes + p->len > s->quota) {
            rc = RON_ESTOREFULL;
            goto out;
        }
        sto__ram_gc(s, s->quota - p->len, &freed);
        i = find(s, root, &found);
    }
    o = ron_xcalloc(1, sizeof(*o));
    memcpy(o->addr, root, STO_ADDR_LEN);
    o->rec.size = p->len;
    o->rec.created = sto__now_us() / 1000000u;
    o->rec.cache_since = sto__cache_stamp(s);
    o->rec.state = STO_STATE_CACHE;
    o->rec.ctype_len = (uint16_t)strlen(p->ctype);
    memcpy(o->rec.ctype, p->ctype, o->rec.ctype_len + 1);
    o->data = p->buf; /* takes the put's buffers */
    o->data_cap = p->cap;
    o->ob = p->ob;
    o->ob_len = p->ob_written;
    p->buf = NULL;
    p->cap = 0;
    p->ob = NULL;
    o->refs = 1;
    if (s->nobjs == s->capobjs) {
        s->capobjs = s->capobjs != 0 ? s->capobjs * 2 : 64;
        s->objs = ron_xrealloc(s->objs, s->capobjs * sizeof(sto__ramobj_t *));
    }
    memmove(&s->objs[i + 1], &s->objs[i], (s->nobjs - i) * sizeof(sto__ramobj_t *));
    s->objs[i] = o;
    s->nobjs++;
    s->ram_totals.objects++;
    s->ram_totals.stored_bytes += o->rec.size;
    /* quota checked above: the pin cannot fail */
    rc = p->pin ? pin_change(s, o, p->tenant, PIN_ENSURE) : 0;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
sto__ram_stat(sto_store_t *s, const uint8_t *addr, sto_stat_t *st)
{
    sto__ramobj_t *o;
    int rc = RON_ENOTFOUND;

    pthread_mutex_lock(&s->lock);
    if ((o = lookup(s, addr)) != NULL) {
        sto__stat_from_rec(st, addr, &o->rec);
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
sto__ram_list(sto_store_t *s, const uint8_t *after, sto_stat_t *out, size_t cap, size_t *n)
{
    int found = 0;
    size_t i = 0;

    pthread_mutex_lock(&s->lock);
    if (after != NULL) {
        i = find(s, after, &found);
        if (found)
            i++;
    }
    for (; i < s->nobjs && *n < cap; i++)
        sto__stat_from_rec(&out[(*n)++], s->objs[i]->addr, &s->objs[i]->rec);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int
sto__ram_set_ctype(sto_store_t *s, const uint8_t *addr, const char *ctype)
{
    sto__ramobj_t *o;
    int rc = RON_ENOTFOUND;

    pthread_mutex_lock(&s->lock);
    if ((o = lookup(s, addr)) != NULL) {
        o->rec.ctype_len = (uint16_t)strlen(ctype);
        memcpy(o->rec.ctype, ctype, o->rec.ctype_len + 1);
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
sto__ram_pin(sto_store_t *s, const uint8_t *tenant, const uint8_t *addr, int delta)
{
    sto__ramobj_t *o;
    int rc = RON_ENOTFOUND;

    pthread_mutex_lock(&s->lock);
    if ((o = lookup(s, addr)) != NULL)
        rc = pin_change(s, o, tenant, delta > 0 ? PIN_ADD : PIN_DROP);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
sto__ram_pin_count(sto_store_t *s, const uint8_t *tenant, const uint8_t *addr, uint32_t *c)
{
    sto__ramobj_t *o;
    ram_pin_t *p;

    pthread_mutex_lock(&s->lock);
    if ((o = lookup(s, addr)) != NULL && (p = pin_find(o, tenant)) != NULL)
        *c = p->count;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int
sto__ram_pin_list(sto_store_t *s, const uint8_t *tenant, const uint8_t *after, uint8_t *out,
                  size_t cap, size_t *n)
{
    int found = 0;
    size_t i = 0;

    pthread_mutex_lock(&s->lock);
    if (after != NULL) {
        i = find(s, after, &found);
        if (found)
            i++;
    }
    for (; i < s->nobjs && *n < cap; i++)
        if (pin_find(s->objs[i], tenant) != NULL)
            memcpy(out + STO_ADDR_LEN * (*n)++, s->objs[i]->addr, STO_ADDR_LEN);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int
sto__ram_reader_open(sto_reader_t *r)
{
    sto_store_t *s = r->s;
    sto__ramobj_t *o;
    int rc = RON_ENOTFOUND;

    pthread_mutex_lock(&s->lock);
    if ((o = lookup(s, r->addr)) != NULL) {
        o->refs++;
        r->ro = o;
        r->size = o->rec.size;
        memcpy(r->ctype, o->rec.ctype, o->rec.ctype_len + 1);
        r->ob = o->ob;
        r->ob_len = o->ob_len;
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

const uint8_t *
sto__ram_reader_bytes(const sto_reader_t *r)
{
    return r->ro->data;
}

void
sto__ram_reader_close(sto_reader_t *r)
{
    if (r->ro == NULL)
        return;
    pthread_mutex_lock(&r->s->lock);
    obj_unref(r->ro);
    pthread_mutex_unlock(&r->s->lock);
}

int
sto__ram_corrupt(sto_store_t *s, const uint8_t *addr, uint64_t off)
{
    sto__ramobj_t *o;
    int rc = RON_ENOTFOUND;

    pthread_mutex_lock(&s->lock);
    if ((o = lookup(s, addr)) != NULL && off < o->rec.size) {
        o->data[off] ^= 0x01;
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}
