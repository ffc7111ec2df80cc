/*
 * incremental.c - see incremental.h.
 *
 * Each epoch reuses the one-shot capture (capture_held) with threads that
 * stay seized between epochs, then keeps only the pages whose hash differs
 * from what the backup last received. The copy into the staging buffer is
 * the only part inside the pause; hashing and filtering run after the
 * service is going again.
 */
#include "incremental.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

#include "delta.h"
#include "goruntime.h"
#include "log.h"
#include "reach.h"
#include "wire.h"
#include "status.h"
#include "util.h"

#define GC_WAIT_MAX_US 2000000

static const struct {
	const char *name, *help;
} cost_rows[COST_COUNT] = {
    [COST_STOP] = {"pause_stop", "pause: stopping every thread"},
    [COST_SAFEPOINT] = {"pause_safepoint", "pause: reaching a Go runtime safepoint"},
    [COST_LIVE_SET] = {"pause_live_set", "pause: mappings and the live spans of the Go heap"},
    [COST_DIRTY_SCAN] = {"pause_dirty_scan", "pause: reading and re-arming write tracking"},
    [COST_THREADS] = {"pause_threads", "pause: registers, signal state, injected reads"},
    [COST_COPY] = {"pause_copy", "pause: present-page scan and copy into staging"},
    [COST_FDS] = {"pause_fds", "pause: the descriptor table"},
    [COST_RESUME] = {"pause_resume", "pause: letting the threads go"},
    [COST_PAUSE] = {"pause", "time the service was stopped per epoch"},
    [COST_ENCODE] = {"ship_encode", "after resume: file hashes, page selection, deltas"},
    [COST_COMPRESS] = {"ship_compress", "after resume: compressing the deltas"},
    [COST_PACK] = {"ship_pack", "after resume: msgpack and the epoch checksum"},
    [COST_TLS_WRITE] = {"ship_tls_write",
			"epoch queued to its COMMIT handed to TLS, within 256 KiB of the wire (wall)"},
    [COST_PRECOPY] = {"precopy_round", "a pre-copy round while the service runs (wall)"},
    [COST_REACH] = {"ship_reach", "after resume: finding the reachable new objects"},
    [COST_CPU_SAFEPOINT] = {"pause_safepoint_cpu", "pause: primaryd's CPU time in pause_safepoint"},
    [COST_CPU_LIVE_SET] = {"pause_live_set_cpu", "pause: primaryd's CPU time in pause_live_set"},
    [COST_CPU_DIRTY_SCAN] = {"pause_dirty_scan_cpu",
			     "pause: primaryd's CPU time in pause_dirty_scan"},
    [COST_CPU_THREADS] = {"pause_threads_cpu", "pause: primaryd's CPU time in pause_threads"},
    [COST_CPU_COPY] = {"pause_copy_cpu", "pause: primaryd's CPU time in pause_copy"},
    [COST_CPU_FDS] = {"pause_fds_cpu", "pause: primaryd's CPU time in pause_fds"},
};

