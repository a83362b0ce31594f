/*
 * bench_passport.c - svc-passport logins per second on one thread, server
 * side: pass_challenge_issue (256 random bits, one Ed25519 signature by the
 * passport key) + pass_redeem (challenge lookup, one Ed25519 verification,
 * a policy evaluation per op over a 1,000-rule bundle whose matching rule
 * is last, a libmacaroons mint), against the floor of the same crypto done
 * bare (one Ed25519 sign, one Ed25519 verify, one auth_mint of the same
 * caveats). The client's own signature is made beforehand, outside the
 * timing. Usage: bench_passport [runs]; prints a markdown table of medians.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ron_util.h"
#include "svc_passport.h"

#define LOGINS 2000
#define MAX_RUNS 31
#define RULES 1000
#define T0 1900000000LL

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A bundle of RULES rules: RULES-1 for other keys, the holder's last. */
static pol_store_t *
policy(const char *pkhex)
{
    size_t cap = (size_t)RULES * 200 + 1024, o = 0;
    char *js = malloc(cap);
    pol_err_t err;
    pol_policy_t *p;

    o += (size_t)snprintf(js + o, cap - o, "{\"version\":1,\"rules\":[");
    for (int i = 0; i < RULES - 1; i++)
        o += (size_t)snprintf(js + o, cap - o,
                              "{\"id\":\"r%d\",\"effect\":\"allow\",\"match\":{\"tags\":[\"k%d\"],"
                              "\"ops\":[\"get\",\"put\"]}},",
                              i, i % 60);
    snprintf(js + o, cap - o,
             "{\"id\":\"holder\",\"effect\":\"allow\",\"match\":{\"tags\":[\"passport\",\"%s\"],"
             "\"ops\":[\"get\",\"put\"]}}]}",
             pkhex);
    p = pol_compile(js, strlen(js), &err);
    free(js);
    if (p == NULL) {
        fprintf(stderr, "bench_passport: policy: %s\n", err.msg);
        exit(1);
    }
    return pol_store_new(p);
}

int
main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 7;
    static pass_challenge_t ch[LOGINS];
    static pass_redeem_t rd[LOGINS];
    static pass_result_t res;
    double login[MAX_RUNS], floor_[MAX_RUNS];
    uint8_t pk[32], sk[64], spk[32], ssk[64], msg[PASS_MSG_LEN], sig[64], key[32];
    char pkhex[65], tok[AUTH_MAX_TOKEN + 1], id[AUTH_ID_MAX + 1];
    const char *cavs[3] = {"ops = get,put", "expires = 1900003600", "not-before = 1900000000"};
    kms_opts_t ko = {.amnesia = true, .create = true};
    kms_keystore_t *kms = NULL;
    pass_opts_t po = {0};
    pol_store_t *pol;
    pass_t *p = NULL;
    char err[256];

    if (runs < 1 || runs > MAX_RUNS || sodium_init() < 0)
        return 2;
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(spk, ssk);
    randombytes_buf(key, sizeof key);
    ron_hex_encode(pkhex, pk, 32);
    pol = policy(pkhex);
    if (kms_keystore_open(&ko, &kms, err, sizeof err) < 0)
        return 1;
    po.kms = kms;
    po.policy = pol;
    if (pass_new(&po, T0, &p, err, sizeof err) < 0)
        return 1;
    for (int r = 0; r < runs; r++) {
        double t;
        int64_t now = T0 + r * (PASS_CHALLENGE_TTL * 3); /* earlier challenges get swept */
        /* the client's signatures need the challenges: issue, sign, then time a
         * second round whose cost is the same (issue + redeem) */
        t = now_s();
        for (int i = 0; i < LOGINS; i++)
            if (pass_challenge_issue(p, now, &ch[i]) < 0)
                return 1;
        double t_issue = now_s() - t;
        for (int i = 0; i < LOGINS; i++) {
            memset(&rd[i], 0, sizeof rd[i]);
            memcpy(rd[i].nonce, ch[i].nonce, 32);
            memcpy(rd[i].pk, pk, 32);
            rd[i].ops = 1u << AUTH_OP_GET | 1u << AUTH_OP_PUT;
            pass_redeem_message(ch[i].node_id, &rd[i], msg);
            crypto_sign_detached(rd[i].sig, NULL, msg, sizeof msg, sk);
        }
        t = now_s();
        for (int i = 0; i < LOGINS; i++)
            if (pass_redeem(p, &rd[i], now, &res) < 0) {
                fprintf(stderr, "bench_passport: redeem: %s\n", pass_reason_name(res.reason));
                return 1;
            }
        login[r] = LOGINS / (t_issue + now_s() - t);

        t = now_s();
        for (int i = 0; i < LOGINS; i++) {
            pass_redeem_message(ch[i].node_id, &rd[i], msg);
            crypto_sign_detached(sig, NULL, msg, sizeof msg, ssk);
            if (crypto_sign_verify_detached(rd[i].sig, msg, sizeof msg, pk) != 0 ||
                auth_id_new(id, "c1", 0) < 0 || auth_mint(key, 32, id, cavs, 3, tok, sizeof tok) < 0)
                return 1;
        }
        floor_[r] = LOGINS / (now_s() - t);
    }
    printf("| path | logins/s (median of %d) | ratio |\n|---|---:|---:|\n", runs);
    double l = median(login, runs), f = median(floor_, runs);
    printf("| passport: challenge + redeem (2 ops, 1,000-rule policy, match last) | %.0f | %.2f |\n",
           l, l / f);
    printf("| floor: Ed25519 sign + Ed25519 verify + auth_mint, bare | %.0f | 1.00 |\n", f);
    pass_free(p);
    pol_store_free(pol);
    kms_keystore_free(kms);
    return 0;
}
