/*
 * test_config.c - the configuration files: good ones load with the values
 * and defaults we expect; every kind of bad one fails with the exact
 * "FILE:LINE: " prefix and a message that says what was expected.
 *
 * Files are written into a temporary directory from the strings below, so
 * the line numbers the checks expect can be counted in this source. Given a
 * directory (meson passes conf/), it also loads the examples shipped there.
 */
#include <ftw.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"
#include "util.h"

static char tmpdir[] = "/tmp/checksync-unit-config-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
	static char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
	return path;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/* ---------- good files ---------- */

static void test_backup_daemon(void)
{
	const char *path =
	    write_file("backup.conf", "# the backup daemon\n"
				      "[daemon]\n"
				      "listen = [::1]:7000\n"
				      "state_dir = /var/lib/cs\n"
				      "status_socket = /run/cs.sock ; inline comment\n"
				      "metrics_listen = 127.0.0.1:9100\n"
				      "\n"
				      "[tls]\n"
				      "ca = /etc/checksync/ca.pem\n"
				      "cert = /etc/checksync/backup.pem\n"
				      "key = /etc/checksync/backup.key\n");
	struct daemon_config c;
	char err[CONFIG_ERR_MAX] = "", buf[300];

	CHECK_INT(config_load_daemon(path, ROLE_BACKUP, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_STR(c.listen.host, "::1");
	CHECK_INT(c.listen.port, 7000);
	CHECK_STR(hostport_format(&c.listen, buf, sizeof(buf)), "[::1]:7000");
	CHECK_STR(c.state_dir, "/var/lib/cs");
	CHECK_STR(c.services_dir, CONFIG_DEFAULT_SERVICES_DIR);
	CHECK_STR(c.status_socket, "/run/cs.sock");
	CHECK_STR(c.metrics_listen.host, "127.0.0.1");
	CHECK_INT(c.metrics_listen.port, 9100);
	CHECK_STR(c.tls_ca, "/etc/checksync/ca.pem");
	CHECK_STR(c.tls_cert, "/etc/checksync/backup.pem");
	CHECK_STR(c.tls_key, "/etc/checksync/backup.key");
	config_daemon_free(&c);
}

static void test_primary_daemon_defaults(void)
{
	const char *path = write_file("primary.conf", "[tls]\n"
						      "ca = /c\n"
						      "cert = /d\n"
						      "key = /e\n");
	struct daemon_config c;
	char err[CONFIG_ERR_MAX] = "";

	CHECK_INT(config_load_daemon(path, ROLE_PRIMARY, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK(!hostport_is_set(&c.listen));
	CHECK(!hostport_is_set(&c.metrics_listen));
	CHECK_STR(c.state_dir, CONFIG_DEFAULT_STATE_DIR);
	CHECK_STR(c.services_dir, CONFIG_DEFAULT_SERVICES_DIR);
	CHECK_STR(c.status_socket, "/run/checksync-primary.sock");
	config_daemon_free(&c);
}

static void test_service_full(void)
{
	const char *path = write_file(
	    "kv.conf", "[service]\n"
		       "name = kvstore\n"
		       "command = /usr/bin/kvserver -addr 10.0.0.1:8080 \"a b\" \"q\\\"x\" \"\"\n"
		       "executable = /usr/bin/kvserver\n"
		       "backup = backup-host.example:7000\n"
		       "primary = primary.test\n"
		       "backup_name = backup.test\n"
		       "epoch_interval_ms = 250\n"
		       "heartbeat_interval_ms = 20\n"
		       "failover_timeout_ms = 3000\n"
		       "lease_ms = 2000\n"
		       "dirty_tracking = hash\n"
		       "fence_hook = /usr/local/sbin/fence kv\n"
		       "takeover_hook = /usr/sbin/ip addr add 10.0.0.9/24 dev eth0\n");
	struct service_config c;
	char err[CONFIG_ERR_MAX] = "";

	CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_STR(c.name, "kvstore");
	CHECK_INT(c.command.argc, 6);
	CHECK_STR(c.command.argv[0], "/usr/bin/kvserver");
	CHECK_STR(c.command.argv[2], "10.0.0.1:8080");
	CHECK_STR(c.command.argv[3], "a b");
	CHECK_STR(c.command.argv[4], "q\"x");
	CHECK_STR(c.command.argv[5], "");
	CHECK(c.command.argv[6] == NULL);
	CHECK(c.pid_file == NULL);
	CHECK_STR(c.executable, "/usr/bin/kvserver");
	CHECK_STR(c.backup.host, "backup-host.example");
	CHECK_INT(c.backup.port, 7000);
	CHECK_STR(c.primary, "primary.test");
	CHECK_STR(c.backup_name, "backup.test");
	CHECK_INT(c.epoch_interval_ms, 250);
	CHECK_INT(c.heartbeat_interval_ms, 20);
	CHECK_INT(c.failover_timeout_ms, 3000);
	CHECK_INT(c.lease_ms, 2000);
	CHECK_INT(c.dirty_tracking, DIRTY_HASH);
	CHECK_INT(c.fence_hook.argc, 2);
	CHECK_INT(c.takeover_hook.argc, 6);
	CHECK_STR(c.takeover_hook.argv[5], "eth0");
	config_service_free(&c);
}

static void test_service_defaults(void)
{
	const char *path = write_file("web-1.conf", "[service]\n"
						    "pid_file = /run/web.pid\n"
						    "backup = 10.1.2.3:7000\n"
						    "backup_name = 10.1.2.3\n");
	struct service_config c;
	char err[CONFIG_ERR_MAX] = "";

	CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_STR(c.name, "web-1");
	CHECK_INT(c.command.argc, 0);
	CHECK_STR(c.pid_file, "/run/web.pid");
	CHECK_INT(c.epoch_interval_ms, 100);
	CHECK_INT(c.heartbeat_interval_ms, 50);
	CHECK_INT(c.failover_timeout_ms, 1000);
	CHECK_INT(c.lease_ms, 500);
	CHECK_INT(c.dirty_tracking, DIRTY_UFFD);
	CHECK_INT(c.fence_hook.argc, 0);
	config_service_free(&c);
}

/* The same file serves both hosts: the backup needs executable, not backup or command. */
static void test_service_backup_role(void)
{
	const char *path = write_file("b.conf", "[service]\n"
						"executable = /usr/bin/kvserver\n"
						"primary = primary.test\n");
	struct service_config c;
	char err[CONFIG_ERR_MAX] = "";

	CHECK_INT(config_load_service(path, ROLE_BACKUP, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK(!hostport_is_set(&c.backup));
	config_service_free(&c);
}

/* ---------- bad files ---------- */

struct bad_case {
	enum role role;
	bool daemon;
	const char *text;
	int line;	 /* 0: the error names the file only */
	const char *msg; /* must follow "FILE:LINE: " */
};

#define SVC "[service]\ncommand = /usr/bin/kv\nbackup = 10.0.0.2:7000\n" /* lines 1-3 */
#define SVC_OK SVC "backup_name = backup.test\n"			 /* lines 1-4 */
#define TLS "[tls]\nca = /a\ncert = /b\nkey = /c\n"			 /* lines 1-4 */

static const struct bad_case bad_cases[] = {
    /* unknown key, unknown section, keys in the wrong place */
    {ROLE_PRIMARY, false, SVC "\n\n\nepoch_intervall = 100\n", 7,
     "unknown key 'epoch_intervall' in [service] (expected one of: name, command, pid_file, "
     "executable, backup, primary, backup_name, epoch_interval_ms, heartbeat_interval_ms, "
     "failover_timeout_ms, lease_ms, dirty_tracking, fence_hook, takeover_hook, debug_file, "
     "compression, delta_cache_mb, output_commit, witness, witness_ttl_ms, on_backup_loss, witness_ca, witness_cert, witness_key, role_swap, hosts, precopy, reach)"},
    {ROLE_PRIMARY, false, "[servic]\ncommand = /bin/x\n", 1,
     "unknown section [servic] (expected [service])"},
    {ROLE_PRIMARY, false, SVC "[extra]\n", 4, "unknown section [extra] (expected [service])"},
    {ROLE_BACKUP, true, TLS "[daemon]\nlisten = 0.0.0.0:7000\n[metrics]\n", 7,
     "unknown section [metrics] (expected [daemon], [tls])"},
    {ROLE_PRIMARY, false, "backup = 10.0.0.2:7000\n" SVC, 1,
     "key 'backup' outside any section (expected one of [service] first)"},
    {ROLE_PRIMARY, true, TLS "[daemon]\nlisten = 0.0.0.0:7000\n", 6,
     "key 'listen' in [daemon] is only for the backup (expected one of: state_dir, "
     "services_dir, status_socket, metrics_listen, host_name, backupd_socket)"},
    {ROLE_PRIMARY, true, TLS "[daemon]\nca = /x\n", 6, "unknown key 'ca' in [daemon]"},
    /* bad integers and ranges */
    {ROLE_PRIMARY, false, SVC "epoch_interval_ms = abc\n", 4,
     "epoch_interval_ms: expected an integer between 10 and 60000, got 'abc'"},
    {ROLE_PRIMARY, false, SVC "epoch_interval_ms = 5\n", 4,
     "epoch_interval_ms: expected an integer between 10 and 60000, got '5'"},
    {ROLE_PRIMARY, false, SVC "epoch_interval_ms = 60001\n", 4,
     "epoch_interval_ms: expected an integer between 10 and 60000, got '60001'"},
    {ROLE_PRIMARY, false, SVC "epoch_interval_ms = -100\n", 4,
     "epoch_interval_ms: expected an integer between 10 and 60000, got '-100'"},
    {ROLE_PRIMARY, false, SVC "epoch_interval_ms = 100ms\n", 4,
     "epoch_interval_ms: expected an integer between 10 and 60000, got '100ms'"},
    {ROLE_PRIMARY, false, SVC "failover_timeout_ms = 99999999999999999999\n", 4,
     "failover_timeout_ms: expected an integer between 50 and 600000, got "},
    {ROLE_PRIMARY, false, SVC "heartbeat_interval_ms =\n", 4,
     "heartbeat_interval_ms: expected an integer between 10 and 60000, got ''"},
    {ROLE_PRIMARY, false, SVC "dirty_tracking = soft-dirty\n", 4,
     "dirty_tracking: expected 'uffd' or 'hash', got 'soft-dirty'"},
    /* missing keys */
    {ROLE_PRIMARY, false, "[service]\ncommand = /usr/bin/kv\n", 1,
     "missing required key 'backup' in [service]"},
    {ROLE_PRIMARY, false, "# x\n[service]\nbackup = 10.0.0.2:7000\n", 2,
     "missing required key 'command' or 'pid_file' in [service]"},
    {ROLE_BACKUP, false, "[service]\nbackup = 10.0.0.2:7000\n", 1,
     "missing required key 'executable' in [service]"},
    {ROLE_BACKUP, true, TLS, 0, "missing required key 'listen' in [daemon]"},
    {ROLE_PRIMARY, true, "[tls]\ncert = /b\nkey = /c\n", 1, "missing required key 'ca' in [tls]"},
    /* identity, both ways: each side must name the other's certificate */
    {ROLE_PRIMARY, false, SVC, 1,
     "missing required key 'backup_name' in [service] (the name the backup's certificate "
     "carries (SAN DNS or IP, else CN); the primary sends its memory to no other)"},
    {ROLE_BACKUP, false, "# a\n\n[service]\nexecutable = /usr/bin/kv\n", 3,
     "missing required key 'primary' in [service] (the name the primary's certificate "
     "carries (SAN DNS or IP, else CN); the backup accepts no other)"},
    {ROLE_BACKUP, false, "[service]\nexecutable = /usr/bin/kv\nprimary = a b\n", 3,
     "primary: expected a name of 1 to 64 letters"},
    {ROLE_PRIMARY, false, SVC "backup_name = *.example\n", 4,
     "backup_name: expected a name of 1 to 64 letters"},
    /* command and pid_file */
    {ROLE_PRIMARY, false, SVC "pid_file = /run/kv.pid\n", 4,
     "'command' (line 2) and 'pid_file' (line 4) are mutually exclusive"},
    {ROLE_PRIMARY, false, "[service]\ncommand = kvserver -x\nbackup = h:1\n", 2,
     "command: expected an absolute path as the program, got 'kvserver'"},
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv \"open\nbackup = h:1\n", 2,
     "command: expected a closing double quote, got '/bin/kv \"open'"},
    {ROLE_PRIMARY, false, "[service]\ncommand =\nbackup = h:1\n", 2,
     "command: expected a command line, on this line or on indented lines below it"},
    /* host:port */
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv\nbackup = 10.0.0.2\n", 3,
     "backup: expected host:port (an IPv6 address goes in brackets, as in [::1]:7000), got "
     "'10.0.0.2'"},
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv\nbackup = 10.0.0.2:0\n", 3,
     "backup: expected a port between 1 and 65535 after the ':', got '10.0.0.2:0'"},
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv\nbackup = 10.0.0.2:65536\n", 3,
     "backup: expected a port between 1 and 65535 after the ':', got '10.0.0.2:65536'"},
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv\nbackup = 10.0.0.2:http\n", 3,
     "backup: expected a port between 1 and 65535 after the ':'"},
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv\nbackup = ::1:7000\n", 3,
     "backup: expected host:port (an IPv6 address goes in brackets"},
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv\nbackup = [::1]7000\n", 3,
     "backup: expected host:port"},
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv\nbackup = [10.0.0.1]:7000\n", 3,
     "backup: expected an IPv6 address inside the brackets, got '[10.0.0.1]:7000'"},
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv\nbackup = 10.0.0.256:7000\n", 3,
     "backup: expected a host name or an IP address before the ':', got '10.0.0.256:7000'"},
    {ROLE_PRIMARY, false, "[service]\ncommand = /bin/kv\nbackup = :7000\n", 3,
     "backup: expected a host name or an IP address before the ':'"},
    {ROLE_BACKUP, true, TLS "[daemon]\nlisten = 0.0.0.0:-1\n", 6,
     "listen: expected a port between 1 and 65535 after the ':', got '0.0.0.0:-1'"},
    /* timing */
    {ROLE_PRIMARY, false, SVC "lease_ms = 1000\n", 4,
     "lease_ms (1000) must be less than failover_timeout_ms (1000)"},
    {ROLE_PRIMARY, false, SVC "lease_ms = 400\nfailover_timeout_ms = 300\n", 4,
     "lease_ms (400) must be less than failover_timeout_ms (300)"},
    {ROLE_PRIMARY, false, SVC "failover_timeout_ms = 400\n", 4,
     "lease_ms (500) must be less than failover_timeout_ms (400)"},
    {ROLE_PRIMARY, false, SVC "heartbeat_interval_ms = 600\n", 4,
     "heartbeat_interval_ms (600) must be less than lease_ms (500)"},
    {ROLE_PRIMARY, false, SVC "failover_timeout_ms = 540\n", 4,
     "failover_timeout_ms (540) must exceed lease_ms + heartbeat_interval_ms (500 + 50)"},
    /* paths and names */
    {ROLE_PRIMARY, true, TLS "[daemon]\nstate_dir = var/lib\n", 6,
     "state_dir: expected an absolute path, got 'var/lib'"},
    {ROLE_PRIMARY, false, SVC "name = kv server\n", 4,
     "name: expected a name of 1 to 64 letters, digits, '.', '_' or '-', got 'kv server'"},
    /* syntax */
    {ROLE_PRIMARY, false, SVC "command = /bin/other\n", 4,
     "duplicate key 'command' in [service] (first set on line 2)"},
    {ROLE_PRIMARY, false, SVC "  --verbose\n", 4,
     "continuation lines are only for command lines (put the value of 'backup' on line 3)"},
    {ROLE_PRIMARY, false, SVC "this is not a key\n", 4,
     "expected '[section]', 'key = value' or a comment"},
    {ROLE_PRIMARY, false, "[service\n" SVC, 1, "expected '[section]', 'key = value' or a comment"},
    /* a syntax error before a bad key is the one reported */
    {ROLE_PRIMARY, false, "[service]\nnonsense\nbogus = 1\n", 2,
     "expected '[section]', 'key = value' or a comment"},
    {ROLE_PRIMARY, false, "[service]\nbogus = 1\nnonsense\n", 2, "unknown key 'bogus'"},
};

