/*
 * misc.c - process-wide state: the files behind mappings (checked by hash
 * before anything starts), cwd, umask, personality, rlimits, and the mm
 * fields (code, data, brk, stack, argv, environ, auxv) set in one
 * PR_SET_MM_MAP, which unlike PR_SET_MM field by field needs no
 * CAP_SYS_RESOURCE.
 */
#include <linux/prctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "log.h"
#include "restore.h"
#include "util.h"

static const char *file_type_name(mode_t mode)
{
	return S_ISREG(mode) ? "regular file" : S_ISDIR(mode) ? "directory"
	       : S_ISCHR(mode) ? "character device" : S_ISFIFO(mode) ? "FIFO"
	       : S_ISSOCK(mode) ? "socket" : S_ISBLK(mode) ? "block device" : "special file";
}

/*
 * Only regular files are hashed (file_sha256 refuses anything else): a
 * path that has become a FIFO since the dump would hold the restore on
 * its open until someone wrote to it.
 */
bool restore_known_sha256(const struct restore_known *k, const char *path,
			  const struct file_id *id, uint8_t sum[32])
{
	for (size_t i = 0; k && i < k->n_files; i++)
		if (strcmp(k->files[i].path, path) == 0 && file_id_equal(&k->files[i].id, id)) {
			memcpy(sum, k->files[i].sha256, 32);
			return true;
		}
	return false;
}

static int check_mapped_files(const struct image *img, const struct restore_known *known,
			      char *err, size_t errlen)
{
	for (size_t i = 0; i < img->n_files; i++) {
		const struct image_file *f = &img->files[i];
		const char *what = (int)i == img->exe_file ? "executable" : "mapped file";
		uint8_t sum[32];
		struct stat st;

		if (stat(f->path, &st) < 0) {
			snprintf(err, errlen, "%s %s is missing: %m", what, f->path);
			return -ENOENT;
		}
		if (!S_ISREG(st.st_mode)) {
			snprintf(err, errlen, "%s %s is a %s, not a regular file", what, f->path,
				 file_type_name(st.st_mode));
			return -EINVAL;
		}
		struct file_id id;
		file_id_of(&st, &id);
		int r = restore_known_sha256(known, f->path, &id, sum) ? 0 : file_sha256(f->path, sum);
		if (r < 0) {
			snprintf(err, errlen, "cannot read %s %s: %s", what, f->path, strerror(-r));
			return r;
		}
		if ((uint64_t)st.st_size != f->size || memcmp(sum, f->sha256, 32) != 0) {
			snprintf(err, errlen,
				 "%s %s differs from the one in the image (size %lu, was %lu; "
				 "sha256 differs)",
				 what, f->path, (unsigned long)st.st_size, (unsigned long)f->size);
			return -ESTALE;
		}
	}
	return 0;
}

/* A descriptor's path must still be what it was: a file that is now a FIFO or gone is refused. */
static int check_fd_paths(const struct image *img, char *err, size_t errlen)
{
	for (size_t i = 0; i < img->n_fds; i++) {
		const struct image_fd *f = &img->fds[i];
		struct stat st;

		if ((f->kind != FD_REG && f->kind != FD_CHR) || !f->path)
			continue;
		if (stat(f->path, &st) < 0) {
			snprintf(err, errlen, "fd %d: %s is missing: %m", f->fd, f->path);
			return -ENOENT;
		}
		bool same = f->kind == FD_CHR ? S_ISCHR(st.st_mode)
					      : S_ISREG(st.st_mode) || S_ISDIR(st.st_mode);
		if (!same) {
			snprintf(err, errlen, "fd %d: %s is now a %s, it was a %s", f->fd, f->path,
				 file_type_name(st.st_mode),
				 f->kind == FD_CHR ? "character device" : "regular file");
			return -EINVAL;
		}
	}
	return 0;
}

int restore_check_files(const struct image *img, const struct restore_known *known, char *err,
			size_t errlen)
{
	int r = check_mapped_files(img, known, err, errlen);
	return r < 0 ? r : check_fd_paths(img, err, errlen);
}