void capture_session_report(const struct capture_session *s, struct status_report *r)
{
	const struct delta_stats *d = &s->delta;

	for (int i = 0; i < COST_COUNT; i++)
		status_report_histogram(r, cost_rows[i].name, &s->cost.h[i], cost_rows[i].help);
	if (s->use_precopy) {
		const struct precopy_stats *p = &s->pre.stats;
		status_report_counter(r, "precopy_epochs", "", p->epochs,
				      "epochs whose pages were read in rounds while the service ran");
		status_report_counter(r, "precopy_rounds", "", p->rounds, "pre-copy rounds");
		status_report_counter(r, "precopy_read", "bytes", p->bytes_copied,
				      "bytes read by pre-copy rounds while the service ran");
		status_report_counter(r, "precopy_stop_read", "bytes", p->final_bytes_copied,
				      "bytes of pre-copied epochs read inside the stop");
		status_report_counter(r, "precopy_store_used", "bytes", p->store_bytes,
				      "bytes of pre-copied epochs taken from the rounds' store");
		status_report_counter(r, "precopy_stores_reused", "", p->stores_reused,
				      "epochs whose store was a shipped epoch's, already faulted in");
		status_report_counter(r, "precopy_round_reread", "bytes", p->round_reread,
				      "bytes a round read again that an earlier round of its epoch had read");
		status_report_counter(r, "precopy_stop_reread", "bytes", p->stop_reread,
				      "bytes the stops read again that a round had read (written since)");
		status_report_counter(r, "precopy_retry_rounds", "", p->retry_rounds,
				      "rounds run while a stop let the service reach a safepoint");
		status_report_counter(r, "precopy_retry_round_cpu", "seconds",
				      p->retry_round_cpu_us / 1e6, "CPU time of those rounds");
	}
	status_report_counter(r, "live_spans_read", "", s->spans_read,
			      "mspans read from the service in the stops' live sets");
	status_report_counter(r, "live_spans_kept", "", s->spans_kept,
			      "mspans taken from the span cache (their pages not written since)");
	status_report_counter(r, "live_spans_refreshed", "", s->spans_refreshed,
			      "mspans read again by pre-copy rounds, with the service running");
	status_report_counter(r, "fds_read", "", s->fds_read,
			      "descriptors read from /proc in the stops");
	status_report_counter(r, "fds_kept", "", s->fds_kept,
			      "descriptors taken from the cache (the same settled socket)");
	status_report_counter(r, "threads_read", "", s->threads_read,
			      "threads whose credentials and name were read in the stops");
	status_report_counter(r, "threads_kept", "", s->threads_kept,
			      "threads whose credentials and name came from the cache");
	capture_reach_report(&s->c, r);
	if (!shipped_enabled(&s->shipped_pages))
		return;
	status_report_counter(r, "delta_pages_whole", "", d->pages[DELTA_WHOLE],
			      "pages shipped whole (not in the last-shipped cache, or all changed)");
	status_report_counter(r, "delta_pages_runs", "", d->pages[DELTA_ZRUN],
			      "pages shipped as runs of changed bytes");
	status_report_counter(r, "delta_pages_blocks", "", d->pages[DELTA_BLOCKS],
			      "pages shipped as changed 64-byte blocks");
	status_report_counter(r, "delta_pages_on_zero", "", d->pages[DELTA_ON_ZERO],
			      "pages shipped as runs on a zero page (all zero, or not in the cache)");
	status_report_counter(r, "delta_page", "bytes", d->page_bytes,
			      "bytes of the pages the deltas stand for");
	status_report_counter(r, "delta_raw", "bytes", d->raw_bytes,
			      "bytes of the delta records before compression");
	status_report_counter(r, "delta_wire", "bytes", d->wire_bytes,
			      "bytes of the delta records as shipped (compressed)");
	status_report_counter(r, "delta_cache_hits", "", s->shipped_pages.hits,
			      "pages found in the last-shipped cache");
	status_report_counter(r, "delta_cache_misses", "", s->shipped_pages.misses,
			      "pages not in the last-shipped cache");
	status_report_counter(r, "delta_cache_evictions", "", s->shipped_pages.evictions,
			      "pages pushed out of the last-shipped cache");
}

int capture_session_set_deltas(struct capture_session *s, uint64_t cache_bytes, unsigned codec)
{
	shipped_free(&s->shipped_pages);
	s->codec = codec;
	if (!cache_bytes)
		return 0;
	if (!s->raw && !(s->raw = malloc(WIRE_MAX_DELTA_RAW)))
		return -ENOMEM;
	ship_trace_close(&s->trace);
	ship_trace_open(&s->trace);
	return shipped_init(&s->shipped_pages, cache_bytes);
}


