/*
 * proc.c - parsers for /proc/PID files.
 */
#include "proc.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/ptrace.h>
#include <sys/mman.h>

#include "image/image.h"
#include "util.h"

static uint32_t vma_kind_of(const char *path)
{
	static const struct {
		const char *name;
		uint32_t kind;
	} special[] = {
		{"[heap]", VMA_HEAP},	  {"[stack]", VMA_STACK},
		{"[vdso]", VMA_VDSO},	  {"[vvar]", VMA_VVAR},
		{"[vvar_vclock]", VMA_VVAR_VCLOCK}, {"[vsyscall]", VMA_VSYSCALL},
	};
	for (size_t i = 0; i < ARRAY_SIZE(special); i++)
		if (strcmp(path, special[i].name) == 0)
			return special[i].kind;
	return path[0] == '/' ? VMA_FILE : VMA_ANON;
}

/*
 * One line of /proc/PID/maps: "start-end perms offset dev inode   path".
 * Parsed by hand: sscanf() and a FILE's 4 KiB reads were most of the
 * 0.2 ms each stop spent here (94 mappings, measured, loaded machine).
 */
static int parse_maps_line(char *line, struct proc_vma *e)
{
	char *p = line, *end;

	e->start = strtoul(p, &end, 16);
	if (end == p || *end != '-')
		return -EINVAL;
	p = end + 1;
	e->end = strtoul(p, &end, 16);
	if (end == p || *end != ' ' || strlen(end) < 6)
		return -EINVAL;
	p = end + 1;
	e->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) |
		  (p[2] == 'x' ? PROT_EXEC : 0);
	e->shared = p[3] == 's';
	p = strchr(p, ' ');
	if (!p)
		return -EINVAL;
	e->pgoff = strtoul(p + 1, &end, 16);
	if (end == p + 1 || *end != ' ')
		return -EINVAL;
	/* dev, inode, then blanks up to the path (if any) */
	p = strchr(end + 1, ' ');
	if (!p)
		return -EINVAL;
	strtoul(p + 1, &end, 10);
	if (end == p + 1)
		return -EINVAL;
	p = end + strspn(end, " ");
	size_t plen = strlen(p);
	if (plen > 10 && strcmp(p + plen - 10, " (deleted)") == 0) {
		plen -= 10;
		e->deleted = true;
	}
	if (plen >= sizeof(e->path))
		plen = sizeof(e->path) - 1;
	memcpy(e->path, p, plen);
	e->path[plen] = 0;
	e->kind = vma_kind_of(e->path);
	return 0;
}

