/*
 * live.c - the Go runtime's own view of which memory matters.
 *
 * With the threads held, the heap metadata (mheap_.allspans, allArenas,
 * allgs, allm) says which pages of the heap arenas belong to in-use spans
 * and which stack pages are in use; every other arena page is free and is
 * restored as zero, which the allocator accepts because it zeroes pages it
 * did not get fresh from the kernel. The metadata is only believed at a
 * safepoint: no M allocating or holding a runtime lock, the heap lock
 * free, and the GC off.
 *
 * Everything outside the arenas (globals, off-heap runtime memory, libc,
 * thread stacks) is copied as before.
 */
#include <stdlib.h>
#include <sys/uio.h>
#include <sys/user.h>

#include "capture.h"
#include "goruntime.h"
#include "log.h"
#include "range.h"
#include "reach.h"
#include "util.h"
#include "wp.h"

struct live_set {
	struct rangeset arenas, heap, stacks;
	struct rangeset dead_meta; /* runtime metadata that describes only free pages */
	struct rangeset dead_stacks; /* stacks below their pointer (less slack): reach.c's non-roots */
	uint64_t exe_lo, exe_hi;
};

/* Bytes below a stack pointer still treated as in use (signal frames, spills). */
#define STACK_SLACK 512

/* ---------- range sets ---------- */

static int rs_add(struct rangeset *rs, uint64_t s, uint64_t e)
{
	return range_append(&rs->r, &rs->n, &rs->cap, s, e);
}

static void rs_normalize(struct rangeset *rs)
{
	range_normalize(rs->r, &rs->n);
}

static void rs_free(struct rangeset *rs)
{
	free(rs->r);
}

/* Remove the page-aligned interior of every range of `cut` from `rs` (both normalized). */
static int rs_subtract(struct rangeset *rs, const struct rangeset *cut)
{
	struct rangeset out = {0};
	size_t j = 0;

	for (size_t i = 0; i < rs->n; i++) {
		uint64_t s = rs->r[i].s, e = rs->r[i].e;
		while (j < cut->n && cut->r[j].e <= s)
			j++;
		for (size_t k = j; k < cut->n && cut->r[k].s < e && s < e; k++) {
			uint64_t cs = PAGE_ALIGN_UP(cut->r[k].s), ce = PAGE_ALIGN_DOWN(cut->r[k].e);
			if (cs >= ce || ce <= s)
				continue;
			if (cs > s && rs_add(&out, s, cs < e ? cs : e) < 0)
				return -ENOMEM;
			s = ce > s ? ce : s;
		}
		if (s < e && rs_add(&out, s, e) < 0)
			return -ENOMEM;
	}
	free(rs->r);
	*rs = out;
	return 0;
}

/* First range of a normalized set that ends after addr. */
static size_t rs_find(const struct rangeset *rs, uint64_t addr)
{
	return range_find(rs->r, rs->n, addr);
}

static bool rs_contains(const struct rangeset *rs, uint64_t addr)
{
	size_t i = rs_find(rs, addr);
	return i < rs->n && rs->r[i].s <= addr;
}

/* ---------- reading the target ---------- */

#define BLOCK 16384
#define NBLOCKS 128
#define BLOCK_PAGES (BLOCK / PAGE_SIZE)

struct memcache {
	int fd;
	uint64_t base[NBLOCKS];
	uint8_t readable[NBLOCKS]; /* a bit per page of the block that could be read */
	uint8_t *data;
	unsigned misses;
	/* allspans indexes of the last stop's in-use spans in address order (live_spans()). */
	uint32_t *order;
	size_t n_order, cap_order;
	/* What the last live set read of each allspans entry (the span cache, live_spans()). */
	struct span_rec *rec;
	size_t n_rec, cap_rec;
	bool rec_valid;	 /* rec is what the stop of write-tracking seq rec_seq read */
	uint64_t rec_seq;
	unsigned rec_stops; /* stops that used rec, for the check against a full read */
	bool spans_noted; /* reach.c was handed this stop's spans, not yet told they are all */
};

/*
 * Read a block into its slot. The runtime's metadata sits beside memory
 * /proc/PID/mem cannot read (guard pages, reservations), where a block read
 * comes up short: its pages are then read one by one, and the slot keeps
 * which of them it holds. Each access to such a block cost two reads
 * before (the short one, then the bytes asked for), 200-250 per stop of the
 * paper's workload, a millisecond of the pause.
 */
static void mc_fill(struct memcache *mc, size_t slot, uint64_t b)
{
	uint8_t *blk = mc->data + slot * BLOCK;
	ssize_t r = pread(mc->fd, blk, BLOCK, b);
	uint8_t bits = 0;

	for (size_t k = 0; k < BLOCK_PAGES; k++) {
		size_t at = k * PAGE_SIZE;
		if (r >= (ssize_t)(at + PAGE_SIZE) ||
		    (r <= (ssize_t)at && pread(mc->fd, blk + at, PAGE_SIZE, b + at) == PAGE_SIZE))
			bits |= 1u << k;
	}
	mc->base[slot] = b + 1;
	mc->readable[slot] = bits;
	mc->misses++;
}

static bool mc_holds(const struct memcache *mc, size_t slot, size_t off, size_t n)
{
	for (size_t k = off / PAGE_SIZE; k <= (off + n - 1) / PAGE_SIZE; k++)
		if (!(mc->readable[slot] & 1u << k))
			return false;
	return true;
}

static int mc_read(struct memcache *mc, uint64_t addr, void *buf, size_t len)
{
	uint8_t *out = buf;
	while (len) {
		uint64_t b = addr & ~(uint64_t)(BLOCK - 1);
		size_t slot = (b / BLOCK) % NBLOCKS, off = addr - b;
		size_t n = BLOCK - off < len ? BLOCK - off : len;
		if (mc->base[slot] != b + 1)
			mc_fill(mc, slot, b);
		if (mc_holds(mc, slot, off, n)) {
			memcpy(out, mc->data + slot * BLOCK + off, n);
		} else {
			int rc = tracer_peek(mc->fd, addr, out, n); /* says why it cannot */
			if (rc < 0)
				return rc;
		}
		out += n;
		addr += n;
		len -= n;
	}
	return 0;
}

