/*
 * misc.c - process-wide state that is neither memory, threads, signals nor
 * files: the executable and the files behind mappings (with their hashes),
 * cwd, umask, rlimits, personality, and the mm fields PR_SET_MM_MAP takes.
 *
 * Rlimits come from /proc/PID/limits, not prlimit(): prlimit() of a process
 * of another uid needs CAP_SYS_RESOURCE, which root may lack (it does in
 * containers), while the file is readable by all.
 */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "capture.h"
#include "log.h"
#include "util.h"

int capture_exe(struct capture *c)
{
	struct image *img = c->img;
	char exe[4096];

	int r = proc_readlink(c->pid, "exe", exe, sizeof(exe));
	if (r < 0)
		return log_error_errno(r == -ENOENT ? -ESRCH : r, "no process with pid %d", c->pid);
	size_t l = strlen(exe);
	if (l > 10 && strcmp(exe + l - 10, " (deleted)") == 0)
		return log_error_errno(-ENOENT, "the executable of pid %d was deleted (%s)",
				       c->pid, exe);
	img->exe = strdup(exe);
	if (!img->exe)
		return -ENOMEM;
	img->exe_file = image_add_file(img, exe);
	return img->exe_file < 0 ? img->exe_file : 0;
}

static const struct image_file *cached_hash(const struct file_cache *fc, const char *path,
					    uint64_t size)
{
	for (size_t k = 0; fc && k < fc->n; k++)
		if (fc->v[k].size == size && strcmp(fc->v[k].path, path) == 0)
			return &fc->v[k];
	return NULL;
}

static int remember_hash(struct file_cache *fc, const struct image_file *f)
{
	struct image_file *e = array_push(&fc->v, &fc->n, &fc->cap, sizeof(*e));
	if (!e)
		return -ENOMEM;
	*e = *f;
	e->path = strdup(f->path);
	return e->path ? 0 : -ENOMEM;
}

int capture_hash_files(struct image *img, struct file_cache *cache)
{
	for (size_t i = 0; i < img->n_files; i++) {
		struct image_file *f = &img->files[i];
		struct stat st;
		if (stat(f->path, &st) < 0)
			return log_error_errno(-errno, "cannot stat mapped file %s", f->path);
		f->size = st.st_size;
		const struct image_file *known = cached_hash(cache, f->path, f->size);
		if (known) {
			memcpy(f->sha256, known->sha256, 32);
			continue;
		}
		int r = file_sha256(f->path, f->sha256);
		if (r < 0)
			return log_error_errno(r, "cannot hash mapped file %s", f->path);
		if (cache && (r = remember_hash(cache, f)) < 0)
			return r;
	}
	return 0;
}

void capture_file_cache_free(struct file_cache *fc)
{
	for (size_t i = 0; i < fc->n; i++)
		free(fc->v[i].path);
	free(fc->v);
	memset(fc, 0, sizeof(*fc));
}

static int capture_mm(struct capture *c)
{
	struct image_mm *mm = &c->img->mm;
	uint64_t st[52];
	char path[64];
	long brk;
	int r;

	r = proc_stat_fields(c->pid, st, 52);
	if (r < 0)
		return r;
	mm->start_code = st[25];
	mm->end_code = st[26];
	mm->start_stack = st[27];
	mm->start_data = st[44];
	mm->end_data = st[45];
	mm->start_brk = st[46];
	mm->arg_start = st[47];
	mm->arg_end = st[48];
	mm->env_start = st[49];
	mm->env_end = st[50];

	/* The current break is in no /proc file; brk(0) from inside returns it. */
	uint64_t heap_end = 0;
	for (size_t i = 0; i < c->n_vmas; i++)
		if (c->vmas[i].kind == VMA_HEAP)
			heap_end = c->vmas[i].end;
	if (c->cache && c->cache_ok && c->cache->heap_end == heap_end) {
		mm->brk = c->cache->brk;
	} else {
		r = tracer_call(c->leader, &brk, SYS_brk, 0);
		if (r < 0)
			return r;
		mm->brk = brk;
		if (c->cache) {
			c->cache->brk = brk;
			c->cache->heap_end = heap_end;
		}
	}

	snprintf(path, sizeof(path), "/proc/%d/auxv", c->pid);
	_cleanup_free_ char *auxv = NULL;
	ssize_t n = read_file(path, &auxv);
	if (n < 0)
		return n;
	mm->auxv = (uint8_t *)TAKE_PTR(auxv);
	mm->auxv_len = n;
	return 0;
}

/* One row per RLIMIT_* in index order: a 25-column name, then soft and hard ("unlimited" or a number). */
static int capture_rlimits(struct capture *c)
{
	char path[64];
	_cleanup_free_ char *buf = NULL;

	snprintf(path, sizeof(path), "/proc/%d/limits", c->pid);
	ssize_t n = read_file(path, &buf);
	if (n < 0)
		return n;
	char *line = strchr(buf, '\n'); /* the header */
	for (int i = 0; i < RLIM_NLIMITS; i++) {
		if (!line || strlen(++line) < 26)
			return log_error_errno(-EBADMSG, "%s: no row for rlimit %d", path, i);
		char *p = line + 26, *end;
		rlim_t v[2];
		for (int k = 0; k < 2; k++) {
			while (*p == ' ')
				p++;
			if (strncmp(p, "unlimited", 9) == 0) {
				v[k] = RLIM_INFINITY;
				end = p + 9;
			} else {
				v[k] = strtoull(p, &end, 10);
				if (end == p)
					return log_error_errno(-EBADMSG, "%s: row %d is not a limit",
							       path, i + 1);
			}
			p = end;
		}
		c->img->rlimits[i] = (struct rlimit){.rlim_cur = v[0], .rlim_max = v[1]};
		line = strchr(line, '\n');
	}
	return 0;
}

int capture_misc(struct capture *c)
{
	struct image *img = c->img;
	char buf[4096];
	uint64_t v;
	int r;

	r = capture_mm(c);
	if (r < 0)
		return log_error_errno(r, "cannot read the memory layout of pid %d", c->pid);
	r = proc_readlink(c->pid, "cwd", buf, sizeof(buf));
	if (r < 0)
		return log_error_errno(r, "cannot read cwd of pid %d", c->pid);
	img->cwd = strdup(buf);
	if (proc_status_field(c->pid, "Umask", 8, &v) == 0)
		img->umask = v;
	snprintf(buf, sizeof(buf), "/proc/%d/personality", c->pid);
	_cleanup_free_ char *pers = NULL;
	if (read_file(buf, &pers) > 0)
		img->personality = strtoul(pers, NULL, 16);
	r = capture_rlimits(c);
	if (r < 0)
		return log_error_errno(r, "cannot read the rlimits of pid %d", c->pid);
	r = capture_dumpable(c);
	if (r < 0)
		return r;
	return capture_clocks(c);
}