ssize_t proc_read_maps(pid_t pid, struct proc_vma **out)
{
	char path[64];
	_cleanup_free_ char *buf = NULL;
	struct proc_vma *v = NULL;
	size_t n = 0, cap = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	ssize_t len = read_file(path, &buf);
	if (len < 0)
		return len;
	/* Sized once: a struct proc_vma is 4 KiB, and growing the array copied them. */
	for (char *p = buf; (p = strchr(p, '\n')); p++)
		cap++;
	v = malloc((cap + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (char *line = buf, *next; line && *line && n <= cap; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		struct proc_vma *e = &v[n++];
		/* Not the whole 4 KiB: parse_maps_line() ends the path. */
		memset(e, 0, offsetof(struct proc_vma, path));
		e->deleted = false;
		if (parse_maps_line(line, e) < 0) {
			free(v);
			return -EINVAL;
		}
	}
	*out = v;
	return n;
}

static int cmp_pid(const void *a, const void *b)
{
	return *(const pid_t *)a - *(const pid_t *)b;
}

ssize_t proc_list_tasks(pid_t pid, pid_t **out)
{
	char path[64];
	struct dirent *de;
	pid_t *t = NULL;
	size_t n = 0, cap = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		pid_t *e = array_push(&t, &n, &cap, sizeof(*e));
		if (!e) {
			closedir(d);
			free(t);
			return -ENOMEM;
		}
		*e = atoi(de->d_name);
	}
	closedir(d);
	qsort(t, n, sizeof(*t), cmp_pid);
	*out = t;
	return n;
}

int proc_stat_fields(pid_t pid, uint64_t *fields, int nfields)
{
	char path[64];
	_cleanup_free_ char *buf = NULL;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	ssize_t r = read_file(path, &buf);
	if (r < 0)
		return r;
	/* comm may hold spaces and parentheses; fields resume after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -EINVAL;
	p += 2;
	memset(fields, 0, nfields * sizeof(*fields));
	for (int i = 3; i <= nfields && *p; i++) {
		if (i == 3) {
			fields[i - 1] = *p;
			p++;
		} else {
			fields[i - 1] = strtoull(p, &p, 10);
		}
		while (*p == ' ')
			p++;
	}
	return 0;
}

int proc_status_fields(pid_t pid, const char *const *keys, size_t n, int base, uint64_t *out)
{
	char path[64];
	_cleanup_free_ char *buf = NULL;
	size_t found = 0;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	ssize_t r = read_file(path, &buf);
	if (r < 0)
		return r;
	for (char *line = buf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : 0)
		for (size_t k = 0; k < n; k++) {
			size_t klen = strlen(keys[k]);
			if (strncmp(line, keys[k], klen) == 0 && line[klen] == ':') {
				out[k] = strtoull(line + klen + 1, NULL, base);
				found++;
			}
		}
	return found == n ? 0 : -ENOENT;
}

int proc_status_field(pid_t pid, const char *key, int base, uint64_t *out)
{
	return proc_status_fields(pid, &key, 1, base, out);
}

int proc_readlink(pid_t pid, const char *what, char *buf, size_t len)
{
	char path[128];
	snprintf(path, sizeof(path), "/proc/%d/%s", pid, what);
	ssize_t r = readlink(path, buf, len - 1);
	if (r < 0)
		return -errno;
	buf[r] = 0;
	return 0;
}

static int parse_ids(const char *v, uint32_t *out[4])
{
	char *end;
	for (int i = 0; i < 4; i++) {
		unsigned long id = strtoul(v, &end, 10);
		if (end == v)
			return -EBADMSG;
		*out[i] = id;
		v = end;
	}
	return 0;
}

static int parse_groups(const char *v, struct image_creds *cr)
{
	size_t n = 0, cap = 0;
	char *end;

	for (;;) {
		unsigned long g = strtoul(v, &end, 10);
		if (end == v)
			break;
		uint32_t *slot = array_push(&cr->groups, &n, &cap, sizeof(*slot));
		if (!slot)
			return -ENOMEM;
		*slot = g;
		v = end;
	}
	cr->n_groups = n;
	return n > IMAGE_GROUPS_MAX ? -E2BIG : 0;
}

int proc_task_creds(pid_t pid, pid_t tid, struct image_creds *cr, int seccomp[2])
{
	char path[96];
	_cleanup_free_ char *buf = NULL;
	unsigned found = 0;
	int r = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", pid, tid);
	ssize_t n = read_file(path, &buf);
	if (n < 0)
		return n;
	seccomp[0] = seccomp[1] = 0;
	free(cr->groups);
	cr->groups = NULL;
	cr->n_groups = 0;
	for (char *line = buf, *next; line && *line && r >= 0; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0; /* a field's parser must not run into the next line */
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		const char *v = colon + 1;
		size_t klen = colon - line;
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(line, k, klen) == 0 && ++found)
		if (KEY("Uid"))
			r = parse_ids(v, (uint32_t *[4]){&cr->uid, &cr->euid, &cr->suid, &cr->fsuid});
		else if (KEY("Gid"))
			r = parse_ids(v, (uint32_t *[4]){&cr->gid, &cr->egid, &cr->sgid, &cr->fsgid});
		else if (KEY("Groups"))
			r = parse_groups(v, cr);
		else if (KEY("CapInh"))
			cr->cap_inh = strtoull(v, NULL, 16);
		else if (KEY("CapPrm"))
			cr->cap_prm = strtoull(v, NULL, 16);
		else if (KEY("CapEff"))
			cr->cap_eff = strtoull(v, NULL, 16);
		else if (KEY("CapBnd"))
			cr->cap_bnd = strtoull(v, NULL, 16);
		else if (KEY("CapAmb"))
			cr->cap_amb = strtoull(v, NULL, 16);
		else if (KEY("NoNewPrivs"))
			cr->no_new_privs = strtoul(v, NULL, 10) != 0;
		else if (KEY("Seccomp"))
			seccomp[0] = strtoul(v, NULL, 10);
		else if (KEY("Seccomp_filters"))
			seccomp[1] = strtoul(v, NULL, 10);
#undef KEY
	}
	if (r < 0)
		return r;
	return found == 11 ? 0 : -EBADMSG;
}