/*
 * Where [addr, addr + len) sits in the cache, read in if need be; NULL if it
 * crosses a block or a page that cannot be read (mc_read() then says why).
 * One lookup for a whole mspan instead of one per field: reading 3,000-5,000
 * mspans field by field, a dozen mc_read()s each, was most of the live set.
 */
static const uint8_t *mc_ptr(struct memcache *mc, uint64_t addr, size_t len)
{
	uint64_t b = addr & ~(uint64_t)(BLOCK - 1);
	size_t slot = (b / BLOCK) % NBLOCKS, off = addr - b;

	if (!len || off + len > BLOCK)
		return NULL;
	if (mc->base[slot] != b + 1)
		mc_fill(mc, slot, b);
	return mc_holds(mc, slot, off, len) ? mc->data + slot * BLOCK + off : NULL;
}

/*
 * One cache per capture, kept across stops: a fresh 2 MiB buffer per stop
 * would be faulted in again page by page. Emptied at each stop, since the
 * process ran in between.
 */
static struct memcache *mc_for_stop(struct capture *c)
{
	if (!c->mc) {
		c->mc = calloc(1, sizeof(*c->mc));
		if (!c->mc)
			return NULL;
		c->mc->data = malloc(BLOCK * NBLOCKS);
		if (!c->mc->data) {
			free(c->mc);
			c->mc = NULL;
			return NULL;
		}
	}
	memset(c->mc->base, 0, sizeof(c->mc->base));
	c->mc->fd = c->memfd;
	c->mc->misses = 0;
	return c->mc;
}

void capture_memcache_free(struct capture *c)
{
	if (c->mc) {
		free(c->mc->data);
		free(c->mc->order);
		free(c->mc->rec);
	}
	free(c->mc);
	c->mc = NULL;
}

static uint64_t mc_uint(struct memcache *mc, uint64_t addr, const struct go_field *f, int *err)
{
	uint64_t v = 0;
	if (*err)
		return 0;
	int r = mc_read(mc, addr + f->off, &v, f->size <= 8 ? f->size : 8);
	if (r < 0)
		*err = r;
	return v;
}

/* A Go slice header: pointer, then length. */
static int read_slice(struct memcache *mc, uint64_t addr, uint64_t **items, uint64_t *len)
{
	uint64_t hdr[2];
	int r = mc_read(mc, addr, hdr, sizeof(hdr));
	if (r < 0)
		return r;
	if (hdr[1] > (1u << 26))
		return -EBADMSG;
	*len = hdr[1];
	*items = malloc(hdr[1] * sizeof(uint64_t) + 1);
	if (!*items)
		return -ENOMEM;
	return hdr[1] ? mc_read(mc, hdr[0], *items, hdr[1] * sizeof(uint64_t)) : 0;
}

/* ---------- layout and safepoint ---------- */

int capture_load_layout(struct capture *c)
{
	char err[512];
	struct go_layout *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	struct go_debuginfo *di = &c->debuginfo;
	int r = go_debuginfo_find(c->img->exe, c->debug_file, c->debug_root, di);
	if (r < 0) {
		free(l);
		return log_error_errno(r, "cannot read executable %s", c->img->exe);
	}
	if (di->source == GO_DEBUG_NONE) {
		free(l);
		log_warn("%s: falling back to whole-mapping capture (%s)", c->img->exe, di->why);
		return 0;
	}
	r = go_layout_read(di->path, l, err, sizeof(err));
	if (r < 0) {
		free(l);
		return log_error_errno(r, "runtime layout of %s: %s", c->img->exe, err);
	}
	if (di->source != GO_DEBUG_EXE)
		log_info("%s: DWARF from %s (%s)", c->img->exe, di->path,
			 go_debug_source_name(di->source));
	c->go = l;
	return 0;
}

int capture_at_safepoint(struct capture *c, char *why, size_t whylen)
{
	const struct go_layout *l = c->go;
	struct memcache *mc = mc_for_stop(c);
	struct go_field f = {.off = 0, .size = l->gcphase_size};
	int err = 0;

	if (!mc)
		return -ENOMEM;
	uint64_t phase = mc_uint(mc, l->gcphase, &f, &err);
	uint64_t lock = mc_uint(mc, l->mheap, &l->heap_lock_key, &err);
	if (!err && phase != l->gc_off)
		snprintf(why, whylen, "GC phase %lu", (unsigned long)phase);
	else if (!err && lock)
		snprintf(why, whylen, "heap lock held");
	else
		why[0] = 0;

	struct go_field ptr = {.off = 0, .size = 8};
	uint64_t m = mc_uint(mc, l->allm, &ptr, &err);
	for (int n = 0; !err && !why[0] && m && n < 100000; n++) {
		uint64_t locks = mc_uint(mc, m, &l->m_locks, &err);
		uint64_t malloc_ = mc_uint(mc, m, &l->m_mallocing, &err);
		if (locks || malloc_)
			snprintf(why, whylen, "thread %lu %s",
				 (unsigned long)mc_uint(mc, m, &l->m_procid, &err),
				 malloc_ ? "is allocating" : "holds a runtime lock");
		m = mc_uint(mc, m, &l->m_alllink, &err);
	}
	if (err)
		return err;
	return why[0] ? 0 : 1;
}

/* ---------- the live set ---------- */

