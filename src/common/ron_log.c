/*
 * ron_log.c - JSON-line logger.
 */
#include "ron_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char log_svc[32] = "ron";
static int log_fd = 2;
static int log_level = -1;

void
ron_log_set_service(const char *svc)
{
    snprintf(log_svc, sizeof log_svc, "%s", svc);
}

void
ron_log_set_level(ron_log_level_t level)
{
    log_level = (int)level;
}

void
ron_log_set_fd(int fd)
{
    log_fd = fd;
}

static int
level_from_env(void)
{
    const char *e = getenv("RON_LOG_LEVEL");
    if (e == NULL)
        return RON_LOG_INFO;
    if (strcmp(e, "debug") == 0)
        return RON_LOG_DEBUG;
    if (strcmp(e, "warn") == 0)
        return RON_LOG_WARN;
    if (strcmp(e, "error") == 0)
        return RON_LOG_ERROR;
    return RON_LOG_INFO;
}

size_t
ron_json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    if (cap == 0)
        return 0;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[7];
        size_t k;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, k = 2;
        } else if (c == '\n') {
            esc[0] = '\\', esc[1] = 'n', k = 2;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            k = 6;
        } else {
            esc[0] = (char)c, k = 1;
        }
        if (n + k >= cap)
            break;
        memcpy(out + n, esc, k);
        n += k;
    }
    out[n] = '\0';
    return n;
}

void
ron_vlog(ron_log_level_t level, const char *fmt, va_list ap)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char msg[1024], esc[2048], line[2300], ts[40];
    struct timeval tv;
    struct tm tm;

    if (log_level < 0)
        log_level = level_from_env();
    if ((int)level < log_level)
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    ron_json_escape(esc, sizeof esc, msg);
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line, sizeof line,
                     "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"svc\":\"%s\",\"pid\":%d,\"msg\":\"%s\"}\n",
                     ts, (long)(tv.tv_usec / 1000), names[level], log_svc, (int)getpid(), esc);
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1, line[n - 1] = '\n';
    ssize_t w = write(log_fd, line, (size_t)n);
    (void)w; /* a log line that cannot be written has nowhere else to go */
}

void
ron_log(ron_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ron_vlog(level, fmt, ap);
    va_end(ap);
}