static void check_bad(const struct bad_case *c, size_t i)
{
	char name[32], prefix[4200], err[CONFIG_ERR_MAX] = "";
	const char *path;
	int r;

	snprintf(name, sizeof(name), "bad%zu.conf", i);
	path = write_file(name, c->text);
	if (c->daemon) {
		struct daemon_config d;
		r = config_load_daemon(path, c->role, &d, err, sizeof(err));
	} else {
		struct service_config s;
		r = config_load_service(path, c->role, &s, err, sizeof(err));
	}
	if (c->line)
		snprintf(prefix, sizeof(prefix), "%s:%d: ", path, c->line);
	else
		snprintf(prefix, sizeof(prefix), "%s: ", path);
	CHECK_INT(r, -EINVAL);
	if (strncmp(err, prefix, strlen(prefix)) != 0) {
		fprintf(stderr, "case %zu: \"%s\" does not start with \"%s\"\n", i, err, prefix);
		unit_failures++;
	} else if (!strstr(err + strlen(prefix), c->msg)) {
		fprintf(stderr, "case %zu: \"%s\" does not say \"%s\"\n", i, err, c->msg);
		unit_failures++;
	}
	CHECK(!strchr(err, '\n'));
}

static void test_bad_files(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(bad_cases); i++)
		check_bad(&bad_cases[i], i);
}