static int live_arenas(struct capture *c, struct memcache *mc, struct live_set *ls)
{
	const struct go_layout *l = c->go;
	_cleanup_free_ uint64_t *idx = NULL;
	uint64_t n;
	int r = read_slice(mc, l->mheap + l->heap_allarenas.off, &idx, &n);
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t base = idx[i] * l->arena_bytes + l->arena_base_offset;
		if ((r = rs_add(&ls->arenas, base, base + l->arena_bytes)) < 0)
			return r;
	}
	rs_normalize(&ls->arenas);
	return 0;
}

/* An in-use span's allocation state, for the scan of new objects (reach.c). */
static void span_state(const struct go_layout *l, struct memcache *mc, uint64_t span,
		       uint64_t start, uint64_t npages, struct reach_span_state *st, int *err)
{
	*st = (struct reach_span_state){
	    .span = span,
	    .base = start,
	    .npages = npages,
	    .elemsize = mc_uint(mc, span, &l->span_elemsize, err),
	    .nelems = mc_uint(mc, span, &l->span_nelems, err),
	    .freeindex = mc_uint(mc, span, &l->span_freeindex, err),
	    .allocbits = mc_uint(mc, span, &l->span_allocbits, err),
	    .specials = mc_uint(mc, span, &l->span_specials, err),
	    .sweepgen = (uint32_t)mc_uint(mc, span, &l->span_sweepgen, err),
	    .spanclass = (uint8_t)mc_uint(mc, span, &l->span_spanclass, err),
	};
}

struct span_at {
	uint64_t start, len;
	uint32_t idx;
	bool in_use;
	struct reach_span_state st; /* read with the rest while the span's block is cached */
};

/*
 * The fields of one mspan the live set uses, as read at a stop. mspans
 * live in off-heap runtime memory that write tracking covers, and the
 * runtime changes a span only by writing to its mspan: a record whose
 * mspan pages were not written since the stop that read it is still true.
 */
struct span_rec {
	uint64_t span; /* the mspan's address (allspans[i]), 0: not read */
	uint64_t state, start, npages;
	struct reach_span_state st; /* in-use spans, with reach_ok */
};

/* A field of a struct whose bytes from offset lo on are at p. */
static uint64_t field_at(const uint8_t *p, int64_t lo, const struct go_field *f)
{
	uint64_t v = 0;
	memcpy(&v, p + (f->off - lo), f->size <= 8 ? f->size : 8);
	return v;
}

/* read_span_rec() from the mspan's bytes [lo, hi) at p. */
static void span_rec_from(const struct go_layout *l, const uint8_t *p, int64_t lo, uint64_t span,
			  struct span_rec *rec)
{
	rec->state = field_at(p, lo, &l->span_state);
	if (rec->state != l->span_in_use && rec->state != l->span_manual)
		return;
	rec->start = field_at(p, lo, &l->span_start);
	rec->npages = field_at(p, lo, &l->span_npages);
	if (rec->state != l->span_in_use || !l->reach_ok)
		return;
	rec->st = (struct reach_span_state){
	    .span = span,
	    .base = rec->start,
	    .npages = rec->npages,
	    .elemsize = field_at(p, lo, &l->span_elemsize),
	    .nelems = field_at(p, lo, &l->span_nelems),
	    .freeindex = field_at(p, lo, &l->span_freeindex),
	    .allocbits = field_at(p, lo, &l->span_allocbits),
	    .specials = field_at(p, lo, &l->span_specials),
	    .sweepgen = (uint32_t)field_at(p, lo, &l->span_sweepgen),
	    .spanclass = (uint8_t)field_at(p, lo, &l->span_spanclass),
	};
}

static void read_span_rec(const struct go_layout *l, struct memcache *mc, uint64_t span,
			  int64_t lo, int64_t hi, struct span_rec *rec, int *err)
{
	const uint8_t *p = hi > lo ? mc_ptr(mc, span + lo, hi - lo) : NULL;

	memset(rec, 0, sizeof(*rec));
	rec->span = span;
	if (p) {
		span_rec_from(l, p, lo, span, rec);
		return;
	}
	/* Across two blocks, or beside memory that cannot be read: field by field. */
	rec->span = span;
	rec->state = mc_uint(mc, span, &l->span_state, err);
	if (rec->state != l->span_in_use && rec->state != l->span_manual)
		return;
	rec->start = mc_uint(mc, span, &l->span_start, err);
	rec->npages = mc_uint(mc, span, &l->span_npages, err);
	if (rec->state == l->span_in_use && l->reach_ok)
		span_state(l, mc, span, rec->start, rec->npages, &rec->st, err);
}

static bool span_rec_equal(const struct span_rec *a, const struct span_rec *b)
{
	const struct reach_span_state *x = &a->st, *y = &b->st;
	return a->span == b->span && a->state == b->state && a->start == b->start &&
	       a->npages == b->npages && x->span == y->span && x->base == y->base &&
	       x->npages == y->npages && x->elemsize == y->elemsize && x->nelems == y->nelems &&
	       x->freeindex == y->freeindex && x->allocbits == y->allocbits &&
	       x->specials == y->specials && x->sweepgen == y->sweepgen &&
	       x->spanclass == y->spanclass;
}

/* One span of allspans: an in-use one is returned in *in_use, a manual one goes to stacks. */
static int live_span(const struct go_layout *l, struct live_set *ls, const struct span_rec *rec,
		     struct span_at *in_use)
{
	in_use->in_use = false;
	if (rec->state != l->span_in_use && rec->state != l->span_manual)
		return 0;
	uint64_t len = rec->npages * l->page_size;
	if (len > l->arena_bytes * 1024)
		return -EBADMSG;
	if (rec->state == l->span_manual)
		return rs_add(&ls->stacks, rec->start, rec->start + len);
	*in_use = (struct span_at){.start = rec->start, .len = len, .in_use = true, .st = rec->st};
	return 0;
}