int capture_session_open(pid_t pid, const char *debug_file, struct capture_session **out)
{
	struct capture_session *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->c.pid = pid;
	s->c.memfd = -1;
	s->c.cache = &s->cache;
	s->c.debug_file = debug_file;
	wp_init(&s->wp);
	precopy_init(&s->pre);
	s->c.seize_options = PTRACE_O_EXITKILL;
	/* A debug switch for tests: compare live.c's span cache with a full read every N stops. */
	const char *check = getenv("CHECKSYNC_CHECK_LIVE_SET");
	s->c.live_check_every = check ? (unsigned)strtoul(check, NULL, 10) : 0;
	s->c.img = image_new();
	if (!s->c.img) {
		free(s);
		return -ENOMEM;
	}
	r = capture_exe(&s->c);
	if (r >= 0)
		r = capture_load_layout(&s->c);
	if (r >= 0) {
		s->c.memfd = tracer_mem_open(pid, 0);
		if (s->c.memfd < 0)
			r = log_error_errno(s->c.memfd, "cannot open memory of pid %d", pid);
	}
	if (r < 0) {
		capture_session_close(s);
		return r;
	}
	*out = s;
	return 0;
}

void capture_session_close(struct capture_session *s)
{
	if (!s)
		return;
	if (s->c.img && s->c.img->pages == s->staging)
		s->c.img->pages = NULL;
	if (s->staging)
		munmap(s->staging, s->staging_len);
	if (s->c.img)
		image_free(s->c.img);
	capture_cleanup(&s->c);
	dirty_reset(&s->shipped);
	wp_free(&s->wp);
	precopy_free(&s->pre);
	free(s->raw);
	shipped_free(&s->shipped_pages);
	ship_trace_close(&s->trace);
	free(s->cache.threads);
	free(s->cache.fds);
	capture_file_cache_free(&s->files);
	free(s);
}

struct keep_ctx {
	const struct image *img;
};

/*
 * The backup drops pages outside the private mappings that carry contents;
 * so do we. The mappings come in address order (/proc/PID/maps).
 */
