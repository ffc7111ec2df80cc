/*
 * log.c - stderr logging with a program prefix and levels.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *program = "checksync";
static int verbose;
static char *held;
static size_t held_len;

void log_hold_errors(char *buf, size_t len)
{
	held = len ? buf : NULL;
	held_len = len;
	if (held)
		held[0] = 0;
}

void log_set_program(const char *name)
{
	program = name;
}

void log_set_verbose(int v)
{
	verbose = v;
}

int log_get_verbose(void)
{
	return verbose;
}

static void log_v(const char *level, const char *fmt, va_list ap, int r)
{
	char buf[2048];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (held && strcmp(level, "error: ") == 0) {
		if (r)
			snprintf(held, held_len, "%s: %s", buf, strerror(-r));
		else
			snprintf(held, held_len, "%s", buf);
		return;
	}
	if (r)
		fprintf(stderr, "%s: %s%s: %s\n", program, level, buf, strerror(-r));
	else
		fprintf(stderr, "%s: %s%s\n", program, level, buf);
}

#define DEFINE_LOG(fn, level, cond)                                                                \
	void fn(const char *fmt, ...)                                                              \
	{                                                                                          \
		va_list ap;                                                                        \
		if (!(cond))                                                                       \
			return;                                                                    \
		va_start(ap, fmt);                                                                 \
		log_v(level, fmt, ap, 0);                                                          \
		va_end(ap);                                                                        \
	}

DEFINE_LOG(log_error, "error: ", 1)
DEFINE_LOG(log_warn, "warning: ", 1)
DEFINE_LOG(log_info, "", verbose >= 1)
DEFINE_LOG(log_debug, "debug: ", verbose >= 2)

int log_error_errno(int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_v("error: ", fmt, ap, r);
	va_end(ap);
	return r;
}
