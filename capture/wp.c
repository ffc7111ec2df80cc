/*
 * wp.c - which pages were written since the last epoch, from the kernel:
 * userfaultfd write-protect in asynchronous mode, read and re-armed in one
 * PAGEMAP_SCAN (the "uffd" dirty-tracking method).
 *
 * No soft-dirty bits on this kernel, so this is the kernel's only record
 * of writes. The userfaultfd is created inside the service by an injected
 * syscall, taken over with pidfd_getfd() and closed in the service again:
 * the service's fd table never shows it, and the context lives on with our
 * copy. In async mode a write to a protected page is resolved by the
 * kernel itself (the service never blocks on us) and only marks the page
 * written. Each first write per page per epoch costs one fault (~20 us on
 * this VM): cheaper than hashing when little of the heap changes, dearer
 * when most of it does; bench/ measures both.
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "capture.h"
#include "image/image.h"
#include "log.h"
#include "pagemap.h"
#include "util.h"
#include "wp.h"

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

bool wp_vma_tracked(const struct proc_vma *v)
{
	return vma_carries_contents(v->shared, v->kind) && (v->prot & PROT_WRITE);
}

/* Create the userfaultfd inside the stopped service and take it. */
static int wp_create(struct capture *c, struct wp_tracker *w)
{
	long fd;
	int r = tracer_call(c->leader, &fd, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK |
			    UFFD_USER_MODE_ONLY);
	if (r < 0)
		return r;
	if (fd < 0)
		return log_error_errno((int)fd, "userfaultfd() in pid %d failed", c->pid);
	_cleanup_close_ int pidfd = syscall(SYS_pidfd_open, c->pid, 0);
	w->uffd = pidfd < 0 ? -errno : (int)syscall(SYS_pidfd_getfd, pidfd, (int)fd, 0);
	long ret;
	tracer_call(c->leader, &ret, SYS_close, fd);
	if (w->uffd < 0)
		return log_error_errno(-errno, "cannot take the userfaultfd of pid %d", c->pid);

	struct uffdio_api api = {.api = UFFD_API,
				 .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
	if (ioctl(w->uffd, UFFDIO_API, &api) < 0)
		return log_error_errno(-errno, "userfaultfd: asynchronous write-protect "
				       "unsupported by this kernel");
	w->seq += 2;
	return 0;
}

static int add_range(struct wp_tracker *w, uint64_t s, uint64_t e)
{
	return range_append(&w->dirty, &w->n, &w->cap, s, e);
}

/* Start tracking [s, e): register, protect. Everything in it counts as written now. */
static int track_range(struct wp_tracker *w, uint64_t s, uint64_t e)
{
	struct uffdio_register reg = {.range = {.start = s, .len = e - s},
				      .mode = UFFDIO_REGISTER_MODE_WP};
	if (ioctl(w->uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	struct uffdio_writeprotect wp = {.range = {.start = s, .len = e - s},
					 .mode = UFFDIO_WRITEPROTECT_MODE_WP};
	if (ioctl(w->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return -errno;
	w->newly_tracked += e - s;
	return add_range(w, s, e);
}

static int track_cb(void *w, uint64_t s, uint64_t e)
{
	return track_range(w, s, e);
}

static int written_cb(void *w, uint64_t s, uint64_t e)
{
	return add_range(w, s, e);
}

/*
 * Scan [s, e) of a tracked mapping: ranges not yet registered (new or
 * changed mappings) are registered and count as written; written pages are
 * reported and protected again in the same call.
 */
static int scan_vma(struct wp_tracker *w, int pagemap_fd, uint64_t s, uint64_t e)
{
	const struct pm_scan_arg unregistered = {
		.category_inverted = PAGE_IS_WPALLOWED,
		.category_mask = PAGE_IS_WPALLOWED,
		.return_mask = PAGE_IS_WPALLOWED,
	};
	const struct pm_scan_arg written = {
		.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	int r = pagemap_scan(pagemap_fd, &unregistered, s, e, track_cb, w);
	return r < 0 ? r : pagemap_scan(pagemap_fd, &written, s, e, written_cb, w);
}

/* Sort the written ranges and merge those that touch or overlap. */
static void sort_merge(struct wp_tracker *w)
{
	range_normalize(w->dirty, &w->n);
}

static int carry_push(struct wp_tracker *w, uint64_t s, uint64_t e)
{
	return range_append(&w->carry, &w->n_carry, &w->cap_carry, s, e);
}

int wp_carry_unshipped(struct wp_tracker *w, const struct image *img)
{
	size_t k = 0;

	w->n_carry = 0;
	for (size_t i = 0; i < w->n; i++) {
		uint64_t s = w->dirty[i].s, e = w->dirty[i].e;
		while (k < img->n_runs && img->runs[k].addr + img->runs[k].npages * PAGE_SIZE <= s)
			k++;
		for (size_t j = k; s < e; j++) {
			if (j == img->n_runs || img->runs[j].addr >= e) {
				if (carry_push(w, s, e) < 0)
					return -ENOMEM;
				break;
			}
			uint64_t rs = img->runs[j].addr, re = rs + img->runs[j].npages * PAGE_SIZE;
			if (rs > s && carry_push(w, s, rs) < 0)
				return -ENOMEM;
			if (re > s)
				s = re;
		}
	}
	return 0;
}

static int scan_running(struct wp_tracker *w, pid_t pid, const struct proc_vma *vmas, size_t n)
{
	char path[64];
	int r;

	w->n = 0;
	w->newly_tracked = 0;
	if (w->uffd < 0)
		return -EBADF;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	_cleanup_close_ int pfd = open(path, O_RDONLY | O_CLOEXEC);
	if (pfd < 0)
		return -errno;
	for (size_t i = 0; i < n; i++) {
		const struct proc_vma *v = &vmas[i];
		if (!wp_vma_tracked(v))
			continue;
		r = scan_vma(w, pfd, v->start, v->end);
		/* A mapping that went away under a running process is simply not there. */
		if (r == -ENOMEM || r == -EINVAL || r == -ENOENT)
			continue;
		if (r < 0)
			return log_error_errno(r, "write tracking of %#lx-%#lx failed",
					       (unsigned long)v->start, (unsigned long)v->end);
	}
	sort_merge(w);
	return 0;
}

void wp_note_lost(struct wp_tracker *w)
{
	w->seq += 2;
}

/* A scan that worked is one step of seq; one that failed is a gap (wp.h, seq). */
static int count_scan(struct wp_tracker *w, int r)
{
	if (r < 0)
		wp_note_lost(w);
	else
		w->seq++;
	return r;
}

int wp_scan_running(struct wp_tracker *w, pid_t pid, const struct proc_vma *vmas, size_t n)
{
	return count_scan(w, scan_running(w, pid, vmas, n));
}

int wp_open(struct capture *c, struct wp_tracker *w)
{
	return w->uffd < 0 ? wp_create(c, w) : 0;
}

/* Keep a copy of the ranges the scans found, before what is owed joins them. */
static int keep_fresh(struct wp_tracker *w)
{
	w->n_fresh = 0;
	if (w->n > w->cap_fresh) {
		struct range *f = realloc(w->fresh, w->n * sizeof(*f));
		if (!f)
			return -ENOMEM;
		w->fresh = f;
		w->cap_fresh = w->n;
	}
	if (w->n)
		memcpy(w->fresh, w->dirty, w->n * sizeof(*w->dirty));
	w->n_fresh = w->n;
	return 0;
}

int wp_owe(struct wp_tracker *w, const struct range *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct range *r = array_push(&w->carry, &w->n_carry, &w->cap_carry, sizeof(*r));
		if (!r)
			return -ENOMEM;
		*r = v[i];
	}
	range_normalize(w->carry, &w->n_carry);
	return 0;
}

static int collect(struct capture *c, struct wp_tracker *w)
{
	int r;

	if (w->uffd < 0 && (r = wp_create(c, w)) < 0)
		return r;
	w->n = 0;
	w->newly_tracked = 0;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", c->pid);
	_cleanup_close_ int pfd = open(path, O_RDONLY | O_CLOEXEC);
	if (pfd < 0)
		return -errno;
	for (size_t i = 0; i < c->n_vmas; i++) {
		const struct proc_vma *v = &c->vmas[i];
		if (!wp_vma_tracked(v))
			continue;
		r = scan_vma(w, pfd, v->start, v->end);
		if (r < 0)
			return log_error_errno(r, "write tracking of %#lx-%#lx failed",
					       (unsigned long)v->start, (unsigned long)v->end);
	}
	sort_merge(w);
	if ((r = keep_fresh(w)) < 0)
		return r;
	/*
	 * A full epoch (no write filter) replaces the backup's image with the
	 * pages it ships, dropping every page it held that is not live now.
	 * Such a page can become live again without a write (a free stack
	 * slot of a stack span, the not yet allocated tail of a reused span):
	 * count every page as written, so that what this epoch does not ship
	 * is carried until it is, as for a mapping tracked for the first time.
	 * test_delta lost such pages without this. (Not in the fresh ranges:
	 * they were not written, and pre-copy's store holds them.)
	 */
	for (size_t i = 0; !c->wp_filter && i < c->n_vmas; i++)
		if (wp_vma_tracked(&c->vmas[i]) &&
		    (r = add_range(w, c->vmas[i].start, c->vmas[i].end)) < 0)
			return r;
	/* What was written before but not shipped is still owed. */
	for (size_t i = 0; i < w->n_carry; i++)
		if ((r = add_range(w, w->carry[i].s, w->carry[i].e)) < 0)
			return r;
	w->n_carry = 0;
	sort_merge(w);
	return 0;
}

int wp_collect(struct capture *c, struct wp_tracker *w)
{
	return count_scan(w, collect(c, w));
}

int wp_filter(const struct wp_tracker *w, uint64_t s, uint64_t e,
	      int (*emit)(void *ctx, uint64_t s, uint64_t e), void *ctx)
{
	for (size_t i = range_find(w->dirty, w->n, s); i < w->n && w->dirty[i].s < e; i++) {
		uint64_t a = w->dirty[i].s > s ? w->dirty[i].s : s;
		uint64_t b = w->dirty[i].e < e ? w->dirty[i].e : e;
		int r = a < b ? emit(ctx, a, b) : 0;
		if (r < 0)
			return r;
	}
	return 0;
}

void wp_init(struct wp_tracker *w)
{
	memset(w, 0, sizeof(*w));
	w->uffd = -1;
}

void wp_free(struct wp_tracker *w)
{
	uint64_t seq = w->seq + 2; /* never seen again as a continuation */

	if (w->uffd >= 0)
		close(w->uffd);
	free(w->dirty);
	free(w->carry);
	free(w->fresh);
	wp_init(w);
	w->seq = seq;
}
