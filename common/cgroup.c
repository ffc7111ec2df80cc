/*
 * cgroup.c - see cgroup.h.
 */
#include "cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on a hybrid host). */
static int v2_mount(char *buf, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (r < 0 && fgets(line, sizeof(line), f)) {
		char mnt[PATH_MAX], fstype[64];
		const char *sep = strstr(line, " - ");
		/* id parent major:minor root mountpoint ... - fstype source options */
		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
		    sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "cgroup2") != 0)
			continue;
		snprintf(buf, len, "%s", mnt);
		r = 0;
	}
	fclose(f);
	return r;
}

/* The "0::PATH" line of /proc/PID/cgroup. */
static int v2_path_of(pid_t pid, char *buf, size_t len)
{
	_cleanup_free_ char *text = NULL;
	char file[64];
	const char *p;

	snprintf(file, sizeof(file), "/proc/%d/cgroup", (int)pid);
	int r = read_file(file, &text);
	if (r < 0)
		return r;
	for (p = text; p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, "0::", 3) == 0) {
			snprintf(buf, len, "%.*s", (int)strcspn(p + 3, "\n"), p + 3);
			return 0;
		}
	return -ENOENT;
}

/*
 * Where none is mounted (`ip netns exec` mounts a fresh /sys, without the
 * cgroup file systems under it), we mount the hierarchy ourselves: in a
 * mount namespace of our own, that mount is ours alone.
 */
#define OWN_MOUNT "/run/checksync-cgroup2"

static int locate(struct service_cgroup *cg, char *err, size_t errlen)
{
	char mnt[PATH_MAX];
	int r = v2_mount(mnt, sizeof(mnt));

	if (r < 0) {
		if ((mkdir(OWN_MOUNT, 0700) < 0 && errno != EEXIST) ||
		    mount("cgroup2", OWN_MOUNT, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
			r = -errno;
			snprintf(err, errlen, "no cgroup v2 hierarchy is mounted here, and mounting "
				 "one at %s failed: %s", OWN_MOUNT, strerror(-r));
			return r;
		}
		snprintf(mnt, sizeof(mnt), "%s", OWN_MOUNT);
	}
	if (snprintf(cg->dir, sizeof(cg->dir), "%s%s", mnt, strcmp(cg->path, "/") ? cg->path : "") >=
	    (int)sizeof(cg->dir)) {
		snprintf(err, errlen, "the service's cgroup path is too long");
		return -ENAMETOOLONG;
	}
	return 0;
}

/*
 * A primaryd killed with -9 leaves its service's cgroup behind (empty: the
 * service died with it), and so does every restore (its restorer is gone
 * at once, its service once it ends). Remove those of NAME beside dir
 * whose maker is gone, unless it is a primaryd alive; rmdir refuses any
 * that still holds a process.
 */
static void remove_stale(const char *dir, const char *name)
{
	char parent[PATH_MAX], prefix[300], path[PATH_MAX + 300], comm[64];
	const char *slash = strrchr(dir, '/');
	struct dirent *de;

	snprintf(parent, sizeof(parent), "%.*s", (int)(slash - dir), dir);
	int n = snprintf(prefix, sizeof(prefix), "checksync-%s-", name);
	DIR *d = opendir(parent);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end;
		if (strncmp(de->d_name, prefix, n) != 0)
			continue;
		long pid = strtol(de->d_name + n, &end, 10);
		if (*end || pid == getpid())
			continue;
		_cleanup_free_ char *text = NULL;
		snprintf(comm, sizeof(comm), "/proc/%ld/comm", pid);
		if (read_file(comm, &text) > 0 && strncmp(text, "checksync-prima", 15) == 0)
			continue; /* another primaryd's, alive */
		snprintf(path, sizeof(path), "%s/%s", parent, de->d_name);
		if (rmdir(path) == 0)
			log_info("removed %s, empty and left by a daemon that is gone", path);
	}
	closedir(d);
}

int service_cgroup_make(const char *name, struct service_cgroup *cg, char *err, size_t errlen)
{
	char own[PATH_MAX];
	int r = v2_path_of(getpid(), own, sizeof(own));

	*cg = (struct service_cgroup){0};
	if (r < 0) {
		snprintf(err, errlen, "cannot read primaryd's own cgroup (/proc/self/cgroup): %s",
			 strerror(-r));
		return r;
	}
	if (snprintf(cg->path, sizeof(cg->path), "%s/checksync-%s-%d", strcmp(own, "/") ? own : "",
		     name, (int)getpid()) >= (int)sizeof(cg->path)) {
		snprintf(err, errlen, "primaryd's cgroup path is too long: %s", own);
		return -ENAMETOOLONG;
	}
	if ((r = locate(cg, err, errlen)) < 0)
		return r;
	if (mkdir(cg->dir, 0755) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "cannot make the service's cgroup %s: %s", cg->dir,
			 strerror(-r));
		return r;
	}
	cg->made = true;
	remove_stale(cg->dir, name);
	return 0;
}

int service_cgroup_of(pid_t pid, struct service_cgroup *cg, char *err, size_t errlen)
{
	char own[PATH_MAX];
	int r;

	*cg = (struct service_cgroup){0};
	if ((r = v2_path_of(pid, cg->path, sizeof(cg->path))) < 0 ||
	    (r = v2_path_of(getpid(), own, sizeof(own))) < 0) {
		snprintf(err, errlen, "cannot read the cgroups of pid %d and primaryd: %s",
			 (int)pid, strerror(-r));
		return r;
	}
	size_t n = strlen(cg->path);
	/* Its cgroup holds primaryd if ours is it or below it: our link would be held too. */
	if (strcmp(cg->path, "/") == 0 ||
	    (strncmp(own, cg->path, n) == 0 && (own[n] == 0 || own[n] == '/'))) {
		snprintf(err, errlen, "pid %d is in cgroup %s, which holds primaryd too: output "
			 "commit needs the service in a cgroup of its own", (int)pid, cg->path);
		return -EINVAL;
	}
	return locate(cg, err, errlen);
}

int service_cgroup_enter(const struct service_cgroup *cg, pid_t pid)
{
	char file[PATH_MAX + 16], num[24];
	int n = snprintf(num, sizeof(num), "%d", (int)pid);

	snprintf(file, sizeof(file), "%s/cgroup.procs", cg->dir);
	_cleanup_close_ int fd = open(file, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return write(fd, num, n) == n ? 0 : -errno;
}

void service_cgroup_remove(struct service_cgroup *cg)
{
	if (cg->made && rmdir(cg->dir) < 0 && errno != ENOENT)
		log_warn("cannot remove the service's cgroup %s: %m", cg->dir);
	cg->made = false;
}