/* inih's line buffer is ~200 bytes: a longer line must be refused, not cut in two. */
static void test_long_line(void)
{
	char text[600], err[CONFIG_ERR_MAX] = "", prefix[4200];
	struct service_config c;
	const char *path;

	snprintf(text, sizeof(text), SVC "fence_hook = /bin/echo %0400d\nbogus = 1\n", 0);
	path = write_file("long.conf", text);
	CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), -EINVAL);
	snprintf(prefix, sizeof(prefix), "%s:4: line is longer than ", path);
	CHECK_CONTAINS(err, prefix);
}

static void test_file_name_as_name(void)
{
	char err[CONFIG_ERR_MAX] = "";
	struct service_config c;
	const char *path = write_file("my service.conf", SVC_OK);

	CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "the file name does not make a valid service name; set 'name'");
	path = write_file("ok.kv.conf", SVC_OK);
	CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), 0);
	CHECK_STR(c.name, "ok.kv");
	config_service_free(&c);
}

static void test_missing_file(void)
{
	char err[CONFIG_ERR_MAX] = "";
	struct daemon_config d;

	CHECK_INT(
	    config_load_daemon("/nonexistent/primary.conf", ROLE_PRIMARY, &d, err, sizeof(err)),
	    -ENOENT);
	CHECK_STR(err, "/nonexistent/primary.conf: cannot open: No such file or directory");
}

