/*
 * dump.c - `checksync-primaryd dump`: one complete image of a live process.
 *
 * Order matters for the pause the service feels: everything that needs the
 * threads held (registers, memory, descriptors, injected reads) happens
 * between capture_seize_all() and capture_release_all(); hashing files and
 * writing the image happen after the service runs again.
 */
#include <fcntl.h>
#include <signal.h>

#include "capture.h"
#include "goruntime.h"
#include "log.h"
#include "util.h"

static int check_go(struct capture *c)
{
	struct go_binary gb;
	int r = go_binary_inspect(c->img->exe, &gb);
	if (r < 0)
		return log_error_errno(r, "cannot read executable %s of pid %d", c->img->exe,
				       c->pid);
	if (!gb.is_go)
		return log_error_errno(-ENOEXEC,
				       "pid %d (%s) is not a Go program (no .go.buildinfo section)",
				       c->pid, c->img->exe);
	return 0;
}

static int capture_held(struct capture *c)
{
	int r;

	c->memfd = tracer_mem_open(c->pid, 0);
	if (c->memfd < 0)
		return log_error_errno(c->memfd, "cannot open memory of pid %d", c->pid);
	ssize_t n = proc_read_maps(c->pid, &c->vmas);
	if (n < 0)
		return log_error_errno(n, "cannot read mappings of pid %d", c->pid);
	c->n_vmas = n;
	r = capture_find_syscall_insn(c, &c->leader->insn);
	if (r < 0)
		return log_error_errno(r, "no syscall instruction found in the vDSO of pid %d",
				       c->pid);
	r = capture_scratch_map(c);
	if (r < 0)
		return log_error_errno(r, "cannot map a scratch page in pid %d", c->pid);
	r = capture_threads(c);
	if (r >= 0)
		r = capture_sigactions(c);
	if (r >= 0)
		r = capture_misc(c);
	capture_scratch_unmap(c);
	if (r < 0)
		return r;
	r = capture_vmas(c);
	if (r >= 0)
		r = capture_pages(c);
	if (r >= 0)
		r = capture_fds(c);
	return r;
}

int capture_dump(pid_t pid, const char *dir, struct dump_report *rep)
{
	_cleanup_image_ struct image *img = image_new();
	struct capture c = {.pid = pid, .img = img, .memfd = -1};
	uint64_t t0 = now_us();
	const char *what;
	int r;

	if (!img)
		return -ENOMEM;
	img->pid = pid;
	if (pid <= 0 || kill(pid, 0) < 0)
		return log_error_errno(-ESRCH, "no process with pid %d", pid);
	r = capture_exe(&c);
	if (r < 0)
		return r;
	r = check_go(&c);
	if (r < 0)
		return r;

	r = capture_seize_all(&c);
	if (r >= 0)
		r = capture_held(&c);
	capture_release_all(&c);
	if (c.memfd >= 0)
		close(c.memfd);
	free(c.vmas);
	free(c.threads);
	if (r < 0)
		return r;
	r = capture_hash_files(img);
	if (r < 0)
		return r;

	r = image_write(img, dir, &what);
	if (r < 0)
		return log_error_errno(r, "cannot %s in %s", what, dir);

	rep->pause_us = c.resume_us - c.stop_us;
	rep->dump_us = now_us() - t0;
	rep->image_bytes = image_size_on_disk(dir);
	rep->pages = img->pages_len / PAGE_SIZE;
	rep->threads = img->n_threads;
	rep->vmas = img->n_vmas;
	rep->fds = img->n_fds;
	return 0;
}
