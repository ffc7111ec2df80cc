/*
 * mem.c - the address space: the mapping table and the pages worth keeping.
 *
 * Only anonymous pages that exist are copied: PAGEMAP_SCAN reports them as
 * ranges in one call per mapping, so Go's large reserved but untouched
 * arenas cost nothing, and pages still identical to their file (text,
 * rodata) are re-read from the file at restore instead of shipped.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#include "capture.h"
#include "inject.h"
#include "log.h"
#include "pagemap.h"
#include "util.h"
#include "precopy.h"
#include "wp.h"

int capture_find_syscall_insn(struct capture *c, uint64_t *insn)
{
	return inject_find_syscall_insn(c->memfd, c->vmas, c->n_vmas, insn);
}

struct injector capture_injector(struct capture *c)
{
	return (struct injector){.t = c->leader, .memfd = c->memfd, .scratch = c->scratch,
				 .scratch_len = c->scratch ? PAGE_SIZE : 0};
}

int capture_scratch_get(struct capture *c, uint64_t *addr)
{
	if (!c->scratch) {
		struct injector in = capture_injector(c);
		int r = inject_scratch_map(&in, PAGE_SIZE);
		if (r < 0)
			return r;
		c->scratch = in.scratch;
	}
	*addr = c->scratch;
	return 0;
}

void capture_scratch_unmap(struct capture *c)
{
	struct injector in = capture_injector(c);
	(void)inject_scratch_unmap(&in); /* the process runs on with one spare page at worst */
	c->scratch = 0;
}

int capture_vmas(struct capture *c)
{
	struct image *img = c->img;

	for (size_t i = 0; i < c->n_vmas; i++) {
		const struct proc_vma *pv = &c->vmas[i];
		if (pv->kind == VMA_VSYSCALL)
			continue;
		if (pv->deleted)
			return log_error_errno(-ENOTSUP,
					       "mapping %#lx-%#lx is of deleted file %s, which "
					       "cannot be restored",
					       (unsigned long)pv->start, (unsigned long)pv->end,
					       pv->path);
		if (pv->shared && pv->kind != VMA_FILE)
			return log_error_errno(-ENOTSUP,
					       "shared anonymous mapping %#lx-%#lx (%s) is not "
					       "supported",
					       (unsigned long)pv->start, (unsigned long)pv->end,
					       pv->path[0] ? pv->path : "anon");
		struct image_vma *v = array_push(&img->vmas, &img->n_vmas, &img->cap_vmas,
						 sizeof(*v));
		if (!v)
			return -ENOMEM;
		v->start = pv->start;
		v->end = pv->end;
		v->prot = pv->prot;
		v->kind = pv->kind;
		v->shared = pv->shared;
		v->pgoff = pv->pgoff;
		v->file = -1;
		if (pv->kind == VMA_FILE) {
			int f = image_add_file(img, pv->path);
			if (f < 0)
				return f;
			v->file = f;
		}
	}
	return 0;
}

static int add_run(struct image *img, uint64_t s, uint64_t e)
{
	struct image_pagerun *last = img->n_runs ? &img->runs[img->n_runs - 1] : NULL;
	uint64_t np = (e - s) / PAGE_SIZE;

	if (last && last->addr + last->npages * PAGE_SIZE == s) {
		last->npages += np;
		return 0;
	}
	struct image_pagerun *run = array_push(&img->runs, &img->n_runs, &img->cap_runs,
					       sizeof(*run));
	if (!run)
		return -ENOMEM;
	run->addr = s;
	run->npages = np;
	return 0;
}

static int keep_written(void *p, uint64_t s, uint64_t e)
{
	struct capture *c = p;
	c->stats.written[capture_classify(c, s)] += e - s;
	return add_run(c->img, s, e);
}

/* Called for each written page range: the live filter has its say. */
static int keep_live(void *p, uint64_t s, uint64_t e)
{
	struct capture *c = p;
	return capture_live_filter(c, s, e, keep_written, c);
}

struct scan_ctx {
	struct capture *c;
	uint64_t present;
};

static int scanned_range(void *p, uint64_t s, uint64_t e)
{
	struct scan_ctx *sc = p;
	sc->present += e - s;
	/*
	 * Written, then live: the same pages as the other way round, but the
	 * live filter (span metadata, per object) then only sees what was
	 * written, a small part of the heap in most epochs.
	 */
	if (sc->c->wp && sc->c->wp_filter)
		return wp_filter(sc->c->wp, s, e, keep_live, sc->c);
	return capture_live_filter(sc->c, s, e, keep_written, sc->c);
}