int self_seccomp_filters(void)
{
	struct image_creds self = {0};
	int seccomp[2];
	int r = proc_task_creds(getpid(), gettid(), &self, seccomp);

	free(self.groups);
	if (r < 0)
		return r;
	return seccomp[0] == 2 ? seccomp[1] : 0;
}

int task_seccomp_filters(pid_t tid, int first, int n, struct image_creds *cr)
{
	if (first < 0 || first > n || n - first > IMAGE_SECCOMP_FILTERS_MAX)
		return -E2BIG;
	cr->filters = calloc(n - first, sizeof(*cr->filters));
	if (n > first && !cr->filters)
		return -ENOMEM;
	cr->n_filters = n - first;
	for (int i = first; i < n; i++) {
		/*
		 * Index 0 is the oldest filter (the kernel counts back from the
		 * newest to the n-th from the start, whatever ptrace(2) says), which
		 * is the order images keep them in: the order to install them.
		 */
		struct image_seccomp_filter *f = &cr->filters[i - first];
		long len = ptrace(PTRACE_SECCOMP_GET_FILTER, tid, i, NULL);
		if (len < 0)
			return -errno;
		if (len == 0 || len > IMAGE_SECCOMP_INSNS_MAX)
			return -E2BIG;
		f->insns = calloc(len, 8);
		if (!f->insns)
			return -ENOMEM;
		f->len = len;
		if (ptrace(PTRACE_SECCOMP_GET_FILTER, tid, i, f->insns) != len)
			return -EIO;
		struct __ptrace_seccomp_metadata md = {.filter_off = (uint64_t)i};
		if (ptrace(PTRACE_SECCOMP_GET_METADATA, tid, sizeof(md), &md) == sizeof(md))
			f->flags = md.flags;
	}
	return 0;
}

int proc_ns_inode(pid_t pid, const char *which, uint64_t *ino)
{
	char path[64];
	struct stat st;
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, which);
	else
		snprintf(path, sizeof(path), "/proc/self/ns/%s", which);
	if (stat(path, &st) < 0)
		return -errno;
	*ino = st.st_ino;
	return 0;
}

int proc_timens_offsets(pid_t pid, int64_t off[2])
{
	char path[64];
	_cleanup_free_ char *buf = NULL;
	uint64_t self, children;
	int r = proc_ns_inode(pid, "time", &self);

	if (r >= 0)
		r = proc_ns_inode(pid, "time_for_children", &children);
	if (r < 0)
		return r;
	if (self != children)
		return -ENOTUNIQ;
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/timens_offsets", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/timens_offsets");
	ssize_t n = read_file(path, &buf);
	if (n < 0)
		return n;
	off[0] = off[1] = 0;
	/* "monotonic SEC NSEC" and "boottime SEC NSEC", NSEC in [0, 1e9) even for negative offsets. */
	for (char *line = buf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : 0) {
		char name[32];
		long long sec;
		long nsec;
		if (sscanf(line, "%31s %lld %ld", name, &sec, &nsec) != 3)
			return -EBADMSG;
		if (strcmp(name, "monotonic") == 0)
			off[0] = sec * 1000000000LL + nsec;
		else if (strcmp(name, "boottime") == 0)
			off[1] = sec * 1000000000LL + nsec;
	}
	return 0;
}
