/*
 * test_witness_config.c - the witness keys of a service file: witness =
 * URL[,URL...], witness_ttl_ms (whole seconds) and on_backup_loss, with
 * "continue" refused unless a witness or a fence hook keeps the backup
 * from restoring a second copy; every error names the file and line.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"
#include "unit_config.h"

static char tmpdir[] = "/tmp/checksync-unit-witness-XXXXXX";
static char fence[512];

/* Lines 1-3 as unit.h writes them, 4-6 the peer keys, then extra from line 7. */
static const char *service_file(const char *extra)
{
	return unit_service_file(tmpdir, UNIT_PEER_KEYS, extra);
}

static void load_ok(const char *extra, size_t urls, enum backup_loss loss, uint32_t ttl)
{
	struct service_config c;
	char err[CONFIG_ERR_MAX] = "";

	CHECK_INT(config_load_service(service_file(extra), ROLE_PRIMARY, &c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_INT(c.witness.n, urls);
	CHECK_INT(c.on_backup_loss, loss);
	CHECK_INT(c.witness_ttl_ms, ttl);
	config_service_free(&c);
}

static void load_bad(int line, const char *extra, const char *want)
{
	unit_service_refused(service_file(extra), ROLE_PRIMARY, line, want);
}

int main(void)
{
	struct service_config c;
	char err[CONFIG_ERR_MAX] = "", extra[8192];

	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	/* A fence hook the file may name: a root-owned program, as config.c checks. */
	snprintf(fence, sizeof(fence), "%s/fence.sh", tmpdir);
	FILE *f = fopen(fence, "w");
	fputs("#!/bin/sh\nexit 0\n", f);
	fclose(f);
	chmod(fence, 0755);

	load_ok("", 0, BACKUP_LOSS_FREEZE, 2000); /* today's rule without a witness */
	load_ok("witness = http://10.0.0.9:2379\n", 1, BACKUP_LOSS_CONTINUE, 2000);
	load_ok("witness = http://10.0.0.9:2379, http://[fd00::9]:2379,http://e3:2379\n"
		"witness_ttl_ms = 3000\non_backup_loss = freeze\n",
		3, BACKUP_LOSS_FREEZE, 3000);
	snprintf(extra, sizeof(extra), "fence_hook = %s\non_backup_loss = continue\n", fence);
	load_ok(extra, 0, BACKUP_LOSS_CONTINUE, 2000);

	CHECK_INT(config_load_service(service_file("witness = http://a:1,http://b:2\n"), ROLE_PRIMARY,
				      &c, err, sizeof(err)),
		  0);
	if (c.witness.n == 2) {
		CHECK_STR(c.witness.v[0], "http://a:1");
		CHECK_STR(c.witness.v[1], "http://b:2");
	}
	config_service_free(&c);

	load_bad(7, "on_backup_loss = continue\n",
		 "on_backup_loss = continue needs a witness or a fence_hook: without either the "
		 "backup could restore a second copy while this one serves");
	load_bad(7, "on_backup_loss = serve\n",
		 "on_backup_loss: expected 'freeze' or 'continue', got 'serve'");
	load_bad(7, "witness = 10.0.0.9:2379\n",
		 "witness: expected http://HOST:PORT or https://HOST:PORT (etcd's client URLs, "
		 "separated by commas), got '10.0.0.9:2379'");
	load_bad(7, "witness = http://e1:2379/v3\n",
		 "witness: expected http://HOST:PORT or https://HOST:PORT (etcd's client URLs, "
		 "separated by commas), got 'http://e1:2379/v3'");
	load_bad(7, "witness = ,\n", "witness: expected at least one etcd client URL");
	load_bad(8, "witness = http://e1:2379\nwitness_ttl_ms = 1500\n",
		 "witness_ttl_ms (1500) must be whole seconds: etcd counts leases in seconds");
	load_bad(8, "witness = http://e1:2379\nwitness_ttl_ms = 500\n",
		 "witness_ttl_ms: expected an integer between 1000 and 600000, got '500'");
	load_bad(7, "witness_ttl_ms = 2000\n",
		 "witness_ttl_ms is set but no witness is configured");
	/* TLS to etcd: https needs the CA; a client certificate comes with its key. */
	char ca[512], crt[512], key[512];
	snprintf(ca, sizeof(ca), "%s/ca.crt", tmpdir);
	snprintf(crt, sizeof(crt), "%s/c.crt", tmpdir);
	snprintf(key, sizeof(key), "%s/c.key", tmpdir);
	for (const char *path = ca; path; path = path == ca ? crt : path == crt ? key : NULL) {
		FILE *t = fopen(path, "w");
		fputs("-\n", t);
		fclose(t);
		chmod(path, path == key ? 0600 : 0644);
	}
	snprintf(extra, sizeof(extra),
		 "witness = https://e1:2379\nwitness_ca = %s\nwitness_cert = %s\nwitness_key = %s\n", ca,
		 crt, key);
	load_ok(extra, 1, BACKUP_LOSS_CONTINUE, 2000);
	load_bad(7, "witness = https://e1:2379\n",
		 "witness: an https:// URL needs witness_ca (the CA of etcd's certificates)");
	snprintf(extra, sizeof(extra), "witness = http://e1:2379\nwitness_ca = %s\n", ca);
	load_bad(8, extra,
		 "witness_ca, witness_cert and witness_key are for an https:// witness, and none is "
		 "configured");
	snprintf(extra, sizeof(extra), "witness = https://e1:2379\nwitness_ca = %s\nwitness_cert = %s\n",
		 ca, crt);
	load_bad(9, extra, "witness_cert and witness_key go together (the client certificate and its key)");
	chmod(key, 0644);
	snprintf(extra, sizeof(extra),
		 "witness = https://e1:2379\nwitness_ca = %s\nwitness_cert = %s\nwitness_key = %s\n", ca,
		 crt, key);
	CHECK_INT(config_load_service(service_file(extra), ROLE_PRIMARY, &c, err, sizeof(err)) < 0, 1);
	CHECK_CONTAINS(err, "(witness_key, set in ");
	unlink(ca);
	unlink(crt);
	unlink(key);

	unlink(service_file(""));
	unlink(fence);
	rmdir(tmpdir);
	UNIT_EXIT();
}
