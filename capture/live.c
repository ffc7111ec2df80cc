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
#include <sys/user.h>

#include "capture.h"
#include "goruntime.h"
#include "log.h"
#include "range.h"
#include "reach.h"
#include "util.h"

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

struct memcache {
	int fd;
	uint64_t base[NBLOCKS];
	uint8_t *data;
	unsigned misses;
};

static int mc_read(struct memcache *mc, uint64_t addr, void *buf, size_t len)
{
	uint8_t *out = buf;
	while (len) {
		uint64_t b = addr & ~(uint64_t)(BLOCK - 1);
		size_t slot = (b / BLOCK) % NBLOCKS, off = addr - b;
		size_t n = BLOCK - off < len ? BLOCK - off : len;
		uint8_t *blk = mc->data + slot * BLOCK;
		if (mc->base[slot] != b + 1) {
			/* Blocks may end in unmapped memory; a short read is fine, a zero one is not. */
			ssize_t r = pread(mc->fd, blk, BLOCK, b);
			if (r < (ssize_t)(off + n)) {
				mc->base[slot] = 0;
				int rc = tracer_peek(mc->fd, addr, out, n);
				if (rc < 0)
					return rc;
				goto next;
			}
			mc->base[slot] = b + 1;
			mc->misses++;
		}
		memcpy(out, blk + off, n);
next:
		out += n;
		addr += n;
		len -= n;
	}
	return 0;
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
	if (c->mc)
		free(c->mc->data);
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
static int note_span(struct capture *c, struct memcache *mc, uint64_t span, uint64_t start,
		     uint64_t npages, int *err)
{
	const struct go_layout *l = c->go;
	struct reach_span_state st = {
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
	return *err ? *err : reach_note_span(c, &st);
}

static int live_spans(struct capture *c, struct memcache *mc, struct live_set *ls)
{
	const struct go_layout *l = c->go;
	_cleanup_free_ uint64_t *spans = NULL;
	uint64_t n;
	int err = 0;
	int r = read_slice(mc, l->mheap + l->heap_allspans.off, &spans, &n);
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < n && !err; i++) {
		if (!spans[i])
			continue;
		/* Dead mspans too: their stale startAddr and limit are no roots either. */
		if (l->reach_ok && (r = reach_note_mspan(c, spans[i])) < 0)
			return r;
		uint64_t state = mc_uint(mc, spans[i], &l->span_state, &err);
		if (state != l->span_in_use && state != l->span_manual)
			continue;
		uint64_t start = mc_uint(mc, spans[i], &l->span_start, &err);
		uint64_t len = mc_uint(mc, spans[i], &l->span_npages, &err) * l->page_size;
		if (len > l->arena_bytes * 1024)
			return -EBADMSG;
		r = rs_add(state == l->span_in_use ? &ls->heap : &ls->stacks, start, start + len);
		if (r >= 0 && state == l->span_in_use && l->reach_ok)
			r = note_span(c, mc, spans[i], start, len / l->page_size, &err);
		if (r < 0)
			return r;
	}
	if (!err && l->reach_ok)
		reach_spans_end(c);
	rs_normalize(&ls->heap);
	rs_normalize(&ls->stacks);
	return err;
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
