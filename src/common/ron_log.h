/*
 * ron_log.h - structured logs: one JSON object a line on stderr,
 * {"ts":"<RFC 3339 UTC>","level":"info","svc":"kernel","msg":"..."}.
 * The message is JSON-escaped; callers never build JSON by hand.
 * Thread-safe (one write(2) a line).
 */
#ifndef RON_LOG_H
#define RON_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum { RON_LOG_DEBUG, RON_LOG_INFO, RON_LOG_WARN, RON_LOG_ERROR } ron_log_level_t;

/* Set the service name logged in "svc" (copied; at most 31 bytes kept). */
void ron_log_set_service(const char *svc);
/* Lines below level are dropped. Default: info, or RON_LOG_LEVEL=debug|info|warn|error. */
void ron_log_set_level(ron_log_level_t level);
/* Redirect lines to fd (default 2). */
void ron_log_set_fd(int fd);

void ron_log(ron_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ron_vlog(ron_log_level_t level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define ron_debug(...) ron_log(RON_LOG_DEBUG, __VA_ARGS__)
#define ron_info(...) ron_log(RON_LOG_INFO, __VA_ARGS__)
#define ron_warn(...) ron_log(RON_LOG_WARN, __VA_ARGS__)
#define ron_error(...) ron_log(RON_LOG_ERROR, __VA_ARGS__)

/* Append s JSON-escaped (no quotes) to out; returns bytes written, never more
 * than cap-1, always NUL-terminated when cap > 0. */
size_t ron_json_escape(char *out, size_t cap, const char *s);

#endif