/* Bytes [lo, hi) of an mspan that hold the fields read_span_rec() reads. */
static void span_extent(const struct go_layout *l, int64_t *lo, int64_t *hi)
{
	const struct go_field *f[] = {&l->span_state,	  &l->span_start,    &l->span_npages,
				      &l->span_elemsize,  &l->span_nelems,   &l->span_freeindex,
				      &l->span_allocbits, &l->span_specials, &l->span_sweepgen,
				      &l->span_spanclass};
	*lo = INT64_MAX;
	*hi = 0;
	for (size_t k = 0; k < ARRAY_SIZE(f); k++) {
		if (f[k]->off < 0)
			continue;
		if (f[k]->off < *lo)
			*lo = f[k]->off;
		if (f[k]->off + (int64_t)f[k]->size > *hi)
			*hi = f[k]->off + (int64_t)f[k]->size;
	}
}

/*
 * The mappings write tracking covers, as bare ranges: searching the
 * struct proc_vma array itself (4 KiB apart) for each of 3,000-5,000
 * mspans missed the CPU cache at every step.
 */
static int tracked_ranges(const struct proc_vma *vmas, size_t n_vmas, struct rangeset *out)
{
	for (size_t i = 0; i < n_vmas; i++)
		if (wp_vma_tracked(&vmas[i]) && rs_add(out, vmas[i].start, vmas[i].end) < 0)
			return -ENOMEM;
	rs_normalize(out);
	return 0;
}

/*
 * May [s, e) have changed since the scan the span cache is current for?
 * Yes unless it lies in mappings write tracking covers and no page of it
 * is in `written`, what the scans after that one found written.
 */
static bool maybe_written(const struct rangeset *tracked, const struct range *written,
			  size_t n_written, uint64_t s, uint64_t e)
{
	size_t t = rs_find(tracked, s);

	if (t == tracked->n || tracked->r[t].s > s || tracked->r[t].e < e)
		return true;
	size_t i = range_find(written, n_written, PAGE_ALIGN_DOWN(s));
	return i < n_written && written[i].s < e;
}

/*
 * May this stop take records from the span cache? Only when write tracking
 * ran without a gap since the scan the cache is current for (the last
 * stop's, or the last pre-copy round's: capture_live_refresh): its seq is
 * exactly one scan on, the collect of this stop (dump.c runs it first),
 * and w->fresh holds every write since.
 */
static bool span_cache_usable(const struct capture *c, const struct memcache *mc)
{
	return c->wp && c->wp->uffd >= 0 && mc->rec_valid && c->wp->seq == mc->rec_seq + 1;
}

/*
 * The debug check (CHECKSYNC_CHECK_LIVE_SET=N, tests/test_live_set_cache.py):
 * every N stops that used the cache, read every span again and compare.
 * A difference fails the epoch loudly: a stale record would silently
 * restore a live object as zero.
 */
static int span_cache_check(struct capture *c, struct memcache *mc, const uint64_t *spans,
			    uint64_t n)
{
	const struct go_layout *l = c->go;
	size_t compared = 0;
	int err = 0;

	for (uint64_t i = 0; i < n; i++) {
		struct span_rec fresh;
		if (!spans[i])
			continue;
		/* Field by field (lo == hi): it checks the one-lookup reads too. */
		read_span_rec(l, mc, spans[i], 0, 0, &fresh, &err);
		if (err)
			return err;
		if (!span_rec_equal(&fresh, &mc->rec[i])) {
			/* A warning: errors inside an epoch are held and summed up (guard.c). */
			log_warn("live set of pid %d: the span cache differs from a full read at "
				 "allspans[%lu] (mspan %#lx: state %lu/%lu, start %#lx/%#lx, "
				 "freeindex %lu/%lu): a write went unseen",
				 c->pid, (unsigned long)i, (unsigned long)spans[i],
				 (unsigned long)mc->rec[i].state, (unsigned long)fresh.state,
				 (unsigned long)mc->rec[i].start, (unsigned long)fresh.start,
				 (unsigned long)mc->rec[i].st.freeindex,
				 (unsigned long)fresh.st.freeindex);
			return -EIO;
		}
		compared++;
	}
	log_info("live set of pid %d: span cache checked against a full read: %zu spans equal "
		 "(%lu kept, %lu read this stop)", c->pid, compared,
		 (unsigned long)c->stats.spans_kept, (unsigned long)c->stats.spans_read);
	return 0;
}

/* Records read per process_vm_readv, and the most bytes of an mspan a record takes. */
#define REC_BATCH 512
#define REC_MAX_BYTES 512

/*
 * Read the records of spans[idx[0..n)]: the [lo, hi) bytes of many mspans
 * per process_vm_readv. Re-read mspans lie scattered over the runtime's
 * memory; read through the block cache, each cost a 16 KiB pread of its
 * own (2,000 of them, 5-8 ms of a stop of a 250 MB heap). An mspan the
 * call cannot read is read alone, as before (read_span_rec()).
 */
static int read_recs(struct capture *c, struct memcache *mc, const uint64_t *spans,
		     const uint32_t *idx, size_t n, int64_t lo, int64_t hi)
{
	const struct go_layout *l = c->go;
	size_t ext = hi > lo ? (size_t)(hi - lo) : 0;
	struct iovec local[REC_BATCH], remote[REC_BATCH];
	_cleanup_free_ uint8_t *buf = NULL;
	int err = 0;

	if (ext && ext <= REC_MAX_BYTES && !(buf = malloc(REC_BATCH * ext)))
		return -ENOMEM;
	for (size_t k = 0; k < n && !err; k += REC_BATCH) {
		size_t m = n - k < REC_BATCH ? n - k : REC_BATCH, whole = 0;
		for (size_t j = 0; buf && j < m; j++) {
			uint64_t at = spans[idx[k + j]] + lo;
			local[j] = (struct iovec){buf + j * ext, ext};
			remote[j] = (struct iovec){(void *)(uintptr_t)at, ext};
		}
		if (buf) {
			ssize_t got = process_vm_readv(c->pid, local, m, remote, m, 0);
			whole = got > 0 ? (size_t)got / ext : 0; /* never a part of an iovec */
		}
		for (size_t j = 0; j < m; j++) {
			uint64_t span = spans[idx[k + j]];
			struct span_rec *rec = &mc->rec[idx[k + j]];
			if (j < whole) {
				memset(rec, 0, sizeof(*rec));
				rec->span = span;
				span_rec_from(l, buf + j * ext, lo, span, rec);
			} else {
				read_span_rec(l, mc, span, lo, hi, rec, &err);
			}
		}
	}
	return err;
}

