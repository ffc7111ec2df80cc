/*
 * test_roles_config.c - role swap in the configuration: role_swap and
 * hosts in a service file (one file for every host), host_name in the
 * daemon's, and config_resolve_roles() deriving each side's peer (the next
 * host after this one); every mistake one line naming the file and line.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"
#include "unit_config.h"

static char tmpdir[] = "/tmp/checksync-unit-roles-XXXXXX";

#define HOSTS "hosts = a.test=10.0.0.1:7000 b.test=10.0.0.2:7000\n"

/* Line 1 [service], 2 command, 3 executable, then extra from line 4. */
static const char *service_file(const char *extra)
{
	return unit_service_file(tmpdir, "", extra);
}

static struct daemon_config daemon_named(const char *host, enum role role)
{
	return (struct daemon_config){.path = "/etc/checksync/backup.conf",
				      .role = role,
				      .host_name = (char *)host,
				      .host_name_line = 3};
}

/* Loads extra as role, resolves it for host, and checks the peer it got. */
static void resolve_ok(const char *extra, enum role role, const char *host, const char *peer,
		       const char *peer_addr, bool first)
{
	struct service_config c;
	struct daemon_config d = daemon_named(host, role);
	char err[CONFIG_ERR_MAX] = "", addr[300];

	CHECK_INT(config_load_service(service_file(extra), role, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_INT(config_resolve_roles(&d, &c, 1, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_STR(c.backup_name, peer);
	CHECK_STR(c.primary, role == ROLE_PRIMARY ? host : peer); /* the primary's name */
	CHECK_STR(hostport_format(&c.backup, addr, sizeof(addr)), peer_addr);
	CHECK_INT(c.starts_here, first);
	config_service_free(&c);
}

static void load_bad(enum role role, int line, const char *extra, const char *want)
{
	unit_service_refused(service_file(extra), role, line, want);
}

static void resolve_bad(const char *host, const char *want_fmt)
{
	struct service_config c;
	struct daemon_config d = daemon_named(host, ROLE_PRIMARY);
	char err[CONFIG_ERR_MAX] = "", expect[4200];

	CHECK_INT(config_load_service(service_file("role_swap = on\n" HOSTS), ROLE_PRIMARY, &c, err,
				      sizeof(err)),
		  0);
	CHECK_INT(config_resolve_roles(&d, &c, 1, err, sizeof(err)), -EINVAL);
	snprintf(expect, sizeof(expect), want_fmt, tmpdir);
	CHECK_STR(err, expect);
	config_service_free(&c);
}

int main(void)
{
	struct service_config c;
	struct daemon_config none = daemon_named(NULL, ROLE_PRIMARY);
	char err[CONFIG_ERR_MAX] = "";

	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	/* One file for both hosts, both daemons: each finds its peer, the first starts it. */
	resolve_ok("role_swap = on\n" HOSTS, ROLE_PRIMARY, "a.test", "b.test", "10.0.0.2:7000", true);
	resolve_ok("role_swap = on\n" HOSTS, ROLE_BACKUP, "a.test", "b.test", "10.0.0.2:7000", true);
	resolve_ok("role_swap = on\n" HOSTS, ROLE_PRIMARY, "b.test", "a.test", "10.0.0.1:7000", false);
	resolve_ok("role_swap = on\n" HOSTS, ROLE_BACKUP, "b.test", "a.test", "10.0.0.1:7000", false);
	/* With three, the next one, wrapping round. */
	resolve_ok("role_swap = on\nhosts = a=10.0.0.1:7000 b=10.0.0.2:7000 c=[fd00::3]:7001\n",
		   ROLE_PRIMARY, "c", "a", "10.0.0.1:7000", false);
	resolve_ok("role_swap = on\nhosts = a=10.0.0.1:7000 b=10.0.0.2:7000 c=[fd00::3]:7001\n",
		   ROLE_BACKUP, "b", "c", "[fd00::3]:7001", false);

	/* Without role_swap nothing changes, and a daemon without host_name is fine. */
	CHECK_INT(config_load_service(service_file("backup = 10.0.0.2:7000\nbackup_name = b\n"),
				      ROLE_PRIMARY, &c, err, sizeof(err)),
		  0);
	CHECK_INT(config_resolve_roles(&none, &c, 1, err, sizeof(err)), 0);
	CHECK_STR(c.backup_name, "b");
	CHECK_INT(c.role_swap, false);
	config_service_free(&c);

	load_bad(ROLE_PRIMARY, 4, "role_swap = on\n",
		 "role_swap = on needs 'hosts = NAME=HOST:PORT NAME=HOST:PORT ...' in [service]: "
		 "every host's certificate name and backupd address, the one that starts the "
		 "service first");
	load_bad(ROLE_BACKUP, 4, HOSTS "primary = a.test\n",
		 "hosts: only used with role_swap = on (set it, or remove hosts)");
	load_bad(ROLE_PRIMARY, 6, "role_swap = on\n" HOSTS "backup = 10.0.0.2:7000\n",
		 "backup: with role_swap = on (line 4) each side's peer comes from hosts (line 5); "
		 "remove this key");
	load_bad(ROLE_BACKUP, 4, "primary = a.test\nrole_swap = on\n" HOSTS,
		 "primary: with role_swap = on (line 5) each side's peer comes from hosts (line 6); "
		 "remove this key");
	load_bad(ROLE_PRIMARY, 5, "role_swap = on\nhosts = a=10.0.0.1:7000\n",
		 "hosts: expected at least two NAME=HOST:PORT entries (this host and its peer), got "
		 "'a=10.0.0.1:7000'");
	load_bad(ROLE_PRIMARY, 5, "role_swap = on\nhosts = a=10.0.0.1:7000 b=10.0.0.2\n",
		 "hosts: b: expected host:port (an IPv6 address goes in brackets, as in [::1]:7000), "
		 "got '10.0.0.2'");
	load_bad(ROLE_PRIMARY, 5, "role_swap = on\nhosts = a=10.0.0.1:7000 10.0.0.2:7000\n",
		 "hosts: expected NAME=HOST:PORT, got '10.0.0.2:7000'");
	load_bad(ROLE_PRIMARY, 5, "role_swap = on\nhosts = a=10.0.0.1:7000 a=10.0.0.2:7000\n",
		 "hosts: 'a' is named twice");
	load_bad(ROLE_PRIMARY, 5, "role_swap = on\nhosts = a/b=10.0.0.1:7000 b=10.0.0.2:7000\n",
		 "hosts: expected a certificate name of 1 to 64 letters, digits, '.', '_' or '-' "
		 "before '=', got 'a/b'");
	load_bad(ROLE_PRIMARY, 4, "role_swap = yes\n" HOSTS,
		 "role_swap: expected 'on' or 'off', got 'yes'");

	resolve_bad(NULL, "/etc/checksync/backup.conf: no 'host_name' in [daemon], but %s/kv.conf:5 "
			  "has role_swap = on: name this host as its hosts line does");
	resolve_bad("c.test", "%s/kv.conf:5: hosts does not name this host 'c.test' (host_name, set "
			      "in /etc/checksync/backup.conf:3)");

	unlink(service_file(""));
	rmdir(tmpdir);
	UNIT_EXIT();
}