static int restore_mm_map(struct restore *r)
{
	const struct image_mm *mm = &r->img->mm;
	struct prctl_mm_map map = {
		.start_code = mm->start_code,
		.end_code = mm->end_code,
		.start_data = mm->start_data,
		.end_data = mm->end_data,
		.start_brk = mm->start_brk,
		.brk = mm->brk,
		.start_stack = mm->start_stack,
		.arg_start = mm->arg_start,
		.arg_end = mm->arg_end,
		.env_start = mm->env_start,
		.env_end = mm->env_end,
		.auxv_size = mm->auxv_len,
		.exe_fd = (uint32_t)-1,
	};
	uint64_t auxv, p;
	int rc = inject_put(&r->inj, 1024, mm->auxv, mm->auxv_len, &auxv);
	if (rc < 0)
		return restore_fail(r, rc, "cannot stage the auxv (%u bytes)", mm->auxv_len);
	map.auxv = (__u64 *)(uintptr_t)auxv;
	rc = inject_put(&r->inj, 0, &map, sizeof(map), &p);
	if (rc < 0)
		return restore_fail(r, rc, "cannot stage the mm map");
	long ret = restore_call(r, SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, p, sizeof(map), 0);
	if (ret < 0)
		return restore_fail(r, ret, "cannot set the mm fields (PR_SET_MM_MAP)");
	return 0;
}

static const char *rlimit_name(int i)
{
	static const char *const names[] = {
		[RLIMIT_CPU] = "RLIMIT_CPU", [RLIMIT_FSIZE] = "RLIMIT_FSIZE",
		[RLIMIT_DATA] = "RLIMIT_DATA", [RLIMIT_STACK] = "RLIMIT_STACK",
		[RLIMIT_CORE] = "RLIMIT_CORE", [RLIMIT_RSS] = "RLIMIT_RSS",
		[RLIMIT_NPROC] = "RLIMIT_NPROC", [RLIMIT_NOFILE] = "RLIMIT_NOFILE",
		[RLIMIT_MEMLOCK] = "RLIMIT_MEMLOCK", [RLIMIT_AS] = "RLIMIT_AS",
		[RLIMIT_LOCKS] = "RLIMIT_LOCKS", [RLIMIT_SIGPENDING] = "RLIMIT_SIGPENDING",
		[RLIMIT_MSGQUEUE] = "RLIMIT_MSGQUEUE", [RLIMIT_NICE] = "RLIMIT_NICE",
		[RLIMIT_RTPRIO] = "RLIMIT_RTPRIO", [RLIMIT_RTTIME] = "RLIMIT_RTTIME",
	};
	return i >= 0 && (size_t)i < ARRAY_SIZE(names) && names[i] ? names[i] : "rlimit";
}

/*
 * Early: the descriptor table may need the old RLIMIT_NOFILE to hold the
 * old numbers. A limit that cannot be set (above our hard limit, without
 * CAP_SYS_RESOURCE) fails the restore, as an unreadable one fails the dump:
 * the service would otherwise run under limits it never had.
 */
int restore_rlimits(struct restore *r)
{
	for (int i = 0; i < RLIM_NLIMITS; i++) {
		const struct rlimit *rl = &r->img->rlimits[i];
		int rc = inject_fault(&r->inj);
		if (rc >= 0 && prlimit(r->pid, i, rl, NULL) < 0)
			rc = -errno;
		if (rc < 0)
			return restore_fail(r, rc, "cannot set %s of pid %d to %llu/%llu (prlimit)",
					    rlimit_name(i), r->pid, (unsigned long long)rl->rlim_cur,
					    (unsigned long long)rl->rlim_max);
	}
	return 0;
}

int restore_misc(struct restore *r)
{
	const struct image *img = r->img;
	long ret = restore_call(r, SYS_umask, img->umask);

	if (ret < 0)
		return restore_fail(r, ret, "cannot set umask %04o (umask)", img->umask);
	ret = restore_call(r, SYS_personality, img->personality);
	if (ret < 0)
		return restore_fail(r, ret, "cannot set personality %#x (personality)",
				    img->personality);
	if (img->cwd) {
		uint64_t p;
		ret = inject_put(&r->inj, 0, img->cwd, strlen(img->cwd) + 1, &p);
		if (ret < 0)
			return restore_fail(r, ret, "cannot stage the directory %s", img->cwd);
		ret = restore_call(r, SYS_chdir, p);
		/* A directory gone on this host is not worth the service; a husk gone is. */
		bool gone = ret == -ENOENT || ret == -ENOTDIR || ret == -EACCES;
		if (ret < 0 && !gone)
			return restore_fail(r, ret, "cannot change to directory %s (chdir)",
					    img->cwd);
		if (ret < 0)
			log_warn("cannot change to directory %s: %s; staying in /", img->cwd,
				 strerror(-ret));
	}
	return restore_mm_map(r);
}
