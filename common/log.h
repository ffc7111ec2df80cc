/*
 * log.h - one place that decides how the daemons speak.
 *
 * Errors are one line on stderr, "PROG: error: what went wrong", so that a
 * failing command says exactly one thing an operator can act on. Functions
 * below the command level return -errno and leave the words to their caller.
 */
#pragma once

#include <errno.h>

void log_set_program(const char *name);
void log_set_verbose(int v);
int log_get_verbose(void);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Log "fmt: strerror(-r)" and return r (a negative errno), for `return log_error_errno(r, ...)`. */
int log_error_errno(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