/*
 * Scan [start, end) for pages that exist and differ from their file, and
 * pass each range through the live filter. Only a file mapping can hold
 * file pages: asking whether an anonymous mapping's pages are the file's
 * makes the kernel look up each page's struct page, a cache miss per
 * entry, 30 ns a page: 1 ms of each stop over a 120 MB heap.
 */
static int scan_vma(struct capture *c, int pagemap_fd, uint64_t start, uint64_t end, bool file,
		    uint64_t *present)
{
	const uint64_t not_file = file ? PAGE_IS_FILE : 0;
	const struct pm_scan_arg want = {
		.category_inverted = not_file | PAGE_IS_PFNZERO,
		.category_mask = not_file | PAGE_IS_PFNZERO,
		.category_anyof_mask = PAGE_IS_PRESENT | (c->swap ? PAGE_IS_SWAPPED : 0),
		.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
	};
	struct scan_ctx sc = {.c = c};
	int r = pagemap_scan(pagemap_fd, &want, start, end, scanned_range, &sc);
	*present += sc.present;
	return r;
}

/*
 * The staging buffer is mapped and populated before the threads are
 * stopped, sized from the process's anonymous RSS: every page fault here
 * costs ~20 us in this VM, and inside the pause they added up to most of
 * it. Transparent huge pages cut the faults 512-fold where available.
 */
int capture_staging_prepare(struct capture *c, uint64_t bytes)
{
	const uint64_t huge = 2UL << 20;
	uint64_t len = (bytes + huge - 1) & ~(huge - 1);

	if (!len)
		len = huge;
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return log_error_errno(-errno, "cannot map a %lu-byte staging buffer",
				       (unsigned long)len);
	madvise(p, len, MADV_HUGEPAGE);
	if (madvise(p, len, MADV_POPULATE_WRITE) < 0)
		memset(p, 0, len);
	c->img->pages = p;
	c->img->pages_mapped = true;
	c->img->pages_map_len = len;
	return 0;
}

void capture_staging_free(struct capture *c)
{
	if (c->img->pages)
		munmap(c->img->pages, c->img->pages_map_len);
	c->img->pages = NULL;
	c->img->pages_map_len = 0;
}

uint64_t capture_staging_estimate(pid_t pid)
{
	uint64_t kb = 0;
	if (proc_status_field(pid, "RssAnon", 10, &kb) < 0)
		return 0;
	return kb * 1024 + kb * 1024 / 8 + (8UL << 20);
}

#define IOV_BATCH 512

/*
 * process_vm_readv moves many runs per call; a run it cannot read (a page
 * without read permission) is read again through /proc/PID/mem, which
 * ignores protections.
 */
static int copy_batch(struct capture *c, const struct image_pagerun *runs, size_t n)
{
	struct iovec local[IOV_BATCH], remote[IOV_BATCH];
	uint64_t want = 0;

	for (size_t i = 0; i < n; i++) {
		local[i].iov_base = c->img->pages + runs[i].offset;
		remote[i].iov_base = (void *)(uintptr_t)runs[i].addr;
		local[i].iov_len = remote[i].iov_len = runs[i].npages * PAGE_SIZE;
		want += local[i].iov_len;
	}
	ssize_t got = process_vm_readv(c->pid, local, n, remote, n, 0);
	if (got == (ssize_t)want)
		return 0;
	/* Partial: find where it stopped and finish run by run. */
	uint64_t done = got > 0 ? got : 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t len = runs[i].npages * PAGE_SIZE;
		if (done >= len) {
			done -= len;
			continue;
		}
		int r = tracer_peek(c->memfd, runs[i].addr + done,
				    c->img->pages + runs[i].offset + done, len - done);
		if (r < 0)
			return log_error_errno(r, "cannot read memory %#lx-%#lx",
					       (unsigned long)runs[i].addr,
					       (unsigned long)(runs[i].addr + len));
		done = 0;
	}
	return 0;
}