/*
 * Make mc->rec[i] current for every i < n with spans[i] set: a record of
 * the same mspan is kept when cached and no byte of it is in `written`
 * (sorted ranges written since the scan the cache is current for), the
 * others are read. *kept and *read count them.
 */
static int recs_current(struct capture *c, struct memcache *mc, const uint64_t *spans, uint64_t n,
			bool cached, const struct rangeset *tracked, const struct range *written,
			size_t n_written, uint64_t *kept, uint64_t *read)
{
	_cleanup_free_ uint32_t *idx = NULL;
	size_t n_idx = 0, cap_idx = 0;
	int64_t lo, hi;

	span_extent(c->go, &lo, &hi);
	for (uint64_t i = 0; i < n; i++) {
		const struct span_rec *rec = &mc->rec[i];
		if (!spans[i])
			continue;
		if (cached && rec->span == spans[i] &&
		    !maybe_written(tracked, written, n_written, spans[i] + lo, spans[i] + hi)) {
			(*kept)++;
			continue;
		}
		uint32_t *x = array_push(&idx, &n_idx, &cap_idx, sizeof(*x));
		if (!x)
			return -ENOMEM;
		*x = (uint32_t)i;
	}
	*read += n_idx;
	return read_recs(c, mc, spans, idx, n_idx, lo, hi);
}

