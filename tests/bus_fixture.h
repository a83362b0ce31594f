/*
 * bus_fixture.h - the fixture of the bus-service tests (storage, index,
 * registry, passport, capabilities over the bus): a loop, a ron-bus in
 * process or over Unix sockets, the service's endpoint and a client peer,
 * and requests in the services' framing (u32 JSON length, compact JSON,
 * raw bytes) whose answer is waited for with a bound. Each of those test
 * files had its own copy of this; one copy keeps them in step.
 *
 * Use: bus_fx_open() (loop, temporary directory, both endpoints), create
 * the service on fx->srv (keep it in fx->svc), bus_fx_connect(); then
 * bus_fx_call*() and the answer in fx->code, fx->json, fx->raw; at the end
 * free the service, then bus_fx_close() (which asserts that no handle is
 * left on the loop). Every wait is bounded (BUS_FX_WAIT_MS unless told).
 *
 * Header only (static functions), so a test binary needs no build change
 * to use it. Include it after <cmocka.h>'s prerequisites (setjmp, stdarg,
 * stddef), as every test file does.
 */
#ifndef RON_TESTS_BUS_FIXTURE_H
#define RON_TESTS_BUS_FIXTURE_H

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "ron_bus.h"
#include "ron_util.h"

#define BUS_FX_WAIT_MS 10000u /* bound of every wait and default request deadline, ms */
#define BUS_FX_MAX_EXTRA 4u   /* more endpoints on the fixture's transport (bus_fx_bus_new) */

typedef struct bus_fx {
    uv_loop_t loop;
    bool use_unix;
    rbus_hub_t *hub;                 /* in process: the hub; NULL over Unix sockets */
    char busdir[RBUS_MAX_DIR];       /* over Unix sockets: the sockets' directory */
    uint8_t secret[RBUS_SECRET_LEN]; /* over Unix sockets: the bus secret */
    char name[32];                   /* the service's endpoint name */
    rbus_t *srv, *cli;               /* the service's endpoint, the client's */
    rbus_t *extra[BUS_FX_MAX_EXTRA]; /* other endpoints (bus_fx_bus_new), freed at close */
    size_t n_extra;
    rbus_peer_t *peer;    /* client -> service (bus_fx_connect) */
    void *svc;            /* the service under test: the test's to create and free */
    char tmp[64];         /* the temporary directory, "" = none; removed at close */
    uint16_t app;         /* app_proto_id of bus_fx_call* requests */
    uint32_t deadline_ms; /* their deadline (BUS_FX_WAIT_MS after open) */
    bool need_json;       /* bus_fx_call* also assert that the answer had JSON */
    /* the last answer */
    bool done;
    int status;    /* 0, or the request's failure (RON_ETIMEOUT, ...) */
    uint16_t code; /* its status code */
    json_t *json;  /* the envelope (>= 400) or the JSON part (200); NULL if none */
    uint8_t *raw;  /* 200: the bytes after the JSON part */
    size_t raw_len;
} bus_fx_t;

