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

int restore_check_files(const struct image *img, char *err, size_t errlen)
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
		int r = file_sha256(f->path, sum);
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
	map.auxv = (__u64 *)(uintptr_t)restore_scratch_put(r, 1024, mm->auxv, mm->auxv_len);
	uint64_t p = restore_scratch_put(r, 0, &map, sizeof(map));
	long ret = restore_call(r, SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, p, sizeof(map), 0);
	if (ret < 0)
		return log_error_errno(ret, "PR_SET_MM_MAP failed");
	return 0;
}

/* Early: the descriptor table may need the old RLIMIT_NOFILE to hold the old numbers. */
int restore_rlimits(struct restore *r)
{
	for (int i = 0; i < RLIM_NLIMITS; i++)
		if (prlimit(r->pid, i, &r->img->rlimits[i], NULL) < 0)
			log_warn("cannot set rlimit %d: %m", i);
	return 0;
}

int restore_misc(struct restore *r)
{
	const struct image *img = r->img;
	long ret;

	restore_call(r, SYS_umask, img->umask);
	restore_call(r, SYS_personality, img->personality);
	if (img->cwd) {
		uint64_t p = restore_scratch_put(r, 0, img->cwd, strlen(img->cwd) + 1);
		ret = restore_call(r, SYS_chdir, p);
		if (ret < 0)
			log_warn("cannot change to directory %s: %s; staying in /", img->cwd,
				 strerror(-ret));
	}
	return restore_mm_map(r);
}