static int cmp_span_at(const void *a, const void *b)
{
	const struct span_at *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/*
 * Sort spans that come mostly in address order: the ones in order stay,
 * the others (reused for other pages, new) are sorted apart and merged in.
 */
static int sort_spans_at(struct span_at *v, size_t n)
{
	size_t kept = 0, n_odd = 0;
	uint64_t last = 0;

	for (size_t i = 0; i < n; i++)
		if (i && v[i].start < last)
			n_odd++;
		else
			last = v[i].start;
	if (!n_odd)
		return 0;
	_cleanup_free_ struct span_at *odd = malloc(n_odd * sizeof(*odd));
	if (!odd)
		return -ENOMEM;
	n_odd = 0;
	for (size_t i = 0; i < n; i++) {
		if (!kept || v[i].start >= v[kept - 1].start)
			v[kept++] = v[i];
		else
			odd[n_odd++] = v[i];
	}
	qsort(odd, n_odd, sizeof(*odd), cmp_span_at);
	/* Merge from the back, into v's own room. */
	size_t i = kept, j = n_odd, k = n;
	while (j) {
		if (i && v[i - 1].start > odd[j - 1].start)
			v[--k] = v[--i];
		else
			v[--k] = odd[--j];
	}
	return 0;
}

/*
 * allspans only grows, and a span keeps its slot; its address changes only
 * when the runtime reuses the span for other pages. So the spans are read
 * in the order the last stop found them in address order, then the rest,
 * and sorted from there (sort_spans_at). Sorting 1,100-4,000 spans twice
 * in each stop (rs_normalize here, qsort in reach.c) cost 0.7-1.3 ms of
 * the pause; now 0.15-0.3 ms, though a third to most of them change place
 * between stops of the paper's workload (measured, bench, loaded).
 */
static int live_spans(struct capture *c, struct memcache *mc, struct live_set *ls)
{
	const struct go_layout *l = c->go;
	_cleanup_free_ uint64_t *spans = NULL;
	_cleanup_free_ uint8_t *seen = NULL;
	_cleanup_free_ struct span_at *at = NULL;
	__attribute__((cleanup(rs_free))) struct rangeset tracked = {0};
	size_t n_at = 0, cap_at = 0;
	bool cached = span_cache_usable(c, mc);
	uint64_t n;
	int r = read_slice(mc, l->mheap + l->heap_allspans.off, &spans, &n);
	if (r < 0)
		return r;
	if (n > UINT32_MAX)
		return -EBADMSG;
	if (!(seen = calloc(n + 1, 1)))
		return -ENOMEM;
	/* Filled again below: until then it is no stop's. */
	mc->rec_valid = false;
	if (n > mc->cap_rec) {
		struct span_rec *v = realloc(mc->rec, n * sizeof(*v));
		if (!v)
			return -ENOMEM;
		memset(v + mc->cap_rec, 0, (n - mc->cap_rec) * sizeof(*v));
		mc->rec = v;
		mc->cap_rec = n;
	}
	if (cached && tracked_ranges(c->vmas, c->n_vmas, &tracked) < 0)
		return -ENOMEM;
	r = recs_current(c, mc, spans, n, cached, &tracked, cached ? c->wp->fresh : NULL,
			 cached ? c->wp->n_fresh : 0, &c->stats.spans_kept, &c->stats.spans_read);
	if (r < 0)
		return r;
	for (size_t k = 0; k < mc->n_order + n; k++) {
		uint64_t i = k < mc->n_order ? mc->order[k] : k - mc->n_order;
		struct span_at one;
		if (i >= n || seen[i] || !spans[i])
			continue;
		seen[i] = 1;
		/* Dead mspans too: their stale startAddr and limit are no roots either. */
		if (l->reach_ok && (r = reach_note_mspan(c, spans[i])) < 0)
			return r;
		r = live_span(l, ls, &mc->rec[i], &one);
		if (r >= 0 && one.in_use) {
			struct span_at *a = array_push(&at, &n_at, &cap_at, sizeof(*a));
			r = a ? (one.idx = (uint32_t)i, *a = one, 0) : -ENOMEM;
		}
		if (r < 0)
			return r;
	}
	mc->n_rec = n;
	if (cached && c->live_check_every && ++mc->rec_stops % c->live_check_every == 0 &&
	    (r = span_cache_check(c, mc, spans, n)) < 0)
		return r;
	r = sort_spans_at(at, n_at);
	for (size_t k = 0; k < n_at && r >= 0; k++) {
		r = rs_add(&ls->heap, at[k].start, at[k].start + at[k].len);
		if (r >= 0 && l->reach_ok)
			r = reach_note_span(c, &at[k].st);
	}
	if (r < 0)
		return r;
	/* reach_spans_end() sorts what was noted: after the resume (capture_live_set_end). */
	mc->spans_noted = l->reach_ok;
	rs_normalize(&ls->heap);
	rs_normalize(&ls->stacks);
	/* The next stop reads them in this order. */
	if (n_at > mc->cap_order) {
		uint32_t *o = realloc(mc->order, n_at * sizeof(*o));
		if (!o)
			return -ENOMEM;
		mc->order = o;
		mc->cap_order = n_at;
	}
	for (size_t k = 0; k < n_at; k++)
		mc->order[k] = at[k].idx;
	mc->n_order = n_at;
	/* The next stop may take these records if write tracking goes on without a gap. */
	if (c->wp && c->wp->uffd >= 0) {
		mc->rec_valid = true;
		mc->rec_seq = c->wp->seq;
	}
	return 0;
}

/*
 * Re-read the records of the span cache whose mspans w->dirty says were
 * written, so that the cache is current for w's last scan. On a GC-heavy
 * service sweeping rewrites most mspans every epoch: read here, in a
 * pre-copy round, the stop re-reads only what was written since.
 */
static int refresh_spans(struct capture *c, struct memcache *mc, const struct wp_tracker *w,
			 const struct rangeset *tracked, uint64_t *read)
{
	const struct go_layout *l = c->go;
	_cleanup_free_ uint64_t *spans = NULL;
	uint64_t n, kept = 0;
	int r = read_slice(mc, l->mheap + l->heap_allspans.off, &spans, &n);
	if (r < 0)
		return r;
	/*
	 * allspans only grows: shorter than at the last stop, or with a hole,
	 * it was read torn, and records it does not reach would be claimed
	 * current unread.
	 */
	if (n < mc->n_rec)
		return -EAGAIN;
	for (uint64_t i = 0; i < mc->n_rec; i++)
		if (!spans[i])
			return -EAGAIN;
	/* Spans new since the last stop are few: the next stop reads them. */
	return recs_current(c, mc, spans, mc->n_rec, true, tracked, w->dirty, w->n, &kept, read);
}

int capture_live_refresh(struct capture *c, const struct wp_tracker *w, const struct proc_vma *vmas,
			 size_t n_vmas, uint64_t *read)
{
	__attribute__((cleanup(rs_free))) struct rangeset tracked = {0};
	struct memcache *mc = c->mc;

	/*
	 * Only a cache current for the scan just before this one can be
	 * brought forward: w->dirty is what was written between the two.
	 */
	if (!mc || !c->go || !mc->rec_valid || w->uffd < 0 || w->seq != mc->rec_seq + 1)
		return 0;
	mc->rec_valid = false;
	if (!mc_for_stop(c) || tracked_ranges(vmas, n_vmas, &tracked) < 0)
		return -ENOMEM;
	/*
	 * The service runs: a record read after the scan re-armed its pages
	 * is what a stop would read, unless the mspan is written after the
	 * re-arm, and then the next scan reports it. A read that fails (a span
	 * freed and its memory gone) only leaves the cache unusable.
	 */
	if (refresh_spans(c, mc, w, &tracked, read) < 0)
		return 0;
	mc->rec_valid = true;
	mc->rec_seq = w->seq;
	return 0;
}

static bool rs_intersects(const struct rangeset *rs, uint64_t s, uint64_t e)
{
	size_t i = rs_find(rs, s);
	return i < rs->n && rs->r[i].s < e;
}

/*
 * The heap bitmap of an arena page is rewritten (initSpan) whenever a span
 * is allocated there, so bitmap pages that describe only free arena pages
 * are dead and restore as zero, like the pages they describe.
 */
static int live_dead_bitmaps(struct capture *c, struct memcache *mc, struct live_set *ls)
{
	const struct go_layout *l = c->go;
	struct go_field ptr = {.off = 0, .size = 8};
	int err = 0;

	if (l->arena_bitmap.off < 0 || !l->arena_bitmap.size)
		return 0;
	uint64_t ratio = l->arena_bytes / l->arena_bitmap.size;
	uint64_t l2mask = (1ULL << l->arena_l2_bits) - 1;
	for (size_t i = 0; i < ls->arenas.n && !err; i++) {
		for (uint64_t base = ls->arenas.r[i].s; base < ls->arenas.r[i].e;
		     base += l->arena_bytes) {
			uint64_t idx = (base - l->arena_base_offset) / l->arena_bytes;
			uint64_t l1 = mc_uint(mc, l->mheap + l->heap_arenas.off +
						      (idx >> l->arena_l2_bits) * 8, &ptr, &err);
			uint64_t ha = l1 ? mc_uint(mc, l1 + (idx & l2mask) * 8, &ptr, &err) : 0;
			if (!ha)
				continue;
			uint64_t bm = ha + l->arena_bitmap.off;
			for (uint64_t p = PAGE_ALIGN_UP(bm); p + PAGE_SIZE <= bm + l->arena_bitmap.size;
			     p += PAGE_SIZE) {
				uint64_t s = base + (p - bm) * ratio, e = s + PAGE_SIZE * ratio;
				if (rs_intersects(&ls->heap, s, e) || rs_intersects(&ls->stacks, s, e))
					continue;
				if (rs_add(&ls->dead_meta, p, p + PAGE_SIZE) < 0)
					return -ENOMEM;
			}
		}
	}
	rs_normalize(&ls->dead_meta);
	return err;
}

static const struct tracee *thread_of(const struct capture *c, uint64_t tid)
{
	for (size_t i = 0; i < c->n_threads; i++)
		if ((uint64_t)c->threads[i].tid == tid)
			return &c->threads[i];
	return NULL;
}

/* Record [lo, sp - slack) of one stack as unused; sp == 0 means all of it. */
static int stack_unused(struct rangeset *unused, uint64_t lo, uint64_t hi, uint64_t sp, bool all)
{
	if (!lo || lo >= hi)
		return 0;
	if (all)
		return rs_add(unused, lo, hi);
	if (sp <= lo + STACK_SLACK || sp > hi)
		return 0;
	return rs_add(unused, lo, sp - STACK_SLACK);
}

/*
 * Stacks of the Ms themselves: g0 and the signal stack. A signal stack not
 * under the thread's stack pointer holds nothing; g0 we keep unless the
 * thread is on it.
 */
/* A goroutine on a thread: only that thread's rsp tells where its stack ends. */
struct running_g {
	uint64_t g, rsp;
};

struct running_set {
	struct running_g *v;
	size_t n, cap;
};

static int unused_m_stacks(struct capture *c, struct memcache *mc, struct rangeset *unused,
			   struct running_set *running)
{
	const struct go_layout *l = c->go;
	struct go_field ptr = {.off = 0, .size = 8};
	int err = 0;
	uint64_t m = mc_uint(mc, l->allm, &ptr, &err);

	for (int n = 0; !err && m && n < 100000; n++) {
		const struct tracee *t = thread_of(c, mc_uint(mc, m, &l->m_procid, &err));
		uint64_t rsp = t ? t->regs.rsp : 0;
		uint64_t g0 = mc_uint(mc, m, &l->m_g0, &err);
		uint64_t gs = mc_uint(mc, m, &l->m_gsignal, &err);
		uint64_t curg = mc_uint(mc, m, &l->m_curg, &err);
		if (curg) {
			struct running_g *rg = array_push(&running->v, &running->n, &running->cap,
							  sizeof(*rg));
			if (!rg)
				return -ENOMEM;
			rg->g = curg;
			rg->rsp = rsp;
		}
		if (gs) {
			uint64_t lo = mc_uint(mc, gs, &l->g_stack_lo, &err);
			uint64_t hi = mc_uint(mc, gs, &l->g_stack_hi, &err);
			bool on = rsp >= lo && rsp < hi;
			if (stack_unused(unused, lo, hi, rsp, !on) < 0)
				return -ENOMEM;
		}
		if (g0 && rsp) {
			uint64_t lo = mc_uint(mc, g0, &l->g_stack_lo, &err);
			uint64_t hi = mc_uint(mc, g0, &l->g_stack_hi, &err);
			if (rsp >= lo && rsp < hi && stack_unused(unused, lo, hi, rsp, false) < 0)
				return -ENOMEM;
		}
		m = mc_uint(mc, m, &l->m_alllink, &err);
	}
	return err;
}

/* The stack pointer of a goroutine we can trust, or 0 to keep its whole stack. */
static uint64_t goroutine_sp(struct capture *c, struct memcache *mc, uint64_t g, uint64_t status,
			     const struct running_set *running, int *err)
{
	const struct go_layout *l = c->go;

	/* Its saved sp may be stale (a signal handler may run on top of it). */
	for (size_t i = 0; i < running->n; i++)
		if (running->v[i].g == g)
			return running->v[i].rsp;
	if (status == l->g_syscall)
		return mc_uint(mc, g, &l->g_syscallsp, err);
	if (status == l->g_runnable || status == l->g_waiting || status == l->g_preempted)
		return mc_uint(mc, g, &l->g_sched_sp, err);
	return 0; /* running, being scanned, copying its stack: keep it all */
}

static int unused_goroutine_stacks(struct capture *c, struct memcache *mc,
				   struct rangeset *unused, const struct running_set *running)
{
	const struct go_layout *l = c->go;
	_cleanup_free_ uint64_t *gs = NULL;
	uint64_t n;
	int err = 0;
	int r = read_slice(mc, l->allgs, &gs, &n);
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < n && !err; i++) {
		if (!gs[i])
			continue;
		uint64_t status = mc_uint(mc, gs[i], &l->g_status, &err);
		uint64_t lo = mc_uint(mc, gs[i], &l->g_stack_lo, &err);
		uint64_t hi = mc_uint(mc, gs[i], &l->g_stack_hi, &err);
		if (status == l->g_dead) {
			r = stack_unused(unused, lo, hi, 0, true);
		} else {
			uint64_t sp = goroutine_sp(c, mc, gs[i], status, running, &err);
			r = sp ? stack_unused(unused, lo, hi, sp, false) : 0;
		}
		if (r < 0)
			return r;
	}
	return err;
}