static inline int
bus_fx__rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* Remove the tree at path (a test's temporary directory). */
static inline void
bus_fx_rm_tree(const char *path)
{
    nftw(path, bus_fx__rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Run loop until *flag or ms pass; returns *flag. */
static inline bool
bus_fx_loop_wait(uv_loop_t *loop, const bool *flag, uint64_t ms)
{
    uint64_t end = ron_now_ms() + ms;
    while (!*flag && ron_now_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    return *flag;
}

/* Run the fixture's loop until cond(fx) or BUS_FX_WAIT_MS pass; returns cond(fx). */
static inline bool
bus_fx_run_until(bus_fx_t *fx, bool (*cond)(bus_fx_t *fx))
{
    uint64_t end = ron_now_ms() + BUS_FX_WAIT_MS;
    while (!cond(fx) && ron_now_ms() < end)
        uv_run(&fx->loop, UV_RUN_ONCE);
    return cond(fx);
}

/* Turn the loop without blocking for ms (answers that follow an answer). */
static inline void
bus_fx_run_for(bus_fx_t *fx, uint64_t ms)
{
    uint64_t end = ron_now_ms() + ms;
    while (ron_now_ms() < end)
        uv_run(&fx->loop, UV_RUN_NOWAIT), usleep(1000);
}

/* An endpoint named name on the fixture's transport. */
static inline rbus_t *
bus_fx__bus(bus_fx_t *fx, const char *name)
{
    rbus_config_t c = {0};
    rbus_t *b;
    int rc = 0;

    c.name = name;
    if (fx->use_unix) {
        c.transport = RBUS_TRANSPORT_UNIX;
        c.dir = fx->busdir;
        memcpy(c.secret, fx->secret, sizeof c.secret);
    } else {
        c.transport = RBUS_TRANSPORT_INPROC;
        c.hub = fx->hub;
    }
    b = rbus_new(&fx->loop, &c, &rc);
    assert_non_null(b);
    return b;
}

/* One more endpoint named name on the fixture's transport, freed by bus_fx_close. */
static inline rbus_t *
bus_fx_bus_new(bus_fx_t *fx, const char *name)
{
    assert_true(fx->n_extra < BUS_FX_MAX_EXTRA);
    fx->extra[fx->n_extra] = bus_fx__bus(fx, name);
    return fx->extra[fx->n_extra++];
}

/*
 * Open the fixture: loop, the temporary directory from tmp_template
 * ("/tmp/ron-x-XXXXXX"; NULL: none), the transport (use_unix: a socket
 * directory and a secret; else an in-process hub), the service's endpoint
 * named name and the client's ("client"). Requests go to app.
 */
static inline void
bus_fx_open(bus_fx_t *fx, bool use_unix, const char *name, const char *tmp_template, uint16_t app)
{
    memset(fx, 0, sizeof *fx);
    fx->use_unix = use_unix;
    fx->app = app;
    fx->deadline_ms = BUS_FX_WAIT_MS;
    snprintf(fx->name, sizeof fx->name, "%s", name);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    if (tmp_template != NULL) {
        snprintf(fx->tmp, sizeof fx->tmp, "%s", tmp_template);
        assert_non_null(mkdtemp(fx->tmp));
    }
    if (use_unix) {
        assert_int_equal(rbus_dir_create(fx->busdir, sizeof fx->busdir), 0);
        assert_int_equal(rbus_secret_generate(fx->secret), 0);
    } else {
        fx->hub = rbus_hub_new(&fx->loop);
    }
    fx->srv = bus_fx__bus(fx, name);
    fx->cli = bus_fx__bus(fx, "client");
}

/* The service is on fx->srv: listen, and connect the client to it. */
static inline void
bus_fx_connect(bus_fx_t *fx)
{
    int rc = 0;
    assert_int_equal(rbus_listen(fx->srv), 0);
    fx->peer = rbus_connect(fx->cli, fx->name, &rc);
    assert_non_null(fx->peer);
}

/* Close everything bus_fx_open made (the service must be freed already); the
 * loop must close with no handle left. */
static inline void
bus_fx_close(bus_fx_t *fx)
{
    json_decref(fx->json);
    free(fx->raw);
    rbus_peer_close(fx->peer);
    rbus_free(fx->cli);
    rbus_free(fx->srv);
    for (size_t i = 0; i < fx->n_extra; i++)
        rbus_free(fx->extra[i]);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    if (fx->hub != NULL) {
        rbus_hub_free(fx->hub);
        uv_run(&fx->loop, UV_RUN_DEFAULT);
    }
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    if (fx->use_unix)
        rbus_dir_remove(fx->busdir);
    if (fx->tmp[0] != '\0')
        bus_fx_rm_tree(fx->tmp);
}

/* The JSON of a request frame (u32 length, JSON, raw bytes), or NULL. */
static inline json_t *
bus_fx_req_json(const oap_frame_t *f)
{
    uint32_t jl;
    if (f->payload_len < 4)
        return NULL;
    jl = (uint32_t)f->payload[0] << 24 | (uint32_t)f->payload[1] << 16 |
         (uint32_t)f->payload[2] << 8 | f->payload[3];
    if (jl > f->payload_len - 4)
        return NULL;
    return json_loadb((const char *)f->payload + 4, jl, 0, NULL);
}

/* Frame js then raw_len bytes of raw; returns a new buffer of *len_out bytes. */
static inline uint8_t *
bus_fx_frame(const char *js, const void *raw, size_t raw_len, size_t *len_out)
{
    size_t jl = strlen(js);
    uint8_t *buf = malloc(4 + jl + raw_len + 1);

    assert_non_null(buf);
    buf[0] = (uint8_t)(jl >> 24);
    buf[1] = (uint8_t)(jl >> 16);
    buf[2] = (uint8_t)(jl >> 8);
    buf[3] = (uint8_t)jl;
    memcpy(buf + 4, js, jl);
    if (raw_len > 0)
        memcpy(buf + 4 + jl, raw, raw_len);
    *len_out = 4 + jl + raw_len;
    return buf;
}

/* Answer req 200 with the JSON js alone (a test playing a service). */
static inline void
bus_fx_respond_json(rbus_req_t *req, const char *js)
{
    size_t n;
    uint8_t *b = bus_fx_frame(js, NULL, 0, &n);
    rbus_respond(req, 200, b, n);
    free(b);
}

/*
 * Split an answer: *json_out gets the error envelope (code >= 400) or the
 * JSON part of a 200 (NULL if none parses), *raw_out (new, NULL if none) and
 * *raw_len_out the bytes after the JSON part.
 */
static inline void
bus_fx_answer_split(const oap_frame_t *resp, json_t **json_out, uint8_t **raw_out,
                    size_t *raw_len_out)
{
    uint32_t jl;

    *json_out = NULL;
    *raw_out = NULL;
    *raw_len_out = 0;
    if (resp->code >= 400) {
        /* error envelope: JSON alone */
        *json_out = json_loadb((const char *)resp->payload, resp->payload_len, 0, NULL);
        return;
    }
    if (resp->payload_len < 4)
        return;
    jl = (uint32_t)resp->payload[0] << 24 | (uint32_t)resp->payload[1] << 16 |
         (uint32_t)resp->payload[2] << 8 | resp->payload[3];
    if (jl > resp->payload_len - 4)
        return;
    *json_out = json_loadb((const char *)resp->payload + 4, jl, 0, NULL);
    *raw_len_out = resp->payload_len - 4 - jl;
    *raw_out = malloc(*raw_len_out + 1);
    assert_non_null(*raw_out);
    memcpy(*raw_out, resp->payload + 4 + jl, *raw_len_out);
}

/* rbus_reply_cb of the fixture's requests: keeps the answer in fx. */
static inline void
bus_fx_on_reply(void *arg, int status, const oap_frame_t *resp)
{
    bus_fx_t *fx = arg;

    fx->done = true;
    fx->status = status;
    if (status < 0)
        return;
    fx->code = resp->code;
    bus_fx_answer_split(resp, &fx->json, &fx->raw, &fx->raw_len);
}

/*
 * Send payload (len bytes, already framed) to app with token (NULL: none)
 * in the cap section, wait for the answer (bounded) and return its code;
 * the answer is in fx. Asserts that the request was answered.
 */
static inline uint16_t
bus_fx_request(bus_fx_t *fx, uint16_t app, const char *token, const void *payload, size_t len)
{
    rbus_request_opts_t o = {.app_proto_id = app, .deadline_ms = fx->deadline_ms};

    json_decref(fx->json);
    free(fx->raw);
    fx->json = NULL;
    fx->raw = NULL;
    fx->raw_len = 0;
    fx->done = false;
    fx->code = 0;
    if (token != NULL) {
        o.cap = token;
        o.cap_len = strlen(token);
    }
    assert_int_equal(rbus_request_ex(fx->peer, &o, payload, len, bus_fx_on_reply, fx), 0);
    assert_true(bus_fx_loop_wait(&fx->loop, &fx->done, BUS_FX_WAIT_MS));
    assert_int_equal(fx->status, 0);
    if (fx->need_json)
        assert_non_null(fx->json);
    return fx->code;
}

/* bus_fx_call_bytes() with a va_list. */
static inline uint16_t
bus_fx_vcall(bus_fx_t *fx, const void *raw, size_t raw_len, const char *fmt, va_list ap)
{
    char *js = NULL;
    uint8_t *buf;
    size_t n;
    uint16_t code;

    assert_true(vasprintf(&js, fmt, ap) >= 0);
    buf = bus_fx_frame(js, raw, raw_len, &n);
    code = bus_fx_request(fx, fx->app, NULL, buf, n);
    free(buf);
    free(js);
    return code;
}

/* One request to fx->app: the JSON printed from fmt, then raw_len bytes of
 * raw. Returns the answer's code (answer in fx). */
static inline uint16_t bus_fx_call_bytes(bus_fx_t *fx, const void *raw, size_t raw_len,
                                         const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline uint16_t
bus_fx_call_bytes(bus_fx_t *fx, const void *raw, size_t raw_len, const char *fmt, ...)
{
    va_list ap;
    uint16_t code;

    va_start(ap, fmt);
    code = bus_fx_vcall(fx, raw, raw_len, fmt, ap);
    va_end(ap);
    return code;
}

/* One request to fx->app: the JSON printed from fmt alone. */
static inline uint16_t bus_fx_call(bus_fx_t *fx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline uint16_t
bus_fx_call(bus_fx_t *fx, const char *fmt, ...)
{
    va_list ap;
    uint16_t code;

    va_start(ap, fmt);
    code = bus_fx_vcall(fx, NULL, 0, fmt, ap);
    va_end(ap);
    return code;
}

/* The string key of JSON object o; fails the test when absent. */
static inline const char *
bus_fx_jstr(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (v == NULL)
        fail_msg("no string %s in the answer", key);
    return v != NULL ? v : ""; /* fail_msg does not return; the compiler cannot know it */
}

#endif
