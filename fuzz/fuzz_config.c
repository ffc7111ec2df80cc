/*
 * fuzz_config.c - the configuration parser (common/config.c, inih under it)
 * against any file, as a daemon file and as a service file, on both sides.
 *
 * The input is written to one private temporary file (mode 0600, so the
 * owner and mode checks pass and the parser is reached). Every load either
 * succeeds or fails with one line naming the file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "seeds.h"

static char path[] = "/tmp/checksync-fuzz-config-XXXXXX";
static int fd = -1;

static const char *const seeds[] = {
    "[daemon]\nlisten = 10.0.0.2:7000\nstate_dir = /var/lib/cs\n[tls]\nca = /a\ncert = /b\nkey = /c\n",
    "[service]\nname = kv\ncommand = /usr/bin/kv -addr \"a b\"\nexecutable = /usr/bin/kv\n"
    "backup = [::1]:7000\nprimary = p.test\nbackup_name = b.test\nlease_ms = 400\n"
    "failover_timeout_ms = 1000\ntakeover_hook = /bin/true\n",
    "[service]\npid_file = /run/x.pid\nbackup = h:1\nbackup_name = 10.0.0.2\n",
    "[service]\ncommand = /bin/kv\nrole_swap = on\nhosts = a=10.0.0.1:7000 b=[fd00::2]:7000 c=h:1\n",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = seeds_dir_if_empty(*argc, *argv);
	char name[16];

	fd = mkstemp(path);
	if (fd < 0)
		abort();
	unlink(path); /* reached through /proc/self/fd, gone when we exit */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	for (size_t i = 0; dir && i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		snprintf(name, sizeof(name), "seed%zu", i);
		seeds_write(dir, name, seeds[i], strlen(seeds[i]));
	}
	return 0;
}

/* One line that names our file: first, or as where a file it names is set. */
static void check_one_line(const char *err)
{
	if (!err[0] || strchr(err, '\n') || !strstr(err, path))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[CONFIG_ERR_MAX];

	if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		return 0;
	for (enum role role = ROLE_PRIMARY; role <= ROLE_BACKUP; role++) {
		struct daemon_config d;
		struct service_config s;

		err[0] = 0;
		if (config_load_daemon(path, role, &d, err, sizeof(err)) == 0)
			config_daemon_free(&d);
		else
			check_one_line(err);
		err[0] = 0;
		if (config_load_service(path, role, &s, err, sizeof(err)) == 0)
			config_service_free(&s);
		else
			check_one_line(err);
	}
	return 0;
}
