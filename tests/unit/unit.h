/*
 * unit.h - the few checks the unit tests need.
 *
 * A failed check prints where and what differed and the test carries on, so
 * one run shows every failure; main() ends with UNIT_EXIT(). Exit status 77
 * tells meson a test was skipped.
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>
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

/*
 * Write dir/kv.conf: "[service]", a command and an executable (lines 1-3),
 * then head and extra (so a test knows the line its key is on); the path.
 * The config tests of the service keys share it.
 */
static inline const char *unit_service_file(const char *dir, const char *head, const char *extra)
{
	static char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/kv.conf", dir);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fprintf(f, "[service]\ncommand = /usr/bin/kv\nexecutable = /usr/bin/kv\n%s%s", head, extra);
	fclose(f);
	return path;
}

/* The peer keys every service file of a primary needs, for unit_service_file()'s head. */
#define UNIT_PEER_KEYS                                                                             \
	"backup = 10.0.0.2:7000\nprimary = primary.test\nbackup_name = backup.test\n"
