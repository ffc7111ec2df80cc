/*
 * log.h - one place that decides how the daemons speak.
 *
 * Errors are one line on stderr, "PROG: error: what went wrong", so that a
 * failing command says exactly one thing an operator can act on. Functions
 * below the command level return -errno and leave the words to their caller.
 */
#pragma once

#include <errno.h>
#include <stddef.h>

void log_set_program(const char *name);
void log_set_verbose(int v);
int log_get_verbose(void);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Log "fmt: strerror(-r)" and return r (a negative errno), for `return log_error_errno(r, ...)`. */
int log_error_errno(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * While buf is set (len > 0), errors are kept in buf (the last one wins)
 * instead of printed: a daemon that retries an operation every epoch says
 * what failed once, when it starts or stops failing, not once per try.
 * log_hold_errors(NULL, 0) prints errors again.
 */
void log_hold_errors(char *buf, size_t len);