static void live_exe_range(struct capture *c, struct live_set *ls)
{
	for (size_t i = 0; i < c->n_vmas; i++) {
		const struct proc_vma *v = &c->vmas[i];
		if (v->kind == VMA_FILE && strcmp(v->path, c->img->exe) == 0) {
			if (!ls->exe_lo)
				ls->exe_lo = v->start;
			ls->exe_hi = v->end;
			/* .bss continues in the anonymous mapping right after the file. */
			if (i + 1 < c->n_vmas && c->vmas[i + 1].kind == VMA_ANON &&
			    c->vmas[i + 1].start == v->end)
				ls->exe_hi = c->vmas[i + 1].end;
		}
	}
}

void capture_live_set_end(struct capture *c)
{
	if (c->mc && c->mc->spans_noted)
		reach_spans_end(c);
	if (c->mc)
		c->mc->spans_noted = false;
}

void capture_live_free(struct capture *c)
{
	if (!c->live)
		return;
	free(c->live->arenas.r);
	free(c->live->heap.r);
	free(c->live->stacks.r);
	free(c->live->dead_meta.r);
	free(c->live->dead_stacks.r);
	free(c->live);
	c->live = NULL;
}

int capture_live_set(struct capture *c)
{

	struct memcache *mc = mc_for_stop(c);
	struct rangeset unused = {0};
	struct running_set running = {0};
	struct live_set *ls = calloc(1, sizeof(*ls));
	int r;

	if (!ls)
		return -ENOMEM;
	c->live = ls;
	live_exe_range(c, ls);
	if (!mc)
		return -ENOMEM;
	mc->spans_noted = false;
	r = live_arenas(c, mc, ls);
	if (r >= 0 && c->go->reach_ok) {
		struct go_field f = c->go->heap_sweepgen;
		int err = 0;
		uint32_t sg = (uint32_t)mc_uint(mc, c->go->mheap, &f, &err);
		r = err ? err : reach_spans_begin(c, sg);
	}
	if (r >= 0)
		r = live_spans(c, mc, ls);
	if (r >= 0)
		r = unused_m_stacks(c, mc, &unused, &running);
	if (r >= 0)
		r = unused_goroutine_stacks(c, mc, &unused, &running);
	if (r >= 0) {
		rs_normalize(&unused);
		r = rs_subtract(&ls->stacks, &unused);
	}
	if (r >= 0)
		r = live_dead_bitmaps(c, mc, ls);
	log_debug("live set: %zu arenas, %zu heap ranges, %zu stack ranges, %u block reads",
		  ls->arenas.n, ls->heap.n, ls->stacks.n, mc->misses);
	if (r >= 0)
		ls->dead_stacks = unused;
	else
		free(unused.r);
	free(running.v);
	if (r < 0)
		capture_live_free(c);
	return r;
}

