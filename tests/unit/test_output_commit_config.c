/*
 * test_output_commit_config.c - the output_commit key of a service file:
 * off unless asked for, "on" and "off" read on both sides, anything else an
 * error naming the file and line.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"
#include "unit_config.h"

static char tmpdir[] = "/tmp/checksync-unit-oc-XXXXXX";

/* Lines 1-3 as unit.h writes them, 4-6 the peer keys, then extra from line 7. */
static const char *service_file(const char *extra)
{
	return unit_service_file(tmpdir, UNIT_PEER_KEYS, extra);
}

static void load_ok(const char *extra, enum role role, bool want)
{
	struct service_config c;
	char err[CONFIG_ERR_MAX] = "";

	CHECK_INT(config_load_service(service_file(extra), role, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_INT(c.output_commit, want);
	config_service_free(&c);
}

static void load_bad(int line, const char *extra, const char *want)
{
	unit_service_refused(service_file(extra), ROLE_PRIMARY, line, want);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	load_ok("", ROLE_PRIMARY, false);
	load_ok("output_commit = on\n", ROLE_PRIMARY, true);
	load_ok("output_commit = off\n", ROLE_PRIMARY, false);
	load_ok("output_commit = on\n", ROLE_BACKUP, true); /* one file for both hosts */
	load_bad(7, "output_commit = yes\n", "output_commit: expected 'on' or 'off', got 'yes'");
	load_bad(7, "output_commit = ON\n", "output_commit: expected 'on' or 'off', got 'ON'");
	load_bad(8, "output_commit = on\noutput_commit = off\n",
		 "duplicate key 'output_commit' in [service] (first set on line 7)");
	unlink(service_file(""));
	rmdir(tmpdir);
	UNIT_EXIT();
}