static bool page_in_content_vma(void *p, uint64_t addr)
{
	const struct image *img = ((struct keep_ctx *)p)->img;
	size_t lo = 0, hi = img->n_vmas;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (img->vmas[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == img->n_vmas || addr < img->vmas[lo].start)
		return false;
	const struct image_vma *v = &img->vmas[lo];
	return vma_carries_contents(v->shared, v->kind);
}

/* Keep the cached pages that lie in mappings the backup keeps (page_in_content_vma's rule). */
static void retain_shipped(struct shipped_cache *cache, const struct image *img)
{
	_cleanup_free_ struct shipped_range *r = malloc((img->n_vmas + 1) * sizeof(*r));
	size_t n = 0;

	if (!r) { /* forgetting everything is always right: a miss needs no base */
		shipped_reset(cache);
		return;
	}
	for (size_t i = 0; i < img->n_vmas; i++)
		if (vma_carries_contents(img->vmas[i].shared, img->vmas[i].kind))
			r[n++] = (struct shipped_range){img->vmas[i].start, img->vmas[i].end};
	shipped_retain(cache, r, n);
}

void capture_session_batch_begin(struct capture_session *s)
{
	s->batch_pages = 0;
	s->batch_raw = 0;
}

/*
 * Encode one page against what the backup holds, and remember it as
 * shipped. The cache is updated before the epoch is on the wire: if it
 * never gets there, the link is lost, and the next epoch is a full one,
 * which resets the cache.
 */
void capture_session_batch_add(struct capture_session *s, uint64_t addr, const uint8_t *cur)
{
	const uint8_t *base = s->enc_full ? NULL : shipped_lookup(&s->shipped_pages, addr);
	enum delta_kind kind;
	size_t before = s->batch_raw;
	ship_trace_page(&s->trace, addr, base, cur);
	size_t n = delta_encode_page(addr, base, cur, s->raw + before, &kind);

	s->batch_raw += n;
	shipped_store(&s->shipped_pages, addr, delta_rec_is_zero(kind, n) ? NULL : cur);
	reach_note_shipped(&s->c, addr, s->raw + before, n);
	s->delta.pages[kind]++;
	s->delta.page_bytes += PAGE_SIZE;
	s->batch_pages++;
}

int capture_session_batch_end(struct capture_session *s, struct delta_batch *b)
{
	uint64_t t0 = now_us();
	unsigned codec = s->codec;
	size_t raw_len = s->batch_raw, cap = delta_bound(codec, raw_len);
	uint8_t *out = malloc(cap ? cap : 1);
	size_t len;

	if (!out)
		return -ENOMEM;
	len = delta_compress(codec, s->raw, raw_len, out, cap);
	if (len == 0 || len >= raw_len) { /* incompressible: ship it as it is */
		codec = DELTA_CODEC_NONE;
		memcpy(out, s->raw, raw_len);
		len = raw_len;
	}
	*b = (struct delta_batch){.npages = s->batch_pages, .raw_len = raw_len, .codec = codec,
				  .data = out, .len = len};
	s->delta.raw_bytes += raw_len;
	s->delta.wire_bytes += len;
	s->enc_compress_us += now_us() - t0;
	return 0;
}

/* Replace img's pages (the staging copy) with only the changed ones, in a buffer of its own. */
static int keep_changed_pages(struct capture_session *s, struct image *img, bool full)
{
	struct image_pagerun *runs = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;

	if (full)
		dirty_reset(&s->shipped);
	struct keep_ctx kc = {.img = img};
	int r = dirty_retain(&s->shipped, page_in_content_vma, &kc);
	if (r < 0)
		return r;

	uint8_t *out = malloc(img->pages_len ? img->pages_len : 1);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_runs; i++) {
		for (uint64_t p = 0; p < img->runs[i].npages; p++) {
			uint64_t addr = img->runs[i].addr + p * PAGE_SIZE;
			const uint8_t *data = img->pages + img->runs[i].offset + p * PAGE_SIZE;
			uint64_t h = dirty_page_hash(data);
			if (!dirty_changed(&s->shipped, addr, h))
				continue;
			if (dirty_set(&s->shipped, addr, h) < 0)
				goto nomem;
			struct image_pagerun *last = n ? &runs[n - 1] : NULL;
			if (last && last->addr + last->npages * PAGE_SIZE == addr) {
				last->npages++;
			} else {
				last = array_push(&runs, &n, &cap, sizeof(*last));
				if (!last)
					goto nomem;
				*last = (struct image_pagerun){.addr = addr, .npages = 1,
							       .offset = total};
			}
			memcpy(out + total, data, PAGE_SIZE);
			total += PAGE_SIZE;
		}
	}
	free(img->runs);
	img->runs = runs;
	img->n_runs = img->cap_runs = n;
	img->pages = out;
	img->pages_len = total;
	img->pages_mapped = false;
	img->pages_map_len = 0;
	return 0;
nomem:
	free(out);
	free(runs);
	return -ENOMEM;
}

/* Give the image a copy of the staged pages, so the staging buffer stays ours. */
static int take_staged_pages(struct image *img)
{
	uint8_t *out = malloc(img->pages_len ? img->pages_len : 1);
	if (!out)
		return -ENOMEM;
	memcpy(out, img->pages, img->pages_len);
	img->pages = out;
	img->pages_mapped = false;
	img->pages_map_len = 0;
	return 0;
}

void capture_session_image_free(struct capture_session *s, struct image *img)
{
	if (!img)
		return;
	if (img->pages == s->staging) {
		img->pages = NULL;
	} else if (img->pages && img->pages_mapped && img->pages == s->pre.lent) {
		precopy_recycle(&s->pre, img->pages, img->pages_map_len);
		img->pages = NULL;
	}
	image_free(img);
}

/* Beyond the target for any stop (issue 13), a stop says where its time went. */
#define LONG_STOP_US 20000