struct merge_ctx {
	const struct live_set *ls;
	int (*emit)(void *, uint64_t, uint64_t);
	void *ctx;
};

/*
 * The in-use spans and the stacks of [s, e), merged in address order: an
 * image's page runs ascend (image.h), and what walks them together with
 * another sorted list (wp_carry_unshipped(), the backup's comparisons)
 * relies on it. Emitting all heap ranges, then all stack ranges, put stack
 * runs behind higher heap runs.
 */
static int emit_live_piece(void *p, uint64_t s, uint64_t e)
{
	struct merge_ctx *m = p;
	const struct rangeset *heap = &m->ls->heap, *stacks = &m->ls->stacks;
	size_t i = rs_find(heap, s), j = rs_find(stacks, s);

	for (;;) {
		bool h = i < heap->n && heap->r[i].s < e, st = j < stacks->n && stacks->r[j].s < e;
		if (!h && !st)
			return 0;
		const struct range *r = h && (!st || heap->r[i].s < stacks->r[j].s) ? &heap->r[i++]
										 : &stacks->r[j++];
		uint64_t a = r->s > s ? r->s : s, b = r->e < e ? r->e : e;
		int rc = a < b ? m->emit(m->ctx, a, b) : 0;
		if (rc < 0)
			return rc;
	}
}

/* Emit [s, e) less the dead metadata pages. */
static int emit_outside_arenas(const struct live_set *ls, uint64_t s, uint64_t e,
			       int (*emit)(void *, uint64_t, uint64_t), void *ctx)
{
	const struct rangeset *dead = &ls->dead_meta;
	for (size_t i = rs_find(dead, s); i < dead->n && dead->r[i].s < e && s < e; i++) {
		int r = dead->r[i].s > s ? emit(ctx, s, dead->r[i].s) : 0;
		if (r < 0)
			return r;
		s = dead->r[i].e;
	}
	return s < e ? emit(ctx, s, e) : 0;
}

int capture_live_filter(struct capture *c, uint64_t start, uint64_t end,
			int (*emit)(void *ctx, uint64_t s, uint64_t e), void *ctx)
{
	const struct live_set *ls = c->live;
	struct merge_ctx m = {.ls = ls, .emit = emit, .ctx = ctx};
	uint64_t s = start;
	int r;

	if (!ls)
		return emit(ctx, start, end);
	for (size_t i = rs_find(&ls->arenas, start); i < ls->arenas.n && s < end; i++) {
		const struct range *a = &ls->arenas.r[i];
		if (a->s >= end)
			break;
		if (a->s > s && (r = emit_outside_arenas(ls, s, a->s, emit, ctx)) < 0)
			return r;
		uint64_t ae = a->e < end ? a->e : end;
		uint64_t as = a->s > s ? a->s : s;
		if ((r = emit_live_piece(&m, as, ae)) < 0)
			return r;
		s = ae;
	}
	return s < end ? emit_outside_arenas(ls, s, end, emit, ctx) : 0;
}

bool capture_live_dead_stack(const struct capture *c, uint64_t addr)
{
	return c->live && rs_contains(&c->live->dead_stacks, addr);
}

enum mem_class capture_classify(const struct capture *c, uint64_t addr)
{
	const struct live_set *ls = c->live;
	if (ls && rs_contains(&ls->stacks, addr))
		return MC_STACKS;
	if (ls && rs_contains(&ls->arenas, addr))
		return MC_HEAP;
	if (ls && addr >= ls->exe_lo && addr < ls->exe_hi)
		return MC_GLOBALS;
	return MC_OFFHEAP;
}
