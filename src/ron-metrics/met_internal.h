/*
 * met_internal.h - helpers shared by the files of ron-metrics and its tests:
 * a growable text buffer, name and lint checks that mirror promtool's, UTF-8
 * validation, escaping and float formatting for the text format.
 */
#ifndef MET_INTERNAL_H
#define MET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ron_metrics.h"

/* Family types as the text format names them; MET__UNTYPED and MET__SUMMARY
 * only occur in merged input. */
enum { MET__UNSET = 0, MET__UNTYPED = 10, MET__SUMMARY = 11 };

/* Growable byte buffer; p is NUL-terminated once anything was appended. */
typedef struct {
    char *p;
    size_t len;
    size_t cap;
} met__buf_t;

void met__buf_add(met__buf_t *b, const char *s, size_t n);
void met__buf_puts(met__buf_t *b, const char *s);
void met__buf_printf(met__buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s (n bytes) escaped for a label value (\\ \" \n) or help text (\\ \n). */
void met__buf_escape(met__buf_t *b, const char *s, size_t n, bool label_value);
/* Append v the way Prometheus prints floats: shortest round-trip form,
 * +Inf, -Inf, NaN. */
void met__buf_double(met__buf_t *b, double v);
/* Hand the buffer's bytes to the caller (always NUL-terminated). */
char *met__buf_take(met__buf_t *b, size_t *len_out);
void met__buf_free(met__buf_t *b);

/* True if s (n bytes) is a metric name [a-zA-Z_][a-zA-Z0-9_]* of at most
 * MET_MAX_NAME bytes (colons are refused: promtool lints them). */
bool met__name_ok(const char *s, size_t n);
/* True if s is a label name: a metric name not starting with "__". */
bool met__label_name_ok(const char *s, size_t n);
/* True if a family of type (MET_COUNTER.. or MET__UNTYPED/MET__SUMMARY) named
 * s passes promtool's name lints: camelCase, _total/_bucket/_count/_sum
 * suffix rules, type in name, non-base units, unit abbreviations. */
bool met__family_lint_ok(const char *s, size_t n, int type);
/* True if label name l may appear on a family of this type (le only on
 * histograms, quantile only on summaries, no camelCase). */
bool met__label_lint_ok(const char *l, size_t n, int type);
/* Name of a type in a "# TYPE" line. */
const char *met__type_name(int type);

#endif