static void say_long_stop(const struct capture *c, uint64_t pause_us, uint64_t stop_us, bool full)
{
	const uint64_t *w = c->stats.phase_us, *cpu = c->stats.phase_cpu_us;

	if (pause_us <= LONG_STOP_US)
		return;
	log_info("pid %d: %s epoch stopped the service for %lu ms (ms wall/CPU: stop %lu, "
		 "safepoint %lu/%lu, live set %lu/%lu, dirty scan %lu/%lu, threads %lu/%lu, "
		 "copy %lu/%lu, fds %lu/%lu)",
		 c->pid, full ? "a full" : "an", (unsigned long)(pause_us / 1000),
		 (unsigned long)(stop_us / 1000), (unsigned long)(w[CPH_SAFEPOINT] / 1000),
		 (unsigned long)(cpu[CPH_SAFEPOINT] / 1000),
		 (unsigned long)(w[CPH_LIVE_SET] / 1000), (unsigned long)(cpu[CPH_LIVE_SET] / 1000),
		 (unsigned long)(w[CPH_DIRTY_SCAN] / 1000),
		 (unsigned long)(cpu[CPH_DIRTY_SCAN] / 1000),
		 (unsigned long)(w[CPH_THREADS] / 1000), (unsigned long)(cpu[CPH_THREADS] / 1000),
		 (unsigned long)(w[CPH_COPY] / 1000), (unsigned long)(cpu[CPH_COPY] / 1000),
		 (unsigned long)(w[CPH_FDS] / 1000), (unsigned long)(cpu[CPH_FDS] / 1000));
}

/* After the reach scan: the file hashes, the pages to ship, the delta cache; then the image. */
static int after_reach(struct capture_session *s, struct image **out, struct epoch_report *rep)
{
	struct capture *c = &s->c;
	bool full = s->after_full, precopied = s->after_precopied;
	int r;

	*rep = s->after_rep;
	if (s->use_wp)
		hist_add_us(&s->cost.h[COST_REACH], c->stats.reach.scan_us);
	rep->mode = c->stats.mode;
	rep->safepoint_tries = c->stats.safepoint_tries;
	rep->fallback = c->stats.fallback;

	r = capture_hash_files(c->img, &s->files);
	/* Write tracking already limited the copy to written pages; hashing would only cost. */
	/*
	 * With deltas the link reads the pages straight from staging, slice by
	 * slice, and no capture starts before it is done (link_busy()): no copy.
	 */
	if (r >= 0 && !precopied && !(s->use_wp && shipped_enabled(&s->shipped_pages)))
		r = s->use_wp ? take_staged_pages(c->img) : keep_changed_pages(s, c->img, full);
	if (r < 0) {
		/* Leave the staging buffer with the session, not with the image. */
		if (!precopied && c->img->pages == s->staging)
			c->img->pages = NULL;
		return r;
	}
	rep->pages_shipped = c->img->pages_len / PAGE_SIZE;
	if (shipped_enabled(&s->shipped_pages)) {
		/* The pages are encoded batch by batch as the link sends them (link.c). */
		s->enc_full = full;
		s->enc_compress_us = 0;
		if (full)
			shipped_reset(&s->shipped_pages);
		else
			retain_shipped(&s->shipped_pages, c->img);
	}
	s->enc_start_us = s->after_ran_us;
	*out = c->img;
	c->img = image_new();
	return c->img ? 0 : -ENOMEM;
}

/* A pre-copy round failed: what the rounds read is dropped, and the next stop reads it. */
static void round_lost(struct capture_session *s)
{
	precopy_reset(&s->pre); /* what the rounds found written stays owed (wp_owe) */
	wp_note_lost(&s->wp);	/* unless the failure came between a re-arm and wp_owe */
}

/* The runtime is in a GC cycle (read while it runs): a stop now would find no safepoint. */
static bool gc_running(const struct capture_session *s)
{
	const struct go_layout *l = s->c.go;
	uint64_t v = 0;

	if (!l || !l->gcphase_size || l->gcphase_size > sizeof(v))
		return false;
	struct iovec lo = {&v, l->gcphase_size}, re = {(void *)(uintptr_t)l->gcphase, l->gcphase_size};
	if (process_vm_readv(s->c.pid, &lo, 1, &re, 1, 0) != (ssize_t)l->gcphase_size)
		return false;
	return v != l->gc_off;
}

