/*
 * dump.c - `checksync-primaryd dump`: one complete image of a live process.
 *
 * Order matters for the pause the service feels: everything that needs the
 * threads held (registers, memory, descriptors, injected reads) happens
 * between capture_stop_all() and capture_release_all(); hashing files and
 * writing the image happen after the service runs again.
 *
 * Live capture needs the runtime at a safepoint. When the threads are
 * caught elsewhere they run again for a moment and are stopped again, a
 * bounded number of times; past that the dump copies whole mappings,
 * which is always consistent, only larger.
 */
#include <fcntl.h>
#include <signal.h>
#include <time.h>

#include "capture.h"
#include "reach.h"
#include "wp.h"
#include "goruntime.h"
#include "log.h"
#include "util.h"

#define SAFEPOINT_TRIES 12
#define SAFEPOINT_BACKOFF_US 500
#define SAFEPOINT_BACKOFF_MAX_US 20000

static int check_go(struct capture *c)
{
	struct go_binary gb;
	int r = go_binary_inspect(c->img->exe, NULL, &gb);
	if (r < 0)
		return log_error_errno(r, "cannot read executable %s of pid %d", c->img->exe,
				       c->pid);
	if (!gb.is_go)
		return log_error_errno(-ENOEXEC,
				       "pid %d (%s) is not a Go program (no .go.buildinfo section)",
				       c->pid, c->img->exe);
	return 0;
}

