/*
 * test_cmdline.c - command lines in service files: a command of any length
 * on indented continuation lines (inih's multi-line values), and the errors
 * in them still naming the right file and line.
 */
#include <ftw.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"
#include "util.h"

static char tmpdir[] = "/tmp/checksync-unit-cmdline-XXXXXX";

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

#define NFLAGS 20

/* One flag of about 100 characters, as a deployment path makes them. */
static void flag_text(char *buf, size_t len, int i)
{
	snprintf(buf, len, "--storage.path-%02d=/srv/deployments/prometheus-alertmanager/release-"
			   "2024-06-01/instance-%02d/data/%040d", i, i, i);
}

/*
 * About 2,100 characters of command on 21 lines; a key after it, so the
 * line numbers after a long command are checked too.
 */
static void test_long_command(void)
{
	char text[8192], flag[160], want_line[4096];
	size_t off = 0, loff = 0;
	struct service_config c;
	char err[CONFIG_ERR_MAX] = "";

	off += snprintf(text + off, sizeof(text) - off,
			"[service]\ncommand = /usr/bin/prometheus-alertmanager\n");
	loff += snprintf(want_line + loff, sizeof(want_line) - loff,
			 "/usr/bin/prometheus-alertmanager");
	for (int i = 0; i < NFLAGS; i++) {
		flag_text(flag, sizeof(flag), i);
		off += snprintf(text + off, sizeof(text) - off, "%s%s\n", i % 2 ? "\t" : "    ", flag);
		loff += snprintf(want_line + loff, sizeof(want_line) - loff, " %s", flag);
	}
	off += snprintf(text + off, sizeof(text) - off,
			"    # a comment among the flags\n"
			"    \"--web.listen-address=0.0.0.0:9093\"\n"
			"backup = 10.0.0.2:7000\n");
	loff += snprintf(want_line + loff, sizeof(want_line) - loff,
			 " \"--web.listen-address=0.0.0.0:9093\"");

	const char *path = write_file("long.conf", text);
	CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_INT(c.command.argc, NFLAGS + 2);
	CHECK(strlen(c.command.line) >= 2000);
	CHECK_STR(c.command.line, want_line);
	if (c.command.argc == NFLAGS + 2) {
		CHECK_STR(c.command.argv[0], "/usr/bin/prometheus-alertmanager");
		flag_text(flag, sizeof(flag), 0);
		CHECK_STR(c.command.argv[1], flag);
		flag_text(flag, sizeof(flag), NFLAGS - 1);
		CHECK_STR(c.command.argv[NFLAGS], flag);
		CHECK_STR(c.command.argv[NFLAGS + 1], "--web.listen-address=0.0.0.0:9093");
		CHECK(c.command.argv[NFLAGS + 2] == NULL);
	}
	CHECK_INT(c.backup.port, 7000);
	config_service_free(&c);

	/* The same, with a bad key after it: the error names the line it is on (26). */
	snprintf(text + off, sizeof(text) - off, "bogus = 1\n");
	path = write_file("long-bad.conf", text);
	CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), -EINVAL);
	snprintf(want_line, sizeof(want_line), "%s:26: unknown key 'bogus' in [service]", path);
	CHECK_CONTAINS(err, want_line);
}

/* "command =" with the program itself on the next line. */
static void test_empty_first_line(void)
{
	const char *path = write_file("empty-first.conf", "[service]\n"
							  "command =\n"
							  "    /usr/bin/prometheus-pushgateway\n"
							  "    --web.listen-address=:9091\n"
							  "backup = 10.0.0.2:7000\n"
							  "takeover_hook = /usr/sbin/ip addr add\n"
							  "  10.0.0.100/24 dev eth0\n");
	struct service_config c;
	char err[CONFIG_ERR_MAX] = "";

	CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_INT(c.command.argc, 2);
	CHECK_STR(c.command.line, "/usr/bin/prometheus-pushgateway --web.listen-address=:9091");
	CHECK_INT(c.takeover_hook.argc, 6);
	CHECK_STR(c.takeover_hook.line, "/usr/sbin/ip addr add 10.0.0.100/24 dev eth0");
	config_service_free(&c);
}

struct bad_case {
	const char *text;
	int line;
	const char *msg;
};

#define HEAD "[service]\nbackup = 10.0.0.2:7000\n" /* lines 1-2 */

static const struct bad_case bad_cases[] = {
    {HEAD "command = /bin/a\n  b\n  \"c d\n  e\n", 5,
     "command (continued from line 3): expected a closing double quote, got '\"c d'"},
    {HEAD "command =\n  relative/prog -x\n", 4,
     "command: expected an absolute path as the program, got 'relative/prog' (commands run "
     "without a shell or $PATH)"},
    {HEAD "command =\n# no words follow\n", 3,
     "command: expected a command line, on this line or on indented lines below it"},
    {HEAD "command = /bin/a\n    --ok\nepoch_interval_ms = 100\n    200\n", 6,
     "continuation lines are only for command lines (put the value of 'epoch_interval_ms' "
     "on line 5)"},
    {"[service]\nbackup = 10.0.0.2:7000\n  --flag\ncommand = /bin/a\n", 3,
     "continuation lines are only for command lines (put the value of 'backup' on line 2)"},
};

static void test_bad(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(bad_cases); i++) {
		char name[32], prefix[4200], err[CONFIG_ERR_MAX] = "";
		struct service_config c;
		const char *path;

		snprintf(name, sizeof(name), "bad%zu.conf", i);
		path = write_file(name, bad_cases[i].text);
		CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), -EINVAL);
		snprintf(prefix, sizeof(prefix), "%s:%d: %s", path, bad_cases[i].line,
			 bad_cases[i].msg);
		if (strcmp(err, prefix) != 0) {
			fprintf(stderr, "case %zu: \"%s\"\n  expected \"%s\"\n", i, err, prefix);
			unit_failures++;
		}
	}
}

/* Each line still fits inih's buffer: a continuation line that does not is refused by number. */
static void test_long_continuation_line(void)
{
	char text[1024], err[CONFIG_ERR_MAX] = "", want[4200];
	struct service_config c;

	snprintf(text, sizeof(text), HEAD "command = /bin/a\n  --ok\n  --x=%0300d\n", 0);
	const char *path = write_file("longcont.conf", text);
	CHECK_INT(config_load_service(path, ROLE_PRIMARY, &c, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:5: line is longer than ", path);
	CHECK_CONTAINS(err, want);
}

static void test_append(void)
{
	struct cmdline c;
	const char *why = NULL;

	CHECK_INT(cmdline_split("/bin/a b", &c, &why), 0);
	CHECK_INT(cmdline_append(&c, " \"c d\"  e", &why), 0);
	CHECK_INT(c.argc, 4);
	CHECK_STR(c.line, "/bin/a b  \"c d\"  e");
	if (c.argc == 4) {
		CHECK_STR(c.argv[2], "c d");
		CHECK(c.argv[4] == NULL);
	}
	CHECK_INT(cmdline_append(&c, "   ", &why), -EINVAL);
	CHECK_INT(cmdline_append(&c, "\"f", &why), -EINVAL);
	CHECK_STR(why, "a closing double quote");
	CHECK_INT(c.argc, 4);
	cmdline_free(&c);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	test_long_command();
	test_empty_first_line();
	test_bad();
	test_long_continuation_line();
	test_append();
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	UNIT_EXIT();
}