/*
 * A stop that found no safepoint lets the service run, then stops it again
 * (dump.c). What the service writes meanwhile, the next stop would read:
 * pinned, 3,000 of 5,500 mspans and 1.8 MB of pages per stop on the paper's
 * workload. A round here (scan, span refresh, page reads) reads it with the
 * service running instead; the stop then reads only what is written during
 * this round. At the service's own priority: on a shared CPU a round under
 * SCHED_FIFO would hold the service as the stop does.
 */
static void round_between_tries(struct capture *c, void *ctx)
{
	struct capture_session *s = ctx;
	struct precopy *p = &s->pre;
	int r;

	/* A round cut short (a handover) left pieces unread that a new round's plan would drop. */
	if (!p->active || p->todo_pos < p->n_todo || s->wp.uffd < 0)
		return;
	/*
	 * In a GC cycle the next try fails too: a round per try of a long
	 * cycle (up to 12) cost 3 ms of CPU each. The round that counts is the
	 * one after the cycle, before the try that holds.
	 */
	if (gc_running(s))
		return;
	uint64_t cpu0 = thread_cpu_us();
	capture_cpu_release(c);
	r = precopy_round_begin(p, &s->wp, c->pid, false);
	if (r >= 0)
		r = capture_live_refresh(c, &s->wp, p->vmas, p->n_vmas, &s->spans_refreshed);
	while (r == 0)
		r = precopy_round_step(p, c->pid, UINT64_MAX);
	if (r < 0) {
		round_lost(s); /* the stop then reads what it needs */
	} else {
		p->stats.retry_rounds++;
		p->stats.retry_round_cpu_us += thread_cpu_us() - cpu0;
	}
	capture_cpu_hold(c);
}

int capture_session_epoch(struct capture_session *s, bool full, struct image **out,
			  struct epoch_report *rep)
{
	struct capture *c = &s->c;
	int r;

	if (s->after_pending)
		return -EBUSY; /* the last epoch's scan still owns the image */
	image_free(c->img);
	c->img = image_new();
	if (!c->img)
		return -ENOMEM;
	c->img->pid = c->pid;
	r = capture_exe(c);
	if (r < 0)
		return r;
	/* Pre-copied: the pages go into the rounds' store, which the image then owns. */
	c->precopy = s->use_wp && s->pre.active ? &s->pre : NULL;
	if (c->precopy) {
		c->img->pages = NULL;
	} else if (!s->staging) {
		r = capture_staging_prepare(c, capture_staging_estimate(c->pid));
		if (r < 0)
			return r;
	} else {
		c->img->pages = s->staging;
		c->img->pages_mapped = true;
		c->img->pages_map_len = s->staging_len;
	}

	c->whole = s->whole_next; /* no safepoint to wait for (capture_session_precopy_ready) */
	s->whole_next = false;
	c->wp = s->use_wp ? &s->wp : NULL;
	if (full)
		s->cache.valid = false; /* a full epoch re-reads everything */
	c->wp_filter = s->use_wp && !full;
	c->between_tries = c->precopy ? round_between_tries : NULL;
	c->between_ctx = s;
	capture_cpu_hold(c);
	r = capture_stop_all(c);
	uint64_t held_us = now_us(), stop_us = c->stop_us;
	if (r >= 0)
		r = capture_held(c);
	uint64_t resume_us = now_us();
	/* A final epoch (handover) leaves the service held, frozen, exactly as captured. */
	int rr = s->hold_after_epoch && r >= 0 ? 0 : capture_resume_all(c);
	if (r >= 0)
		r = rr;
	if (s->hold_after_epoch && r >= 0)
		s->frozen = true;
	uint64_t ran_us = now_us();
	capture_cpu_release(c);
	capture_live_set_end(c);
	/* A safepoint retry stops the threads again: the pause is the last stop, as before. */
	rep->pause_us = ran_us - c->stop_us;
	if (r >= 0) {
		struct hist *h = s->cost.h;
		hist_add_us(&h[COST_STOP], held_us - stop_us);
		for (int i = 0; i < CPH_COUNT; i++) {
			hist_add_us(&h[COST_SAFEPOINT + i], c->stats.phase_us[i]);
			hist_add_us(&h[COST_CPU_SAFEPOINT + i], c->stats.phase_cpu_us[i]);
		}
		s->spans_read += c->stats.spans_read;
		s->spans_kept += c->stats.spans_kept;
		s->fds_read += c->stats.fds_read;
		s->fds_kept += c->stats.fds_kept;
		s->threads_read += c->stats.threads_read;
		s->threads_kept += c->stats.threads_kept;
		hist_add_us(&h[COST_RESUME], ran_us - resume_us);
		hist_add_us(&h[COST_PAUSE], rep->pause_us);
		say_long_stop(c, rep->pause_us, held_us - stop_us, full);
	}

