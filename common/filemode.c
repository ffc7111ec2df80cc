/*
 * filemode.c - see filemode.h.
 */
#include "filemode.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_name(enum file_kind kind)
{
	switch (kind) {
	case FILE_CONFIG:
		return "a configuration file";
	case FILE_CERT:
		return "a certificate";
	case FILE_PRIVATE_KEY:
		return "the key";
	case FILE_PROGRAM:
		return "a hook";
	}
	return "the file";
}

int file_check_trusted(const char *path, enum file_kind kind, char *err, size_t errlen)
{
	struct stat st;
	uid_t me = geteuid();
	unsigned mode;

	if (stat(path, &st) < 0) {
		/* Not there (ENOTDIR: a component is a file, as in /bin/true/x): not ours to judge. */
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		snprintf(err, errlen, "%s: cannot check its owner and mode: %s", path,
			 strerror(errno));
		return -errno;
	}
	mode = st.st_mode & 07777;
	if (st.st_uid != 0 && st.st_uid != me) {
		snprintf(err, errlen, "%s: owned by uid %u, %s must be owned by root%s", path,
			 (unsigned)st.st_uid, kind_name(kind), me ? " or this daemon's uid" : "");
		return -EPERM;
	}
	if (mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "%s: mode %04o, %s must not be writable by %s", path, mode,
			 kind_name(kind), mode & S_IWOTH ? "others" : "its group");
		return -EPERM;
	}
	if (kind == FILE_PRIVATE_KEY && (mode & S_IROTH)) {
		snprintf(err, errlen, "%s: mode %04o, the key must not be readable by others", path,
			 mode);
		return -EPERM;
	}
	return 0;
}