static int copy_runs(struct capture *c)
{
	struct image *img = c->img;
	uint64_t total = 0;

	/* Pre-copy rounds read most pages while the service ran: only the rest now. */
	if (c->precopy)
		return precopy_place(c, c->precopy);

	for (size_t i = 0; i < img->n_runs; i++) {
		img->runs[i].offset = total;
		total += img->runs[i].npages * PAGE_SIZE;
	}
	img->pages_len = total;
	if (!total)
		return 0;

	if (total > img->pages_map_len) {
		/* The estimate made before the stop was short: pay for faults now. */
		log_debug("staging buffer of %lu bytes too small for %lu",
			  (unsigned long)img->pages_map_len, (unsigned long)total);
		capture_staging_free(c);
		int r = capture_staging_prepare(c, total);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < img->n_runs;) {
		size_t n = img->n_runs - i < IOV_BATCH ? img->n_runs - i : IOV_BATCH;
		int r = copy_batch(c, &img->runs[i], n);
		if (r < 0)
			return r;
		i += n;
	}
	return 0;
}

/*
 * An incremental epoch keeps only written pages: scan for present ones
 * near the written ranges only, not across the whole mapping (the same
 * pages: scanned_range() filters what the scan finds by the written
 * ranges again, so the page-table walk follows what was written). Written
 * ranges closer than SCAN_GAP share one scan: random writes over a heap
 * leave hundreds of one-page ranges per epoch, and one PAGEMAP_SCAN each
 * cost more than walking the page-table entries between them.
 */
#define SCAN_GAP (256UL << 10)

struct written_scan {
	struct capture *c;
	int pagemap_fd;
	bool file; /* a file mapping (scan_vma()) */
	uint64_t *present;
	uint64_t s, e; /* the window gathered so far, empty when s == e */
};

static int scan_window(struct written_scan *ws)
{
	int r = ws->s < ws->e ? scan_vma(ws->c, ws->pagemap_fd, ws->s, ws->e, ws->file, ws->present)
			      : 0;
	ws->s = ws->e = 0;
	return r;
}

static int scan_written_range(void *p, uint64_t s, uint64_t e)
{
	struct written_scan *ws = p;

	if (ws->s < ws->e && s - ws->e <= SCAN_GAP) {
		ws->e = e;
		return 0;
	}
	int r = scan_window(ws);
	ws->s = s;
	ws->e = e;
	return r;
}

static int scan_mapping(struct capture *c, int pagemap_fd, const struct image_vma *v,
			uint64_t *present)
{
	bool file = v->kind == VMA_FILE;
	struct written_scan ws = {c, pagemap_fd, file, present, 0, 0};

	if (!c->wp || !c->wp_filter)
		return scan_vma(c, pagemap_fd, v->start, v->end, file, present);
	int r = wp_filter(c->wp, v->start, v->end, scan_written_range, &ws);
	return r < 0 ? r : scan_window(&ws);
}

/*
 * Write-protect markers on never-touched pages (userfaultfd, wp.c) look
 * like swap entries to PAGEMAP_SCAN. Without swap every "swapped" page is
 * such a marker, holding nothing; with swap they are read too (as zeros).
 */
static bool system_has_swap(void)
{
	_cleanup_free_ char *buf = NULL;
	return read_file("/proc/swaps", &buf) > 0 && strchr(buf, '\n') &&
	       strchr(buf, '\n')[1] != 0;
}

int capture_pages(struct capture *c)
{
	struct image *img = c->img;
	char path[64];
	int r;

	c->swap = system_has_swap();
	snprintf(path, sizeof(path), "/proc/%d/pagemap", c->pid);
	_cleanup_close_ int pfd = open(path, O_RDONLY | O_CLOEXEC);
	if (pfd < 0)
		return log_error_errno(-errno, "cannot open %s", path);

	for (size_t i = 0; i < img->n_vmas; i++) {
		const struct image_vma *v = &img->vmas[i];
		uint64_t present = 0, before = 0, after = 0;
		if (!vma_carries_contents(v->shared, v->kind))
			continue;
		for (int k = 0; k < MC_COUNT; k++)
			before += c->stats.written[k];
		r = scan_mapping(c, pfd, v, &present);
		if (r < 0)
			return log_error_errno(r, "PAGEMAP_SCAN of %#lx-%#lx failed",
					       (unsigned long)v->start, (unsigned long)v->end);
		for (int k = 0; k < MC_COUNT; k++)
			after += c->stats.written[k];
		enum mem_class k = capture_classify(c, v->start);
		c->stats.mapped[k == MC_STACKS ? MC_HEAP : k] += v->end - v->start;
		c->stats.mapped[MC_FREE] += present - (after - before);
		c->stats.mapped[MC_ZERO] += (v->end - v->start) - present;
	}
	log_debug("scanned %zu runs", img->n_runs);
	return copy_runs(c);
}