	bool precopied = c->precopy;
	c->precopy = NULL;
	c->between_tries = NULL;
	precopy_reset(&s->pre); /* what it read is the image's now, or lost with a failed capture */
	s->gc_wait_from = 0;
	if (precopied) {
		if (r < 0)
			return r; /* the image, freed with the next epoch, unmaps what it took */
	} else {
		/* The staging buffer may have been replaced by a bigger one: keep whichever is current. */
		s->staging = c->img->pages;
		s->staging_len = c->img->pages_map_len;
	}
	if (r < 0) {
		c->img->pages = NULL;
		return r;
	}
	rep->pages_captured = c->img->pages_len / PAGE_SIZE;
	if (s->use_wp && wp_carry_unshipped(&s->wp, c->img) < 0) {
		if (!precopied) /* else the image owns the store: freed with it */
			c->img->pages = NULL;
		return -ENOMEM;
	}
	/* Zero the staged bytes of unreachable new objects (write tracking: see reach.c). */
	r = s->use_wp ? capture_reach_begin(c, !c->wp_filter) : 0;
	if (r < 0) {
		if (!precopied)
			c->img->pages = NULL;
		return r;
	}
	s->after_full = full;
	s->after_precopied = precopied;
	s->after_ran_us = ran_us;
	s->after_rep = *rep;
	if (r == 1) {
		s->after_pending = true;
		*out = NULL;
		return 1;
	}
	return after_reach(s, out, rep);
}

int capture_session_epoch_step(struct capture_session *s, uint64_t budget_us, struct image **out,
			       struct epoch_report *rep)
{
	if (!s->after_pending)
		return -EINVAL;
	int r = capture_reach_step(&s->c, budget_us);
	if (r == 1)
		return 1;
	s->after_pending = false;
	if (r < 0) {
		if (!s->after_precopied)
			s->c.img->pages = NULL;
		return r;
	}
	return after_reach(s, out, rep);
}

bool capture_session_epoch_pending(const struct capture_session *s)
{
	return s && s->after_pending;
}

/* Create the write tracking in a short stop (the first epoch has none yet). */
static int precopy_open_tracking(struct capture_session *s)
{
	struct capture *c = &s->c;
	uint64_t t0 = now_us();
	capture_cpu_hold(c);
	int r = capture_stop_all(c);

	if (r >= 0) {
		free(c->vmas);
		c->vmas = NULL;
		c->n_vmas = 0;
		ssize_t n = proc_read_maps(c->pid, &c->vmas);
		r = n < 0 ? (int)n : 0;
		if (r >= 0)
			c->n_vmas = n;
	}
	if (r >= 0)
		r = capture_find_syscall_insn(c, &c->leader->insn);
	if (r >= 0)
		r = wp_open(c, &s->wp);
	int rr = capture_resume_all(c);
	capture_cpu_release(c);
	log_debug("write tracking of pid %d created in a stop of %lu us", c->pid,
		  (unsigned long)(now_us() - t0));
	return r < 0 ? r : rr;
}