/* ---------- a directory of services ---------- */

static void test_services_dir(void)
{
	char dir[4200], err[CONFIG_ERR_MAX] = "";
	struct service_config *arr = NULL;
	size_t n = 0;

	snprintf(dir, sizeof(dir), "%s/services", tmpdir);
	mkdir(dir, 0700);
	write_file("services/b.conf", SVC_OK);
	write_file("services/a.conf", SVC_OK "name = alpha\n");
	write_file("services/README", "not a config file\n");
	write_file("services/.hidden.conf", "garbage\n");
	CHECK_INT(config_load_services_dir(dir, ROLE_PRIMARY, &arr, &n, err, sizeof(err)), 0);
	CHECK_INT(n, 2);
	if (n == 2) {
		CHECK_STR(arr[0].name, "alpha");
		CHECK_STR(arr[1].name, "b");
	}
	config_services_free(arr, n);

	write_file("services/c.conf", SVC_OK "name = alpha\n");
	CHECK_INT(config_load_services_dir(dir, ROLE_PRIMARY, &arr, &n, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "/services/c.conf: service name 'alpha' is already used by ");
	CHECK_CONTAINS(err, "/services/a.conf");

	write_file("services/c.conf", SVC "lease_ms = x\n");
	CHECK_INT(config_load_services_dir(dir, ROLE_PRIMARY, &arr, &n, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "/services/c.conf:4: lease_ms: expected an integer");

	CHECK_INT(
	    config_load_services_dir("/nonexistent", ROLE_PRIMARY, &arr, &n, err, sizeof(err)),
	    -ENOENT);
	CHECK_STR(err, "/nonexistent: cannot read directory: No such file or directory");
}

/* ---------- helpers ---------- */

static void test_cmdline_split(void)
{
	struct cmdline c;
	const char *why = NULL;

	CHECK_INT(cmdline_split("  /bin/a   b\t\"c  d\" e\"f g\"h \"\\\\\"", &c, &why), 0);
	CHECK_INT(c.argc, 5);
	if (c.argc == 5) {
		CHECK_STR(c.argv[1], "b");
		CHECK_STR(c.argv[2], "c  d");
		CHECK_STR(c.argv[3], "ef gh");
		CHECK_STR(c.argv[4], "\\");
	}
	cmdline_free(&c);
	CHECK_INT(cmdline_split("   ", &c, &why), -EINVAL);
	CHECK_STR(why, "a command line");
	/* Found by fuzzing: a form feed once made this loop for ever. */
	CHECK_INT(cmdline_split("/bin/a\fb\v c\f", &c, &why), 0);
	CHECK_INT(c.argc, 3);
	cmdline_free(&c);
}

static void test_hostport(void)
{
	struct hostport hp;
	const char *why;
	char buf[300];

	CHECK_INT(hostport_parse("localhost:1", false, &hp, &why), 0);
	CHECK_STR(hostport_format(&hp, buf, sizeof(buf)), "localhost:1");
	CHECK_INT(hostport_parse("[fe80::1]:65535", false, &hp, &why), 0);
	CHECK_STR(hostport_format(&hp, buf, sizeof(buf)), "[fe80::1]:65535");
	CHECK_INT(hostport_parse("127.0.0.1:0", false, &hp, &why), -EINVAL);
	CHECK_INT(hostport_parse("127.0.0.1:0", true, &hp, &why), 0);
	CHECK_INT(hostport_parse("127.0.0.1:00080", false, &hp, &why), 0);
	CHECK_INT(hp.port, 80);
	CHECK_INT(hostport_parse("127.0.0.1:000080", false, &hp, &why), -EINVAL);
}

/* ---------- owners and modes of the files a daemon trusts ---------- */

/* A copy of the path: write_file()'s is overwritten by the next call. Free it. */
static char *write_mode(const char *name, const char *text, mode_t mode)
{
	char *path = strdup(write_file(name, text));

	if (chmod(path, mode) < 0) {
		perror(path);
		exit(2);
	}
	return path;
}

static void test_file_modes(void)
{
	char err[CONFIG_ERR_MAX] = "", text[4096], want[4400];
	struct daemon_config d;
	struct service_config c;
	char *key, *ca, *conf, *hook, *svc;

	ca = write_mode("m-ca.pem", "x\n", 0644);
	key = write_mode("m.key", "x\n", 0600);
	snprintf(text, sizeof(text), "[tls]\nca = %s\ncert = %s\nkey = %s\n", ca, ca, key);
	conf = write_mode("m-primary.conf", text, 0644);
	CHECK_INT(config_load_daemon(conf, ROLE_PRIMARY, &d, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	config_daemon_free(&d);
	/* A key group members may read is allowed (a group of admins); others may not. */
	chmod(key, 0640);
	CHECK_INT(config_load_daemon(conf, ROLE_PRIMARY, &d, err, sizeof(err)), 0);
	config_daemon_free(&d);
	chmod(key, 0644);
	CHECK_INT(config_load_daemon(conf, ROLE_PRIMARY, &d, err, sizeof(err)), -EPERM);
	snprintf(want, sizeof(want),
		 "%s: mode 0644, the key must not be readable by others (key, set in %s:4)", key,
		 conf);
	CHECK_STR(err, want);
	chmod(key, 0600);
	chmod(ca, 0664);
	CHECK_INT(config_load_daemon(conf, ROLE_PRIMARY, &d, err, sizeof(err)), -EPERM);
	snprintf(want, sizeof(want),
		 "%s: mode 0664, a certificate must not be writable by its group (ca, set in %s:2)",
		 ca, conf);
	CHECK_STR(err, want);
	chmod(ca, 0644);
	chmod(conf, 0666);
	CHECK_INT(config_load_daemon(conf, ROLE_PRIMARY, &d, err, sizeof(err)), -EPERM);
	snprintf(want, sizeof(want),
		 "%s: mode 0666, a configuration file must not be writable by others", conf);
	CHECK_STR(err, want);
	chmod(conf, 0644);

	hook = write_mode("m-hook.sh", "#!/bin/sh\n", 0757);
	snprintf(text, sizeof(text), SVC_OK "takeover_hook = %s --now\n", hook);
	svc = write_mode("m-svc.conf", text, 0644);
	CHECK_INT(config_load_service(svc, ROLE_PRIMARY, &c, err, sizeof(err)), -EPERM);
	snprintf(want, sizeof(want),
		 "%s: mode 0757, a hook must not be writable by others (takeover_hook, set in %s:5)",
		 hook, svc);
	CHECK_STR(err, want);
	chmod(hook, 0755);
	CHECK_INT(config_load_service(svc, ROLE_PRIMARY, &c, err, sizeof(err)), 0);
	config_service_free(&c);
	/* A hook that cannot exist (found by fuzz_config: stat() says ENOTDIR) is missing, not an error. */
	{
		char *nowhere = write_mode("m-nowhere.conf", SVC_OK "takeover_hook = /bin/true/true\n", 0644);
		CHECK_INT(config_load_service(nowhere, ROLE_PRIMARY, &c, err, sizeof(err)), 0);
		config_service_free(&c);
		free(nowhere);
	}
	chmod(svc, 0620);
	CHECK_INT(config_load_service(svc, ROLE_PRIMARY, &c, err, sizeof(err)), -EPERM);
	CHECK_CONTAINS(err, "m-svc.conf: mode 0620, a configuration file must not be writable by its group");

	/* Owned by someone else (needs root to arrange: skipped otherwise). */
	if (geteuid() == 0 && chown(hook, 1234, 1234) == 0) {
		CHECK_INT(config_load_service(svc, ROLE_PRIMARY, &c, err, sizeof(err)), -EPERM);
		chmod(svc, 0644);
		CHECK_INT(config_load_service(svc, ROLE_PRIMARY, &c, err, sizeof(err)), -EPERM);
		snprintf(want, sizeof(want), "%s: owned by uid 1234, a hook must be owned by root", hook);
		CHECK_CONTAINS(err, want);
	}
	chmod(svc, 0644);
	free(key), free(ca), free(conf), free(hook), free(svc);
}

/* The examples under conf/ must load, on both sides. */
static void test_examples(const char *conf)
{
	char path[4200], err[CONFIG_ERR_MAX] = "";
	struct service_config *arr = NULL;
	struct daemon_config d;
	size_t n = 0;

	for (enum role role = ROLE_PRIMARY; role <= ROLE_BACKUP; role++) {
		snprintf(path, sizeof(path), "%s/%s.conf", conf, role_to_string(role));
		CHECK_INT(config_load_daemon(path, role, &d, err, sizeof(err)), 0);
		CHECK_STR(err, "");
		config_daemon_free(&d);
		snprintf(path, sizeof(path), "%s/services", conf);
		CHECK_INT(config_load_services_dir(path, role, &arr, &n, err, sizeof(err)), 0);
		CHECK_STR(err, "");
		CHECK_INT(n, 1);
		if (n == 1) {
			CHECK_STR(arr[0].name, "kvserver");
			CHECK_INT(arr[0].lease_ms, 500);
		}
		config_services_free(arr, n);
	}
}

int main(int argc, char **argv)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	test_backup_daemon();
	test_primary_daemon_defaults();
	test_service_full();
	test_service_defaults();
	test_service_backup_role();
	test_bad_files();
	test_long_line();
	test_file_name_as_name();
	test_missing_file();
	test_services_dir();
	test_cmdline_split();
	test_hostport();
	test_file_modes();
	if (argc > 1)
		test_examples(argv[1]);
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	UNIT_EXIT();
}