static void sleep_us(uint64_t us)
{
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

/* Returns 1 when held at a safepoint, 0 when the capture must copy whole mappings. */
static int reach_safepoint(struct capture *c)
{
	uint64_t backoff = SAFEPOINT_BACKOFF_US;
	char why[128];
	int r;

	if (c->whole || !c->go) {
		c->stats.mode = c->whole ? "whole" : "whole (no DWARF)";
		return 0;
	}
	for (unsigned tries = 0;; tries++) {
		r = capture_at_safepoint(c, why, sizeof(why));
		if (r < 0)
			return log_error_errno(r, "cannot read the Go runtime's state in pid %d",
					       c->pid);
		if (r > 0) {
			c->stats.safepoint_tries = tries;
			c->stats.mode = "live";
			return 1;
		}
		if (tries + 1 >= SAFEPOINT_TRIES)
			break;
		log_debug("not at a safepoint (%s); letting it run %lu us", why,
			  (unsigned long)backoff);
		r = capture_resume_all(c);
		if (r < 0)
			return r;
		sleep_us(backoff);
		if (c->between_tries)
			c->between_tries(c, c->between_ctx);
		backoff = backoff * 2 > SAFEPOINT_BACKOFF_MAX_US ? SAFEPOINT_BACKOFF_MAX_US
								 : backoff * 2;
		r = capture_stop_all(c);
		if (r < 0)
			return r;
	}
	log_info("no safepoint after %d tries (%s): copying whole mappings", SAFEPOINT_TRIES, why);
	c->stats.safepoint_tries = SAFEPOINT_TRIES;
	c->stats.fallback = 1;
	c->stats.mode = "whole (no safepoint)";
	return 0;
}

#define STEP(c, name) log_debug("%-12s at %6lu us", name, (unsigned long)(now_us() - (c)->stop_us))

bool capture_cache_usable(struct capture *c)
{
	struct inject_cache *k = c->cache;
	uint64_t masks[2];

	if (!k || !k->valid || k->epochs >= CACHE_REFRESH_EPOCHS)
		return false;
	if (capture_signal_masks(c, masks) < 0)
		return false;
	return masks[0] == k->sig_caught && masks[1] == k->sig_ignored;
}

/*
 * Charge the time since the last lap to phase: wall time, and our thread's
 * CPU time (on a loaded machine the wall time is mostly others' work).
 */
static void lap(struct capture *c, enum capture_phase phase, uint64_t *mark)
{
	uint64_t t = now_us(), cpu = thread_cpu_us();
	c->stats.phase_us[phase] += t - *mark;
	if (c->stats.cpu_mark)
		c->stats.phase_cpu_us[phase] += cpu - c->stats.cpu_mark;
	c->stats.cpu_mark = cpu;
	*mark = t;
}

int capture_held(struct capture *c)
{
	uint64_t mark = now_us();

	/* Epochs reuse one struct capture: drop the last epoch's view first. */
	free(c->vmas);
	c->vmas = NULL;
	c->n_vmas = 0;
	capture_live_free(c);
	memset(&c->stats, 0, sizeof(c->stats));
	c->stats.cpu_mark = thread_cpu_us();
	reach_stop_begin(c);

	int r = reach_safepoint(c);
	lap(c, CPH_SAFEPOINT, &mark);
	STEP(c, "safepoint");
	if (r < 0)
		return r;
	ssize_t n = proc_read_maps(c->pid, &c->vmas);
	if (n < 0)
		return log_error_errno(n, "cannot read mappings of pid %d", c->pid);
	c->n_vmas = n;
	lap(c, CPH_LIVE_SET, &mark);
	/*
	 * Written ranges first: the live set re-reads only the mspans whose
	 * pages they hold (live.c's span cache). Nothing writes in between, the
	 * threads are held.
	 */
	int rc = capture_find_syscall_insn(c, &c->leader->insn);
	if (rc < 0)
		return log_error_errno(rc, "no syscall instruction found in the vDSO of pid %d",
				       c->pid);
	if (c->wp) {
		rc = wp_collect(c, c->wp);
		if (rc < 0)
			return rc;
		STEP(c, "written");
	}
	lap(c, CPH_DIRTY_SCAN, &mark);
	if (r > 0) {
		r = capture_live_set(c);
		if (r < 0)
			return log_error_errno(r, "cannot read the Go heap metadata of pid %d",
					       c->pid);
	}
	lap(c, CPH_LIVE_SET, &mark);
	STEP(c, "live set");
	c->cache_ok = capture_cache_usable(c);
	r = capture_threads(c);
	if (r >= 0)
		r = capture_sigactions(c);
	if (r >= 0)
		r = capture_misc(c);
	capture_scratch_unmap(c);
	if (c->cache && r >= 0) {
		c->cache->epochs = c->cache_ok ? c->cache->epochs + 1 : 0;
		c->cache->valid = true;
	}
	lap(c, CPH_THREADS, &mark);
	STEP(c, "threads");
	if (r < 0)
		return r;
	r = capture_vmas(c);
	if (r >= 0)
		r = capture_pages(c);
	lap(c, CPH_COPY, &mark);
	STEP(c, "pages");
	if (r >= 0)
		r = capture_fds(c);
	lap(c, CPH_FDS, &mark);
	STEP(c, "fds");
	return r;
}

void capture_cleanup(struct capture *c)
{
	if (c->memfd >= 0)
		close(c->memfd);
	capture_live_free(c);
	capture_memcache_free(c);
	capture_reach_free(c);
	free(c->go);
	free(c->vmas);
	free(c->threads);
}

int capture_dump(pid_t pid, const char *dir, const struct dump_options *opt,
		 struct dump_report *rep)
{
	_cleanup_image_ struct image *img = image_new();
	struct capture c = {.pid = pid,
			    .img = img,
			    .memfd = -1,
			    .whole = opt->whole,
			    .debug_file = opt->debug_file,
			    .debug_root = opt->debug_root};
	uint64_t t0 = now_us();
	const char *what;
	int r;

	if (!img)
		return -ENOMEM;
	img->pid = pid;
	if (pid <= 0 || kill(pid, 0) < 0)
		return log_error_errno(-ESRCH, "no process with pid %d", pid);
	r = capture_exe(&c);
	if (r >= 0)
		r = check_go(&c);
	if (r >= 0 && !c.whole)
		r = capture_load_layout(&c);
	if (r >= 0)
		r = capture_staging_prepare(&c, capture_staging_estimate(pid));
	if (r >= 0) {
		c.memfd = tracer_mem_open(pid, 0);
		if (c.memfd < 0)
			r = log_error_errno(c.memfd, "cannot open memory of pid %d", pid);
	}
	if (r < 0) {
		capture_cleanup(&c);
		return r;
	}

	r = capture_stop_all(&c);
	if (r >= 0)
		r = capture_held(&c);
	capture_release_all(&c);
	capture_live_set_end(&c);
	/* The process runs again; it is still ours to read (allocBits), and the image is complete. */
	if (r >= 0 && !c.whole)
		r = capture_reach(&c, true);
	if (r >= 0)
		capture_reach_drop_zero_pages(&c);
	rep->stats = c.stats;
	rep->debuginfo = c.debuginfo;
	capture_cleanup(&c);
	if (r < 0)
		return r;
	r = capture_hash_files(img, NULL);
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