int capture_session_precopy_step(struct capture_session *s, bool full, uint64_t budget)
{
	struct precopy *p = &s->pre;
	int r = 0;

	if (!s->use_wp || !s->use_precopy || s->frozen || s->hold_after_epoch)
		return -ENOTSUP;
	if (s->wp.uffd < 0) {
		if (s->precopy_open_failed)
			return -ENOTSUP;
		r = precopy_open_tracking(s);
		s->precopy_open_failed = r < 0;
	}
	/* A round ended: the next one starts. */
	if (r >= 0 && (!p->active || p->todo_pos == p->n_todo)) {
		s->round_t0 = now_us();
		r = precopy_round_begin(p, &s->wp, s->c.pid, full);
		/* Right after its scan: the stop re-reads only the mspans written since. */
		if (r >= 0)
			r = capture_live_refresh(&s->c, &s->wp, p->vmas, p->n_vmas,
						 &s->spans_refreshed);
	}
	if (r >= 0)
		r = precopy_round_step(p, s->c.pid, budget);
	if (r == 1)
		hist_add_us(&s->cost.h[COST_PRECOPY], now_us() - s->round_t0);
	if (r < 0)
		round_lost(s);
	return r;
}

bool capture_session_precopy_converged(const struct capture_session *s)
{
	return precopy_converged(&s->pre);
}

bool capture_session_precopy_ready(struct capture_session *s)
{
	uint64_t now = now_us();

	if (!precopy_converged(&s->pre))
		return false;
	/*
	 * A stop during a GC cycle would retry for a safepoint (dump.c), holding
	 * primaryd's loop for up to a second, then copy whole mappings: rounds go
	 * on while the cycle lasts, up to GC_WAIT_MAX_US.
	 */
	if (!gc_running(s)) {
		s->gc_wait_from = 0;
		return true;
	}
	if (!s->gc_wait_from)
		s->gc_wait_from = now;
	if (now - s->gc_wait_from <= GC_WAIT_MAX_US)
		return false;
	/*
	 * Still in the cycle: retrying for a safepoint would hold the loop and
	 * then copy whole mappings anyway. Copy them now (always consistent;
	 * the rounds have read them).
	 */
	log_info("pid %d: a GC cycle has run for over %d ms: this epoch copies whole mappings",
		 s->c.pid, GC_WAIT_MAX_US / 1000);
	s->whole_next = true;
	return true;
}

int capture_session_freeze(struct capture_session *s)
{
	if (s->frozen)
		return 0;
	int r = capture_stop_all(&s->c);
	if (r >= 0)
		s->frozen = true;
	return r;
}

int capture_session_thaw(struct capture_session *s)
{
	if (!s->frozen)
		return 0;
	s->frozen = false;
	return capture_resume_all(&s->c);
}

static void forget_thread(struct capture *c, pid_t tid)
{
	for (size_t i = 0; i < c->n_threads; i++)
		if (c->threads[i].tid == tid) {
			c->threads[i] = c->threads[--c->n_threads];
			c->leader = NULL;
			return;
		}
}

bool capture_session_owns(const struct capture_session *s, pid_t tid)
{
	if (tid == s->c.pid)
		return true;
	for (size_t i = 0; i < s->c.n_threads; i++)
		if (s->c.threads[i].tid == tid)
			return true;
	return false;
}

int capture_session_on_wait(struct capture_session *s, pid_t pid, int st)
{
	if (WIFEXITED(st) || WIFSIGNALED(st)) {
		if (s)
			forget_thread(&s->c, pid);
		return s && pid == s->c.pid;
	}
	if (!WIFSTOPPED(st))
		return 0;
	int sig = WSTOPSIG(st), event = st >> 16;
	/* A signal for the service: pass it on. Anything else: let it run. */
	int deliver = (event == 0 && sig != SIGTRAP) ? sig : 0;
	if (event == PTRACE_EVENT_STOP && s && s->frozen)
		return 0;
	ptrace(PTRACE_CONT, pid, 0, deliver);
	return 0;
}
