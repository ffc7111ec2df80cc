/*
 * filemode.h - who may change the files a daemon trusts.
 *
 * A daemon runs as root and acts on its configuration: it runs the hooks
 * it names, trusts the CA it names and proves itself with the key it
 * names. Whoever can write one of those files can make it do anything, and
 * whoever can read the key can pose as this host. So each is checked when
 * the configuration is loaded: owned by root or by the daemon's own uid,
 * writable by its owner only, and a private key readable by no one but its
 * owner and group. A file that does not exist is left to whoever opens it
 * (the TLS layer says "cannot load"; a missing hook fails when run).
 */
#pragma once

#include <stddef.h>

enum file_kind {
	FILE_CONFIG,	  /* a configuration file */
	FILE_CERT,	  /* a CA or certificate file */
	FILE_PRIVATE_KEY, /* a private key */
	FILE_PROGRAM,	  /* a hook the daemon runs */
};

/*
 * 0 if path (followed through symlinks) is safe to trust as kind, or
 * -EPERM with err saying "PATH: what is wrong", or -errno if it cannot be
 * looked at (not -ENOENT or -ENOTDIR: a missing file is 0).
 */
int file_check_trusted(const char *path, enum file_kind kind, char *err, size_t errlen);
