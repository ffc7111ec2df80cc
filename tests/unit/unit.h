/*
 * unit.h - the few checks the unit tests need.
 *
 * A failed check prints where and what differed and the test carries on, so
 * one run shows every failure; main() ends with UNIT_EXIT(). Exit status 77
 * tells meson a test was skipped.
 */
#pragma once

#include <stdio.h>
#include <string.h>

static int unit_failures;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);   \
			unit_failures++;                                                           \
		}                                                                                  \
	} while (0)

#define CHECK_INT(a, b)                                                                            \
	do {                                                                                       \
		long long _a = (a), _b = (b);                                                      \
		if (_a != _b) {                                                                    \
			fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__,      \
				__LINE__, #a, _a, #b, _b);                                         \
			unit_failures++;                                                           \
		}                                                                                  \
	} while (0)

#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *_a = (a), *_b = (b);                                                   \
		if (!_a || !_b || strcmp(_a, _b) != 0) {                                           \
			fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__,        \
				__LINE__, #a, _a ? _a : "(null)", _b ? _b : "(null)");             \
			unit_failures++;                                                           \
		}                                                                                  \
	} while (0)

#define CHECK_CONTAINS(hay, needle)                                                                \
	do {                                                                                       \
		const char *_h = (hay), *_n = (needle);                                            \
		if (!_h || !strstr(_h, _n)) {                                                      \
			fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__,       \
				__LINE__, _h ? _h : "(null)", _n);                                 \
			unit_failures++;                                                           \
		}                                                                                  \
	} while (0)

#define UNIT_EXIT()                                                                                \
	do {                                                                                       \
		if (unit_failures)                                                                 \
			fprintf(stderr, "%d check(s) failed\n", unit_failures);                    \
		return unit_failures ? 1 : 0;                                                      \
	} while (0)
