/*
 * reach.c - ship only the new objects that are reachable.
 *
 * Which objects are new. Each stop records every in-use span's allocation
 * state (live.c reads it from runtime.mspan through DWARF). A slot of a
 * span is allocated when it lies below freeindex or its allocBits bit is
 * set; allocBits only change when the sweeper swaps in the mark bits, and
 * freeindex only grows between sweeps. So an object is new since the
 * previous stop when:
 *   - its span was not in use then (another mspan, size or length at that
 *     base, or nothing): every allocated slot is new;
 *   - its span was, it has not been swept since (it was last swept in the
 *     same sweep cycle then and now, sweep_cycle(), even if a GC cycle
 *     began in between and the sweeper has not reached it yet), and the
 *     allocBits are the same array: the slots in [old freeindex, freeindex)
 *     whose bit is clear;
 *   - its span was, and has been swept since (a cycle began after the
 *     previous stop and the span is swept in the current one, or it was
 *     unswept then and is swept now): the slots below freeindex whose bit
 *     is clear, since freeindex starts again at 0 at a sweep and the
 *     survivors are in allocBits.
 * Anything else counts as old: misfiling a new object as old costs bytes,
 * never soundness.
 *
 * Roots. A page not written since the previous stop holds what it held
 * then. A live pointer there pointed at an object that was allocated then
 * and cannot have been freed since (the pointer is live), so it is not
 * new. Hence the roots are every staged word that is not inside a new
 * object: the written pages (old objects, globals, off-heap runtime
 * memory, C memory, thread and goroutine stacks, span tails, everything
 * outside the arenas) and the threads' registers and vector state. The
 * scan is conservative: any aligned word with a value inside a new object
 * keeps that object, and the closure runs over the staged bytes of the
 * new objects reached. Bytes of a new object that are not staged were not
 * written since the previous stop, when the slot was free: mallocgc
 * zeroes (writes) pointerful memory unless it came zero from the OS, so
 * they hold no pointer. Objects with specials (finalizers, weak handles,
 * profile records: the runtime stores offsets, not pointers, and scans
 * from them) never count as new; nor does any span when the process has a
 * writable shared mapping (not staged, so it cannot be scanned).
 *
 * Why zero is safe for the rest. An unreachable object stays unreachable:
 * no pointer to it exists to copy. The restored runtime reads an allocated
 * object's bytes only when it marks it, which needs a pointer; when it is
 * swept and freed, the sweeper sets span.needzero and mallocgc clears it
 * before reuse (for a span fresh from the OS, needzero == 0, zero is what
 * mallocgc expects there). A stale dead word in a goroutine frame that the
 * restored GC scans conservatively (an asynchronously preempted frame) may
 * mark a zeroed object; its pointer fields are then nil, which is
 * harmless, provided its type is still known: with Go 1.22+ malloc headers
 * the first word of a small object over minSizeForMallocHeader names its
 * type, so that word is shipped, not zeroed (large objects keep theirs in
 * mspan.largeType; smaller ones have their bitmap at the span's end, which
 * is no object and always ships). Where any of this cannot be decided
 * soundly, the scan ships the span-level set as before (state says why).
 */
#include "reach.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>

#include "capture.h"
#include "image/image.h"
#include "log.h"
#include "status.h"
#include "util.h"

struct rtable {
	struct reach_span_state *v;
	size_t n, cap;
	uint64_t seq; /* the stop it was taken at */
	uint32_t heap_sweepgen;
	bool complete;
};

/* A span with new objects, for the scan. */
struct nspan {
	uint64_t base, end, elemsize;
	size_t first;  /* index of its first slot in reach.slot */
	uint32_t nelems;
	uint64_t div_mul; /* slot_in(): 2^32 / elemsize rounded up, or 0 */
	bool header;   /* the first word of each object is a malloc header */
	bool noscan;
};

/* SLOT_REACHED_OLD_HEAP: first reached from a word of an old heap object (a store's map). */
enum { SLOT_OLD = 0, SLOT_NEW, SLOT_REACHED, SLOT_REACHED_OLD_HEAP };

/* The parts of a scan, in order; each runs in bounded pieces (capture_reach_step). */
enum reach_phase {
	RP_IDLE,
	RP_FIND,  /* which spans may hold new objects (the stop's table against the last) */
	RP_READ,  /* their allocBits, from the running process */
	RP_ADD,   /* their new slots */
	RP_CHECK, /* no sweep since the stop; the lookup tables */
	RP_ROOTS,
	RP_THREADS,
	RP_CLOSURE,
	RP_ZERO,
	RP_COUNT,
	RP_DONE
};

/* Roots scanned per piece, closure objects and spans zeroed per piece: well under 1 ms each. */
#define ROOT_PIECE (256u << 10)
#define CLOSURE_PIECE 256u
#define ZERO_PIECE 64u
#define COUNT_PIECE 16u
#define FIND_PIECE 4096u
#define ADD_PIECE 256u

struct bits_want;

/* A reached new object still to scan: slot k of span ns. */
struct reach_work {
	size_t k;
	uint32_t ns;
};

struct reach {
	uint64_t seq; /* stops begun */
	struct rtable prev, cur;
	struct nspan *ns;
	size_t n_ns, cap_ns;
	uint8_t *slot;
	size_t n_slot, cap_slot;
	struct reach_work *work;
	size_t n_work, cap_work;
	uint64_t lo, hi; /* bounds of every new object */
	struct reach_totals totals;
	/* New objects first reached from roots of each mem_class (MC_COUNT: registers), for -v. */
	uint64_t root_hits[MC_COUNT + 1];
	int root_class; /* -1 during the closure */
	uint32_t *page_ns; /* by heap page in [lo, hi): index into ns + 1, or 0 */
	/* The image's runs by address (live.c emits heap and stack pieces apart). */
	const struct image_pagerun **runs;
	size_t n_runs, run_hint; /* run_hint: the last run run_of() found */
	uint64_t page_shift;
	/* Addresses of the mspan words that hold heap addresses as metadata (startAddr, limit). */
	uint64_t *meta;
	size_t n_meta, cap_meta;
	uint64_t *mset; /* the same as a set, for is_meta_word() */
	size_t cap_mset, mset_mask;
	bool mset_ready; /* built for this scan */
	uint64_t dead_root_words; /* words into new objects left out as dead roots, for -v */
	int debug_roots;  /* CHECKSYNC_DEBUG_REACH_ROOTS: log this many more off-heap roots */
	uint64_t cur_word; /* address of the root word being scanned, for debug_root */
	struct capture *c; /* for the root checks of scan_words */
	/* A scan under way in steps (capture_reach_begin/step): where it stands. */
	enum reach_phase phase;
	bool all_new;
	struct bits_want *want; /* spans whose allocBits are read (RP_FIND to RP_ADD) */
	size_t n_want, cap_want, bits_len, at_span, at_prev;
	uint8_t *bits;
	size_t at_run, at_ns; /* the next run of roots (at_off bytes in), span to zero, run to count */
	uint64_t at_off;
	uint64_t cl_at, cl_end; /* the rest of the reached object being scanned (scan_closure) */
	uint64_t job_t0, job_cpu_us; /* when it began; CPU time of its steps so far */
};

static struct reach *reach_get(struct capture *c)
{
	if (!c->reach)
		c->reach = calloc(1, sizeof(*c->reach));
	return c->reach;
}

void capture_reach_free(struct capture *c)
{
	struct reach *r = c->reach;
	if (!r)
		return;
	free(r->prev.v);
	free(r->cur.v);
	free(r->ns);
	free(r->slot);
	free(r->work);
	free(r->page_ns);
	free(r->runs);
	free(r->meta);
	free(r->mset);
	free(r->want);
	free(r->bits);
	free(r);
	c->reach = NULL;
}

void reach_stop_begin(struct capture *c)
{
	struct reach *r = reach_get(c);
	if (!r)
		return;
	r->seq++;
	/* The last stop's table becomes the one to compare with; it needs to be complete. */
	if (r->cur.complete) {
		struct rtable t = r->prev;
		r->prev = r->cur;
		r->cur = t;
	} else {
		r->prev.complete = false;
	}
	r->cur.n = 0;
	r->cur.complete = false;
}

int reach_spans_begin(struct capture *c, uint32_t heap_sweepgen)
{
	struct reach *r = reach_get(c);
	if (!r)
		return -ENOMEM;
	r->cur.n = 0;
	r->n_meta = 0;
	r->cur.seq = r->seq;
	r->cur.heap_sweepgen = heap_sweepgen;
	return 0;
}

int reach_note_span(struct capture *c, const struct reach_span_state *s)
{
	struct reach *r = c->reach;
	struct reach_span_state *d = array_push(&r->cur.v, &r->cur.n, &r->cur.cap, sizeof(*d));
	if (!d)
		return -ENOMEM;
	*d = *s;
	return 0;
}

static int cmp_span(const void *a, const void *b)
{
	const struct reach_span_state *x = a, *y = b;
	return x->base < y->base ? -1 : x->base > y->base;
}

/*
 * mspan.startAddr and mspan.limit hold the address of a span's first
 * object and the end of its last. They are the allocator's arithmetic, in
 * memory the collector never scans (mspans come from fixalloc, off the
 * heap, and a freed one keeps its stale values): they keep no object
 * alive, so they are no roots.
 */
int reach_note_mspan(struct capture *c, uint64_t span)
{
	struct reach *r = c->reach;
	const struct go_layout *l = c->go;
	int64_t offs[] = {l->span_start.off, l->span_limit.off};
	for (size_t k = 0; k < ARRAY_SIZE(offs); k++) {
		if (offs[k] < 0)
			continue;
		uint64_t *w = array_push(&r->meta, &r->n_meta, &r->cap_meta, sizeof(*w));
		if (!w)
			return -ENOMEM;
		*w = span + (uint64_t)offs[k];
	}
	return 0;
}

static bool spans_sorted(const struct rtable *t)
{
	for (size_t i = 1; i < t->n; i++)
		if (t->v[i].base < t->v[i - 1].base)
			return false;
	return true;
}

/*
 * This runs in the pause: live.c hands the spans over in address order
 * already, so they are only checked. The metadata words are not sorted
 * (that cost ~3% of primaryd's CPU on the paper's workload, perf): the
 * scan makes a set of them when it first needs one (is_meta_word).
 */
void reach_spans_end(struct capture *c)
{
	struct reach *r = c->reach;
	if (!spans_sorted(&r->cur))
		qsort(r->cur.v, r->cur.n, sizeof(*r->cur.v), cmp_span);
	r->cur.complete = true;
}

/* ---------- which objects are new ---------- */

/*
 * The previous stop's span at base, or NULL. Both tables are in address
 * order and are walked together: *at is where the last lookup ended.
 */
static const struct reach_span_state *prev_span(const struct rtable *t, uint64_t base, size_t *at)
{
	size_t i = *at;
	while (i < t->n && t->v[i].base < base)
		i++;
	*at = i;
	return i < t->n && t->v[i].base == base ? &t->v[i] : NULL;
}

static bool swept_in_cycle(uint32_t span_sg, uint32_t heap_sg)
{
	return span_sg == heap_sg || span_sg == heap_sg + 3;
}

/*
 * The heap's sweep cycle a span was last swept in, from its sweepgen sg
 * and the heap's h (even, += 2 per cycle; mgcsweep.go): h - 2 unswept
 * (swept in cycle h - 2), h swept, h + 1 cached before this cycle's sweep
 * began (swept in h - 2), h + 3 swept and cached; h - 1 is being swept:
 * -1, unknown.
 */
static int64_t sweep_cycle(uint32_t sg, uint32_t h)
{
	if (sg == h - 1)
		return -1;
	return sg % 2 ? (int64_t)sg - 3 : (int64_t)sg;
}

/* The slots of s that are new: [*from, s->freeindex) less allocBits, or every allocated one. */
static bool new_range(const struct reach_span_state *s, const struct reach_span_state *p,
		      uint32_t prev_h, uint32_t cur_h, bool all_new, uint64_t *from, bool *all)
{
	*all = false;
	*from = 0;
	if (s->specials || s->nelems == 0 || s->elemsize == 0 || s->freeindex > s->nelems)
		return false;
	if (all_new || !p || p->span != s->span || p->elemsize != s->elemsize ||
	    p->npages != s->npages) {
		*all = true;
		return true;
	}
	if (p->specials)
		return false;
	int64_t pc = sweep_cycle(p->sweepgen, prev_h), sc = sweep_cycle(s->sweepgen, cur_h);
	if (pc >= 0 && pc == sc) {
		/*
		 * Not swept since (a sweep sets sweepgen to the heap's, which
		 * moved on, or leaves the span being swept): allocation only
		 * moved freeindex on. Also across GC cycles, for a span the
		 * sweeper has not reached yet or that stayed cached.
		 */
		if (p->allocbits != s->allocbits || p->freeindex > s->freeindex)
			return false;
		*from = p->freeindex;
		return s->freeindex > p->freeindex;
	}
	/*
	 * Swept since the previous stop (a GC cycle began after it, or the span
	 * was not yet swept then): freeindex began again at 0 at that sweep, so
	 * the slots below it that the sweep left free were allocated after the
	 * previous stop. Survivors of the sweep are in allocBits: old.
	 */
	return swept_in_cycle(s->sweepgen, cur_h) && s->freeindex > 0;
}

/* Read a span's allocBits from the running process (they change only at its next sweep). */
/* A span whose allocBits are to be read, where they go, and which of its slots may be new. */
struct bits_want {
	const struct reach_span_state *s;
	uint64_t from;
	size_t off; /* in the buffer */
	bool all;
};

#define BITS_BATCH 256

static size_t bits_len(const struct reach_span_state *s)
{
	return (s->nelems + 7) / 8;
}

/*
 * Read the spans' allocBits from the running process (they change only at
 * a span's next sweep, and capture_reach() checks that no sweep cycle
 * began meanwhile) into buf: BITS_BATCH spans per process_vm_readv. After
 * a GC cycle nearly every span has been swept since the previous stop,
 * and a pread each cost a syscall per span. A batch read short is read
 * again span by span, so that the error is the span's.
 */
static int read_all_bits(struct capture *c, const struct bits_want *want, size_t n, uint8_t *buf)
{
	struct iovec local[BITS_BATCH], remote[BITS_BATCH];
	for (size_t i = 0; i < n; i += BITS_BATCH) {
		size_t m = n - i < BITS_BATCH ? n - i : BITS_BATCH;
		ssize_t total = 0;
		for (size_t j = 0; j < m; j++) {
			const struct bits_want *w = &want[i + j];
			size_t len = bits_len(w->s);
			local[j] = (struct iovec){.iov_base = buf + w->off, .iov_len = len};
			remote[j] = (struct iovec){.iov_base = (void *)(uintptr_t)w->s->allocbits,
						   .iov_len = len};
			total += (ssize_t)len;
		}
		if (process_vm_readv(c->pid, local, m, remote, m, 0) == total)
			continue;
		for (size_t j = 0; j < m; j++) {
			int rc = tracer_peek(c->memfd, want[i + j].s->allocbits,
					     local[j].iov_base, local[j].iov_len);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/*
 * 2^32 / elemsize rounded up (the runtime's mspan.divMul), or 0 when the
 * span is 4 GiB or more: then slot_in() divides.
 */
static uint64_t div_mul(uint64_t elemsize, uint64_t span_len)
{
	return span_len < (1ull << 32) ? (0xffffffffull / elemsize) + 1 : 0;
}

static int add_new_span(struct capture *c, const struct reach_span_state *s, uint64_t from,
			bool all, const uint8_t *bits)
{
	struct reach *r = c->reach;
	const struct go_layout *l = c->go;

	if (r->n_slot + s->nelems > r->cap_slot) {
		size_t cap = (r->n_slot + s->nelems) * 2;
		uint8_t *p = realloc(r->slot, cap);
		if (!p)
			return -ENOMEM;
		r->slot = p;
		r->cap_slot = cap;
	}
	uint8_t *slot = r->slot;
	struct nspan *n = array_push(&r->ns, &r->n_ns, &r->cap_ns, sizeof(*n));
	if (!n)
		return -ENOMEM;
	bool noscan = s->spanclass & 1, small = (s->spanclass >> 1) != 0;
	*n = (struct nspan){.base = s->base, .elemsize = s->elemsize, .nelems = s->nelems,
			    .end = s->base + s->elemsize * s->nelems, .first = r->n_slot,
			    .div_mul = div_mul(s->elemsize, s->elemsize * s->nelems),
			    .noscan = noscan,
			    .header = l->malloc_headers && !noscan && small &&
				      s->elemsize > l->min_size_malloc_header};
	uint64_t count = 0;
	for (uint64_t i = 0; i < s->nelems; i++) {
		bool marked = bits[i / 8] & (1u << (i % 8));
		bool is_new = all ? (i < s->freeindex || marked)
				  : (i >= from && i < s->freeindex && !marked);
		slot[n->first + i] = is_new ? SLOT_NEW : SLOT_OLD;
		count += is_new;
	}
	r->n_slot += s->nelems;
	c->stats.reach.new_objects += count;
	c->stats.reach.new_bytes += count * s->elemsize;
	if (!count) {
		r->n_ns--;
		r->n_slot -= s->nelems;
		return 0;
	}
	if (!r->lo || n->base < r->lo)
		r->lo = n->base;
	if (n->end > r->hi)
		r->hi = n->end;
	return 0;
}

/*
 * Which spans may hold new objects, FIND_PIECE of the stop's spans from
 * r->at_span on. The two tables are the stops' and stay as they are until
 * the next stop, which waits for this scan (capture_reach_begin).
 */
static int find_spans(struct capture *c)
{
	struct reach *r = c->reach;
	const struct rtable *cur = &r->cur, *prev = &r->prev;
	size_t end = r->at_span + FIND_PIECE < cur->n ? r->at_span + FIND_PIECE : cur->n;

	for (; r->at_span < end; r->at_span++) {
		const struct reach_span_state *s = &cur->v[r->at_span];
		uint64_t from;
		bool all;
		if (!new_range(s, r->all_new ? NULL : prev_span(prev, s->base, &r->at_prev),
			       prev->heap_sweepgen, cur->heap_sweepgen, r->all_new, &from, &all))
			continue;
		if (!s->allocbits)
			return -EBADMSG;
		struct bits_want *w = array_push(&r->want, &r->n_want, &r->cap_want, sizeof(*w));
		if (!w)
			return -ENOMEM;
		*w = (struct bits_want){.s = s, .from = from, .off = r->bits_len, .all = all};
		r->bits_len += bits_len(s);
	}
	return 0;
}

/* One batch of allocBits from r->at_span (an index into want) on. */
static int read_bits_piece(struct capture *c)
{
	struct reach *r = c->reach;
	size_t n = r->n_want - r->at_span < BITS_BATCH ? r->n_want - r->at_span : BITS_BATCH;

	if (!r->bits && !(r->bits = malloc(r->bits_len + 1)))
		return -ENOMEM;
	int rc = read_all_bits(c, r->want + r->at_span, n, r->bits);
	r->at_span += n;
	return rc;
}

/* The new slots of ADD_PIECE spans of want from r->at_span on. */
static int add_spans_piece(struct capture *c)
{
	struct reach *r = c->reach;
	int rc = 0;

	for (size_t k = 0; rc >= 0 && k < ADD_PIECE && r->at_span < r->n_want; k++, r->at_span++) {
		const struct bits_want *w = &r->want[r->at_span];
		rc = add_new_span(c, w->s, w->from, w->all, r->bits + w->off);
	}
	return rc;
}

/* ---------- the scan ---------- */

/*
 * What the scan costs. Every staged word is compared with [lo, hi), the
 * bounds of the new objects, and most heap words fall inside: they point
 * at old objects, or at new ones already reached. So a word in bounds is
 * first looked up by page (one load) and slot (a multiply, not a divide),
 * and only a word that would keep a new object still unreached pays for
 * the checks of where it lies (dead_root: a few binary searches). Before,
 * those came first, for every word in bounds: on the paper's workload
 * that was most of the scan's CPU.
 *
 * What the scan may not skip: a staged word whose value is the one the
 * backup already holds. It is tempting (the delta cache has the bytes
 * last shipped, and a word that still holds them "did not change"), but
 * unsound: a pointer field that held X at the previous stop, was set to
 * another object, and after X was swept and its slot reused by a new
 * object Y, was set to Y, holds the same bits as before and is the only
 * pointer to Y. The same happens to a stack slot that was dead at the
 * previous stop, holding a stale pointer to a slot freed since, and is
 * written with a new object at that slot. Equal bits prove nothing once
 * a sweep may have freed and mallocgc reused the memory they point at.
 */

/* Spans start on runtime pages: a table by page makes each lookup one load. */
#define PAGE_TABLE_MAX (1u << 22)

static int build_page_table(struct reach *r, uint64_t page_size)
{
	free(r->page_ns);
	r->page_ns = NULL;
	r->page_shift = __builtin_ctzll(page_size);
	uint64_t n = (r->hi - r->lo + page_size - 1) >> r->page_shift;
	if (!r->n_ns || n > PAGE_TABLE_MAX || (page_size & (page_size - 1)))
		return 0; /* a sparse heap: binary search */
	r->page_ns = calloc(n, sizeof(*r->page_ns));
	if (!r->page_ns)
		return -ENOMEM;
	for (size_t i = 0; i < r->n_ns; i++)
		for (uint64_t p = (r->ns[i].base - r->lo) >> r->page_shift;
		     p < n && r->lo + (p << r->page_shift) < r->ns[i].end; p++)
			r->page_ns[p] = i + 1;
	return 0;
}

/* The span of new objects holding addr, or NULL. */
static inline const struct nspan *nspan_of(const struct reach *r, uint64_t addr)
{
	size_t lo = 0, hi = r->n_ns;
	if (addr < r->lo || addr >= r->hi)
		return NULL;
	if (r->page_ns) {
		uint32_t i = r->page_ns[(addr - r->lo) >> r->page_shift];
		return i && addr < r->ns[i - 1].end ? &r->ns[i - 1] : NULL;
	}
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (r->ns[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < r->n_ns && r->ns[lo].base <= addr ? &r->ns[lo] : NULL;
}

/*
 * The index in n of the slot holding addr (inside n). For off < 2^32,
 * off * mul / 2^32 lies in [off / size, off / size + 1): the floor is the
 * index or one more, and one compare tells.
 */
static inline size_t slot_in(const struct nspan *n, uint64_t addr)
{
	uint64_t off = addr - n->base;
	if (!n->div_mul)
		return off / n->elemsize;
	uint64_t k = (off * n->div_mul) >> 32;
	return k * n->elemsize > off ? k - 1 : k;
}

static const char *const root_names[MC_COUNT + 1] = {
    [MC_HEAP] = "heap", [MC_STACKS] = "stacks", [MC_GLOBALS] = "globals",
    [MC_OFFHEAP] = "offheap", [MC_FREE] = "free", [MC_ZERO] = "zero", [MC_COUNT] = "registers"};

/* CHECKSYNC_DEBUG_REACH_ROOTS=N: say where the first N roots of each scan are, to chase them. */
static void debug_root(const struct reach *r, uint64_t v, uint64_t size)
{
	const struct capture *c = r->c;
	const char *path = "?";
	uint64_t start = 0;
	for (size_t i = 0; i < c->n_vmas; i++)
		if (r->cur_word >= c->vmas[i].start && r->cur_word < c->vmas[i].end) {
			path = c->vmas[i].path[0] ? c->vmas[i].path : "(anon)";
			start = c->vmas[i].start;
		}
	log_warn("reach debug: %s root %#lx (%s+%#lx) -> new object at %#lx (%lu bytes)",
		 root_names[r->root_class], (unsigned long)r->cur_word, path,
		 (unsigned long)(r->cur_word - start),
		 (unsigned long)v, (unsigned long)size);
}

/* Slot k (of span n, at v) is reached: mark it, and scan it in the closure. */
static int keep_slot(struct reach *r, const struct nspan *n, size_t k, uint64_t v)
{
	r->slot[k] = r->root_class == MC_HEAP ? SLOT_REACHED_OLD_HEAP : SLOT_REACHED;
	if (r->root_class >= 0)
		r->root_hits[r->root_class] += n->elemsize;
	if (r->debug_roots > 0 && r->root_class >= 0 && r->root_class < MC_COUNT) {
		r->debug_roots--;
		debug_root(r, v, n->elemsize);
	}
	struct reach_work *w = array_push(&r->work, &r->n_work, &r->cap_work, sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct reach_work){.k = k, .ns = (uint32_t)(n - r->ns)};
	return 0;
}

static size_t meta_hash(uint64_t addr, size_t mask)
{
	return (size_t)(((addr >> 3) * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

/*
 * The metadata words as a set (open addressing), built at the first
 * question of a scan: one pass over them, where sorting them each stop
 * cost more than the rest of the scan's root checks together (perf).
 * Address 0 marks a free entry; no mspan lies at 0.
 */
static int build_meta_set(struct reach *r)
{
	size_t cap = 16;
	while (cap < 2 * r->n_meta)
		cap <<= 1;
	if (cap > r->cap_mset) {
		uint64_t *p = realloc(r->mset, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		r->mset = p;
		r->cap_mset = cap;
	}
	memset(r->mset, 0, cap * sizeof(*r->mset));
	r->mset_mask = cap - 1;
	for (size_t i = 0; i < r->n_meta; i++) {
		size_t h = meta_hash(r->meta[i], r->mset_mask);
		while (r->mset[h] && r->mset[h] != r->meta[i])
			h = (h + 1) & r->mset_mask;
		r->mset[h] = r->meta[i];
	}
	r->mset_ready = true;
	return 0;
}

/* Whether addr is one of the metadata words (if the set cannot be built: no, it stays a root). */
static bool is_meta_word(struct reach *r, uint64_t addr)
{
	if (!r->mset_ready && build_meta_set(r) < 0)
		return false;
	for (size_t h = meta_hash(addr, r->mset_mask); r->mset[h]; h = (h + 1) & r->mset_mask)
		if (r->mset[h] == addr)
			return true;
	return false;
}

/*
 * The span of this stop holding a (in use: it holds objects), or NULL and
 * in *next where the next one begins (e when none does before e).
 */
static const struct reach_span_state *span_at(const struct reach *r, uint64_t a, uint64_t e,
					      uint64_t page_size, uint64_t *next)
{
	const struct rtable *t = &r->cur;
	size_t lo = 0, hi = t->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (t->v[mid].base <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0 && a < t->v[lo - 1].base + t->v[lo - 1].npages * page_size)
		return &t->v[lo - 1];
	*next = lo < t->n && t->v[lo].base < e ? t->v[lo].base : e;
	return NULL;
}

/*
 * A staged word that is no root although it holds the address of a new
 * object: mspan metadata (above), a stack below its stack pointer (less
 * live.c's slack: goroutine, g0 and signal stacks, in the arenas or, with
 * cgo, the threads' own), or arena memory that is neither an in-use span
 * nor a stack in use (a free page, a free stack). Below the stack
 * pointer nothing is read before it is written: a goroutine resumes at
 * sched.sp (gogo), a thread at its rsp, copystack copies [sp, hi), and
 * the collector scans frames from sp up. So a dead frame's pointer there
 * keeps nothing, and the object may be zeroed under it.
 */
static bool dead_root(struct reach *r, uint64_t addr)
{
	const struct capture *c = r->c;
	if (is_meta_word(r, addr) || capture_live_dead_stack(c, addr))
		return true;
	uint64_t next;
	return capture_classify(c, addr) == MC_HEAP &&
	       !span_at(r, addr, addr, c->go->page_size, &next);
}

/* Scan len bytes at p, staged from addr (0: not memory, every word counts). */
static int scan_words(struct reach *r, const uint8_t *p, size_t len, uint64_t addr)
{
	const uint64_t lo = r->lo, width = r->hi - r->lo;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		if (__builtin_expect(v - lo >= width, 1))
			continue;
		const struct nspan *n = nspan_of(r, v);
		if (!n)
			continue;
		size_t k = n->first + slot_in(n, v);
		if (r->slot[k] != SLOT_NEW)
			continue; /* old, or reached already */
		if (addr && dead_root(r, addr + i)) {
			r->dead_root_words++;
			continue;
		}
		r->cur_word = addr + i;
		int rc = keep_slot(r, n, k, v);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Where the first span of new objects at or after a begins, or e. */
static uint64_t next_nspan(const struct reach *r, uint64_t a, uint64_t e)
{
	size_t lo = 0, hi = r->n_ns;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (r->ns[mid].base <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < r->n_ns && r->ns[lo].base < e ? r->ns[lo].base : e;
}

/*
 * In span n of new objects, from a (< e): where the run of slots as old
 * as a's ends, and whether they are old (roots) or new (skipped). A
 * noscan span's slots are all skipped; its tail, if any, goes by span_at().
 */
static uint64_t new_span_piece(const struct reach *r, const struct nspan *n, uint64_t a,
			       uint64_t e, bool *root)
{
	const uint8_t *sl = r->slot + n->first;
	size_t k = slot_in(n, a), j = k;
	/* Only the slots that begin before e. */
	uint64_t kmax = (e - n->base + n->elemsize - 1) / n->elemsize, stop;
	bool old = sl[k] == SLOT_OLD;

	if (n->noscan) {
		*root = false;
		return n->end < e ? n->end : e;
	}
	if (kmax > n->nelems)
		kmax = n->nelems;
	while (j < kmax && (sl[j] == SLOT_OLD) == old)
		j++;
	stop = n->base + j * n->elemsize;
	*root = old;
	return stop < e ? stop : e;
}

/* Outside spans of new objects, from a (< e): where the piece ends, and whether it is roots. */
static uint64_t other_piece(const struct reach *r, uint64_t a, uint64_t e, uint64_t page_size,
			    bool *root)
{
	uint64_t next = e, stop = next_nspan(r, a, e);
	const struct reach_span_state *sp = span_at(r, a, e, page_size, &next);

	*root = true;
	if (!sp)
		return next < stop ? next : stop;
	uint64_t end = sp->base + sp->npages * page_size;
	*root = !(sp->spanclass & 1);
	return end < stop ? end : stop;
}

/*
 * Scan staged [s, e) as roots: every word not inside a new object, nor in
 * a noscan span. In a span of new objects, a run of old slots is scanned
 * as one piece and a run of new ones skipped (scanned in the closure if
 * reached). A slot that is old stays old; one that is new may be reached
 * meanwhile, by a word of this range: it is then on the work list.
 *
 * A noscan span (spanclass bit 0) holds objects whose type has no
 * pointers: the collector never reads a word there, so nothing there
 * keeps an object alive (an address hidden there as bytes or a uintptr
 * keeps nothing alive for the runtime either), and a value that looks
 * like an address there is data (a key, a value, random bytes). Its
 * bytes are no roots: this saves the scan the stored values of a cache,
 * and the bytes of new objects that such data would falsely keep.
 */
static int scan_roots_range(struct capture *c, uint64_t s, uint64_t e, const uint8_t *data)
{
	struct reach *r = c->reach;
	const uint64_t page_size = c->go->page_size;

	for (uint64_t a = s, stop; a < e; a = stop) {
		const struct nspan *n = nspan_of(r, a);
		bool root;
		stop = n ? new_span_piece(r, n, a, e, &root) : other_piece(r, a, e, page_size, &root);
		if (!root)
			continue;
		/* Spans of new objects are in-use spans of the arenas: heap. */
		r->root_class = n ? MC_HEAP : capture_classify(c, a);
		int rc = scan_words(r, data + (a - s), stop - a, a);
		if (rc < 0)
			return rc;
		c->stats.reach.root_bytes += stop - a;
	}
	return 0;
}

static int cmp_run(const void *a, const void *b)
{
	const struct image_pagerun *x = *(const struct image_pagerun *const *)a;
	const struct image_pagerun *y = *(const struct image_pagerun *const *)b;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static int sort_runs(struct reach *r, const struct image *img)
{
	free(r->runs);
	r->n_runs = img->n_runs;
	r->run_hint = 0;
	r->runs = malloc((img->n_runs + 1) * sizeof(*r->runs));
	if (!r->runs)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_runs; i++)
		r->runs[i] = &img->runs[i];
	qsort(r->runs, r->n_runs, sizeof(*r->runs), cmp_run);
	return 0;
}

static bool run_holds(const struct image_pagerun *run, uint64_t addr)
{
	return run->addr <= addr && addr < run->addr + run->npages * PAGE_SIZE;
}

/*
 * The run of the image holding addr, or NULL. The closure and the zeroing
 * walk objects mostly in address order: the last run found, or the next,
 * usually holds the next one.
 */
static const struct image_pagerun *run_of(struct reach *r, uint64_t addr)
{
	size_t lo = 0, hi = r->n_runs, h = r->run_hint;
	if (h < r->n_runs && run_holds(r->runs[h], addr))
		return r->runs[h];
	if (h + 1 < r->n_runs && run_holds(r->runs[h + 1], addr))
		return r->runs[r->run_hint = h + 1];
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (r->runs[mid]->addr + r->runs[mid]->npages * PAGE_SIZE <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < r->n_runs && r->runs[lo]->addr <= addr) {
		r->run_hint = lo;
		return r->runs[lo];
	}
	return NULL;
}

/* Call fn on each staged piece of [s, e). */
static int staged_pieces(struct reach *r, const struct image *img, uint64_t s, uint64_t e,
			 int (*fn)(void *ctx, uint64_t a, uint64_t b, uint8_t *data), void *ctx)
{
	while (s < e) {
		const struct image_pagerun *run = run_of(r, s);
		if (!run) {
			s = PAGE_ALIGN_DOWN(s) + PAGE_SIZE;
			continue;
		}
		uint64_t re = run->addr + run->npages * PAGE_SIZE, b = re < e ? re : e;
		int rc = fn(ctx, s, b, img->pages + run->offset + (s - run->addr));
		if (rc < 0)
			return rc;
		s = b;
	}
	return 0;
}

static int scan_piece(void *ctx, uint64_t a, uint64_t b, uint8_t *data)
{
	(void)a;
	return scan_words(ctx, data, b - a, 0); /* a reached object: every word counts */
}

static void object_bounds(const struct nspan *n, size_t k, uint64_t *s, uint64_t *e)
{
	*s = n->base + (k - n->first) * n->elemsize;
	*e = *s + n->elemsize;
}

/*
 * At most max reached objects off the work list, and at most ROOT_PIECE
 * bytes of them: a new object can be hundreds of MiB (a map's bucket
 * array after it grew), so one is scanned a piece at a time, from
 * [r->cl_at, r->cl_end). Words are independent: where the pieces end
 * changes nothing. The closure is done when both are empty.
 */
static int scan_closure(struct capture *c, size_t max)
{
	struct reach *r = c->reach;
	uint64_t bytes = 0;

	r->root_class = -1;
	while (bytes < ROOT_PIECE && (r->cl_at < r->cl_end || (r->n_work && max--))) {
		if (r->cl_at >= r->cl_end) {
			struct reach_work w = r->work[--r->n_work];
			const struct nspan *n = &r->ns[w.ns];
			object_bounds(n, w.k, &r->cl_at, &r->cl_end);
			c->stats.reach.reached_objects++;
			c->stats.reach.reached_bytes += n->elemsize;
			if (n->noscan) {
				r->totals.reached_noscan += n->elemsize;
				r->cl_at = r->cl_end; /* no pointers in it, by its type */
				continue;
			}
		}
		uint64_t e = r->cl_end - r->cl_at > ROOT_PIECE - bytes ? r->cl_at + (ROOT_PIECE - bytes)
									 : r->cl_end;
		int rc = staged_pieces(r, c->img, r->cl_at, e, scan_piece, r);
		if (rc < 0)
			return rc;
		bytes += e - r->cl_at;
		r->cl_at = e;
	}
	return 0;
}

static int scan_threads(struct capture *c)
{
	struct reach *r = c->reach;
	r->root_class = MC_COUNT;
	for (size_t i = 0; i < c->img->n_threads; i++) {
		const struct image_thread *t = &c->img->threads[i];
		uint64_t extra[] = {t->ss_sp, t->clear_tid_addr, t->robust_head, t->rseq_addr};
		int rc = scan_words(r, (const uint8_t *)&t->regs, sizeof(t->regs), 0);
		if (rc >= 0 && t->xstate)
			rc = scan_words(r, t->xstate, t->xstate_len, 0);
		if (rc >= 0)
			rc = scan_words(r, (const uint8_t *)extra, sizeof(extra), 0);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---------- zeroing what nothing reaches ---------- */

struct zero_ctx {
	struct capture *c;
};

static int zero_piece(void *ctx, uint64_t a, uint64_t b, uint8_t *data)
{
	struct zero_ctx *z = ctx;
	(void)a;
	memset(data, 0, b - a);
	z->c->stats.reach.zeroed_bytes += b - a;
	return 0;
}

/*
 * Zero every unreached slot of at most max spans from r->at_ns on;
 * neighbours are zeroed as one range, unless each keeps its header.
 */
static int zero_unreached(struct capture *c, size_t max)
{
	struct reach *r = c->reach;
	struct zero_ctx z = {.c = c};
	for (size_t i = r->at_ns; i < r->n_ns && max--; r->at_ns = ++i) {
		const struct nspan *n = &r->ns[i];
		size_t end = n->first + n->nelems;
		for (size_t k = n->first; k < end; k++) {
			if (r->slot[k] != SLOT_NEW)
				continue;
			size_t j = k + 1;
			while (!n->header && j < end && r->slot[j] == SLOT_NEW)
				j++;
			uint64_t s = n->base + (k - n->first) * n->elemsize;
			uint64_t e = n->base + (j - n->first) * n->elemsize;
			if (n->header)
				s += 8; /* the malloc header: its type, see the top */
			int rc = staged_pieces(r, c->img, s, e, zero_piece, &z);
			if (rc < 0)
				return rc;
			k = j - 1;
		}
	}
	return 0;
}

struct nonzero_ctx {
	bool any;
};

static int nonzero_piece(void *ctx, uint64_t a, uint64_t b, uint8_t *data)
{
	struct nonzero_ctx *nz = ctx;
	for (uint64_t i = 0; i < b - a && !nz->any; i++)
		nz->any = data[i] != 0;
	return 0;
}

/*
 * The negative control (CHECKSYNC_DEBUG_REACH_DROP=1): zero one reachable
 * new object holding data as if nothing reached it, so that the soak
 * tests show they catch a scan that misses a pointer. Never set it in
 * production: the restored service loses that object's contents.
 */
/* Zero the last reachable new noscan object holding data whose slot is in state want. */
static bool debug_drop_slot(struct capture *c, uint8_t want)
{
	struct reach *r = c->reach;
	for (size_t i = r->n_ns; i-- > 0;) {
		const struct nspan *n = &r->ns[i];
		if (!n->noscan)
			continue; /* data, not runtime structures: the restored copy runs on */
		for (size_t k = n->first + n->nelems; k-- > n->first;) {
			uint64_t s, e;
			struct nonzero_ctx nz = {0};
			struct zero_ctx z = {.c = c};
			if (r->slot[k] != want)
				continue;
			object_bounds(n, k, &s, &e);
			staged_pieces(r, c->img, s, e, nonzero_piece, &nz);
			if (!nz.any)
				continue;
			log_warn("debug: dropping reachable new object %#lx-%#lx (CHECKSYNC_DEBUG_REACH_DROP)",
				 (unsigned long)s, (unsigned long)e);
			staged_pieces(r, c->img, s, e, zero_piece, &z);
			return true;
		}
	}
	return false;
}

/*
 * One found from an old heap object first: the service's own state (a
 * value stored in an old map bucket), not a request in flight, which a
 * check of the restored state would not see.
 */
static void debug_drop_one(struct capture *c)
{
	const char *env = getenv("CHECKSYNC_DEBUG_REACH_DROP");
	if (!env || strcmp(env, "1") != 0)
		return;
	if (!debug_drop_slot(c, SLOT_REACHED_OLD_HEAP))
		debug_drop_slot(c, SLOT_REACHED);
}

/* ---------- where the shipped bytes go ---------- */

static bool page_has_new(const struct reach *r, uint64_t page)
{
	return r->n_ns && (nspan_of(r, page) || nspan_of(r, page + PAGE_SIZE - 1));
}

static enum reach_ship_class ship_class(const struct capture *c, uint64_t addr)
{
	const struct reach *r = c->reach;
	switch (capture_classify(c, addr)) {
	case MC_HEAP:
		return r && page_has_new(r, PAGE_ALIGN_DOWN(addr)) ? RS_HEAP_NEW : RS_HEAP_OLD;
	case MC_STACKS:
		return RS_STACKS;
	case MC_GLOBALS:
		return RS_GLOBALS;
	default:
		return RS_OFFHEAP;
	}
}

/* What the staged pages of runs [from, to) hold, by ship_class. */
static void count_staged(struct capture *c, size_t from, size_t to)
{
	struct reach *r = c->reach;
	for (size_t i = from; i < to && i < c->img->n_runs; i++)
		for (uint64_t p = 0; p < c->img->runs[i].npages; p++)
			r->totals.staged[ship_class(c, c->img->runs[i].addr + p * PAGE_SIZE)] +=
				PAGE_SIZE;
}

void reach_note_shipped(struct capture *c, uint64_t addr, const uint8_t *rec, size_t len)
{
	if (!c->reach)
		return;
	enum reach_ship_class k = ship_class(c, addr);
	uint64_t nz = 0;
	size_t i = 0;
	/*
	 * Eight bytes at a time (this runs on the ship path): after the add, a
	 * byte's high bit is set when the byte is not zero.
	 */
	for (; i + 8 <= len; i += 8) {
		uint64_t w, low = 0x7f7f7f7f7f7f7f7full;
		memcpy(&w, rec + i, 8);
		/* The high bits, one per byte, summed by a multiply (no popcnt in the baseline ISA). */
		nz += (((((w & low) + low) | w) & ~low) >> 7) * 0x0101010101010101ull >> 56;
	}
	for (; i < len; i++)
		nz += rec[i] != 0;
	c->reach->totals.shipped[k] += len;
	c->reach->totals.shipped_nonzero[k] += nz;
}

/* ---------- the whole ---------- */

static bool has_writable_shared(const struct capture *c)
{
	for (size_t i = 0; i < c->n_vmas; i++)
		if (c->vmas[i].shared && (c->vmas[i].prot & PROT_WRITE))
			return true;
	return false;
}

/* The heap's sweep generation now: unchanged means every allocBits array read is intact. */
static int heap_sweepgen_now(struct capture *c, uint32_t *sg)
{
	const struct go_layout *l = c->go;
	uint64_t v = 0;
	int rc = tracer_peek(c->memfd, l->mheap + l->heap_sweepgen.off, &v,
			     l->heap_sweepgen.size < 8 ? l->heap_sweepgen.size : 8);
	*sg = (uint32_t)v;
	return rc;
}

static const char *reach_skip_reason(struct capture *c, bool all_staged)
{
	struct reach *r = c->reach;
	const char *env = getenv("CHECKSYNC_REACH");
	if (c->reach_off)
		return "off (reach = off)";
	if (env && strcmp(env, "off") == 0)
		return "off (CHECKSYNC_REACH=off)";
	if (!c->go || !c->go->reach_ok)
		return "off (this Go's DWARF lacks a field)";
	if (!c->live || !r || !r->cur.complete || r->cur.seq != r->seq)
		return "off (no live set this stop)";
	if (!all_staged && (!r->prev.complete || r->prev.seq + 1 != r->seq))
		return "off (no span table from the previous stop)";
	if (has_writable_shared(c))
		return "off (a writable shared mapping)";
	return NULL;
}

/* The scan ended (done, or abandoned with st->state saying why): its totals and log lines. */
static void reach_finish(struct capture *c)
{
	struct reach_stats *st = &c->stats.reach;
	struct reach *r = c->reach;

	r->phase = RP_DONE;
	st->scan_us = now_us() - r->job_t0;
	r->totals.scan_cpu_us += r->job_cpu_us;
	r->totals.root_bytes += st->root_bytes;
	if (strcmp(st->state, "done") == 0) {
		r->totals.scans_done++;
		r->totals.new_bytes += st->new_bytes;
		r->totals.reached_bytes += st->reached_bytes;
		r->totals.zeroed_bytes += st->zeroed_bytes;
		for (int k = 0; k <= MC_COUNT; k++)
			r->totals.reached_from[k] += r->root_hits[k];
	} else {
		r->totals.scans_skipped++;
	}
	log_debug("reach: %s: %lu new objects (%lu bytes), %lu reached (%lu bytes), "
		  "%lu bytes zeroed, %lu root bytes, %lu us (%lu us CPU)",
		  st->state, (unsigned long)st->new_objects, (unsigned long)st->new_bytes,
		  (unsigned long)st->reached_objects, (unsigned long)st->reached_bytes,
		  (unsigned long)st->zeroed_bytes, (unsigned long)st->root_bytes,
		  (unsigned long)st->scan_us, (unsigned long)r->job_cpu_us);
	log_debug("reach: new bytes first reached from heap %lu, stacks %lu, globals %lu, "
		  "off-heap %lu, registers %lu; %lu dead root words left out",
		  (unsigned long)r->root_hits[MC_HEAP], (unsigned long)r->root_hits[MC_STACKS],
		  (unsigned long)r->root_hits[MC_GLOBALS], (unsigned long)r->root_hits[MC_OFFHEAP],
		  (unsigned long)r->root_hits[MC_COUNT], (unsigned long)r->dead_root_words);
}

/*
 * Everything after this works on the stop's snapshot, except the reads of
 * the spans' allocBits from the running process (RP_READ): those are
 * sound however late they come, as long as no sweep has begun since the
 * stop, and RP_CHECK checks that after the last of them. A later read only
 * makes an abandoned scan likelier (it then ships the span-level set).
 */
int capture_reach_begin(struct capture *c, bool all_staged)
{
	struct reach_stats *st = &c->stats.reach;
	const char *why = reach_skip_reason(c, all_staged);

	memset(st, 0, sizeof(*st));
	if (why) {
		st->state = why;
		if (c->reach) {
			c->reach->totals.scans_skipped++;
			c->reach->n_ns = 0; /* nothing is new: the breakdown counts it all as old */
			c->reach->lo = c->reach->hi = 0;
			c->reach->phase = RP_IDLE;
			count_staged(c, 0, c->img->n_runs);
		}
		return 0;
	}
	struct reach *r = c->reach;
	r->c = c;
	r->n_work = 0;
	r->mset_ready = false;
	r->dead_root_words = 0;
	r->job_t0 = now_us();
	r->job_cpu_us = 0;
	r->all_new = all_staged;
	r->n_ns = r->n_slot = 0;
	r->lo = r->hi = 0;
	free(r->page_ns); /* built for the previous bounds: lookups search until it is rebuilt */
	r->page_ns = NULL;
	free(r->bits);
	r->bits = NULL;
	r->n_want = r->bits_len = r->at_span = r->at_prev = 0;
	r->at_run = r->at_ns = 0;
	r->at_off = 0;
	r->cl_at = r->cl_end = 0;
	r->phase = RP_FIND;
	const char *dbg = getenv("CHECKSYNC_DEBUG_REACH_ROOTS");
	r->debug_roots = dbg ? atoi(dbg) : 0;
	memset(r->root_hits, 0, sizeof(r->root_hits));
	return 1;
}

/* After the last allocBits read: abandon the scan if a sweep began since the stop, else go on. */
static int check_and_index(struct capture *c)
{
	struct reach *r = c->reach;
	uint32_t sg_after;
	int rc = heap_sweepgen_now(c, &sg_after);

	if (rc >= 0 && sg_after != r->cur.heap_sweepgen) {
		c->stats.reach.state = "abandoned (a GC cycle ended before the span bits were read)";
		r->phase = RP_COUNT;
		r->at_run = 0;
		return 0;
	}
	if (rc >= 0)
		rc = build_page_table(r, c->go->page_size);
	if (rc >= 0)
		rc = sort_runs(r, c->img);
	r->phase = RP_ROOTS;
	r->at_run = 0;
	r->at_off = 0;
	return rc;
}

/* One bounded piece of the scan, in the order of the phases. */
static int reach_piece(struct capture *c)
{
	struct reach *r = c->reach;
	const struct image *img = c->img;
	int rc = 0;

	switch (r->phase) {
	case RP_FIND:
		rc = find_spans(c);
		if (rc >= 0 && r->at_span >= r->cur.n) {
			r->at_span = 0;
			r->phase = RP_READ;
		}
		break;
	case RP_READ:
		if (r->at_span < r->n_want)
			rc = read_bits_piece(c);
		if (rc >= 0 && r->at_span >= r->n_want) {
			r->at_span = 0;
			r->phase = RP_ADD;
		}
		break;
	case RP_ADD:
		rc = add_spans_piece(c);
		if (rc >= 0 && r->at_span >= r->n_want)
			r->phase = RP_CHECK;
		break;
	case RP_CHECK:
		rc = check_and_index(c);
		break;
	case RP_ROOTS: {
		if (r->at_run >= img->n_runs || !r->n_ns) {
			r->phase = RP_THREADS;
			break;
		}
		/* A piece of a run scans as the run would: pieces end where the range does. */
		const struct image_pagerun *run = &img->runs[r->at_run];
		uint64_t len = run->npages * PAGE_SIZE, n = len - r->at_off;
		if (n > ROOT_PIECE)
			n = ROOT_PIECE;
		rc = scan_roots_range(c, run->addr + r->at_off, run->addr + r->at_off + n,
				      img->pages + run->offset + r->at_off);
		if ((r->at_off += n) == len) {
			r->at_run++;
			r->at_off = 0;
		}
		break;
	}
	case RP_THREADS:
		if (r->n_ns)
			rc = scan_threads(c);
		r->phase = RP_CLOSURE;
		break;
	case RP_CLOSURE:
		rc = scan_closure(c, CLOSURE_PIECE);
		if (rc >= 0 && !r->n_work && r->cl_at >= r->cl_end)
			r->phase = RP_ZERO;
		break;
	case RP_ZERO:
		rc = zero_unreached(c, ZERO_PIECE);
		if (rc >= 0 && r->at_ns == r->n_ns) {
			debug_drop_one(c);
			c->stats.reach.state = "done";
			r->phase = RP_COUNT;
			r->at_run = 0;
		}
		break;
	case RP_COUNT:
		count_staged(c, r->at_run, r->at_run + COUNT_PIECE);
		if ((r->at_run += COUNT_PIECE) >= img->n_runs)
			r->phase = RP_DONE;
		break;
	default:
		r->phase = RP_DONE;
		break;
	}
	if (rc < 0 && rc != -ENOMEM) {
		c->stats.reach.state = "abandoned (cannot read the span bits)";
		log_debug("reach: %s: %s", c->stats.reach.state, strerror(-rc));
		r->phase = RP_COUNT;
		r->at_run = 0;
		rc = 0;
	}
	return rc;
}

int capture_reach_step(struct capture *c, uint64_t budget_us)
{
	struct reach *r = c->reach;
	uint64_t t0 = now_us(), cpu0 = thread_cpu_us();
	int rc = 0;

	if (!r || r->phase == RP_IDLE || r->phase == RP_DONE)
		return 0;
	do
		rc = reach_piece(c);
	while (rc >= 0 && r->phase != RP_DONE && now_us() - t0 < budget_us);
	r->job_cpu_us += thread_cpu_us() - cpu0;
	if (rc < 0) { /* -ENOMEM: the capture fails */
		r->phase = RP_IDLE;
		return rc;
	}
	if (r->phase != RP_DONE)
		return 1;
	reach_finish(c);
	return 0;
}

int capture_reach(struct capture *c, bool all_staged)
{
	int rc = capture_reach_begin(c, all_staged);
	while (rc == 1)
		rc = capture_reach_step(c, UINT64_MAX);
	return rc;
}

static bool page_all_zero(const uint8_t *p)
{
	static const uint8_t zero[PAGE_SIZE];
	return memcmp(p, zero, PAGE_SIZE) == 0;
}

/*
 * A dump restores every page it leaves out as zero, so pages the scan
 * left all zero need not be in it. Only pages holding new objects can
 * have become so; pages that were zero to begin with were left out by
 * PAGEMAP_SCAN (PFNZERO) or cost nothing to check.
 */
void capture_reach_drop_zero_pages(struct capture *c)
{
	struct image *img = c->img;
	struct reach *r = c->reach;
	uint64_t total = 0, dropped = 0;
	size_t n = 0;

	if (!r || !c->stats.reach.zeroed_bytes || !c->stats.reach.state ||
	    strcmp(c->stats.reach.state, "done") != 0)
		return;
	for (size_t i = 0; i < img->n_runs; i++)
		for (uint64_t p = 0; p < img->runs[i].npages; p++) {
			uint64_t addr = img->runs[i].addr + p * PAGE_SIZE;
			dropped += addr >= r->lo && addr < r->hi &&
				   page_all_zero(img->pages + img->runs[i].offset + p * PAGE_SIZE);
		}
	if (!dropped)
		return;
	/* Each dropped page splits a run at most once: no allocation once compacting. */
	struct image_pagerun *out = calloc(img->n_runs + dropped, sizeof(*out));
	if (!out)
		return; /* keep them all */
	for (size_t i = 0; i < img->n_runs; i++) {
		for (uint64_t p = 0; p < img->runs[i].npages; p++) {
			uint64_t addr = img->runs[i].addr + p * PAGE_SIZE;
			uint8_t *data = img->pages + img->runs[i].offset + p * PAGE_SIZE;
			if (addr >= r->lo && addr < r->hi && page_all_zero(data)) {
				c->stats.reach.pages_dropped++;
				c->stats.written[capture_classify(c, addr)] -= PAGE_SIZE;
				continue;
			}
			struct image_pagerun *last = n ? &out[n - 1] : NULL;
			if (last && last->addr + last->npages * PAGE_SIZE == addr)
				last->npages++;
			else
				out[n++] = (struct image_pagerun){.addr = addr, .npages = 1,
								  .offset = total};
			/* Compacting in place: the destination never passes the source. */
			memmove(img->pages + total, data, PAGE_SIZE);
			total += PAGE_SIZE;
		}
	}
	free(img->runs);
	img->runs = out;
	img->n_runs = n;
	img->cap_runs = img->n_runs + dropped;
	img->pages_len = total;
}

void capture_reach_totals(const struct capture *c, struct reach_totals *t)
{
	if (c->reach)
		*t = c->reach->totals;
	else
		memset(t, 0, sizeof(*t));
}

static const char *const ship_class_names[RS_COUNT] = {
    [RS_HEAP_NEW] = "heap_new", [RS_HEAP_OLD] = "heap_old", [RS_STACKS] = "stacks",
    [RS_GLOBALS] = "globals", [RS_OFFHEAP] = "offheap"};


void capture_reach_report(const struct capture *c, struct status_report *r)
{
	struct reach_totals t;
	char name[64];

	capture_reach_totals(c, &t);
	status_report_counter(r, "reach_scans_done", "", t.scans_done,
			      "epochs whose new objects were scanned for reachability");
	status_report_counter(r, "reach_scans_skipped", "", t.scans_skipped,
			      "epochs that shipped every new object (no sound scan possible)");
	status_report_counter(r, "reach_new", "bytes", t.new_bytes,
			      "bytes of objects allocated since the previous epoch");
	status_report_counter(r, "reach_reached", "bytes", t.reached_bytes,
			      "of those, bytes of reachable objects (shipped)");
	status_report_counter(r, "reach_reached_noscan", "bytes", t.reached_noscan,
			      "of the reached bytes, those in noscan spans (no pointers)");
	status_report_counter(r, "reach_zeroed", "bytes", t.zeroed_bytes,
			      "staged bytes of unreachable new objects, shipped as zero");
	status_report_counter(r, "reach_roots", "bytes", t.root_bytes,
			      "staged bytes scanned as roots");
	status_report_counter(r, "reach_scan_cpu", "seconds", t.scan_cpu_us / 1e6,
			      "CPU time of the scans, after resume");
	for (int k = 0; k <= MC_COUNT; k++) {
		if (k == MC_FREE || k == MC_ZERO)
			continue; /* never roots */
		snprintf(name, sizeof(name), "reach_reached_from_%s", root_names[k]);
		status_report_counter(r, name, "bytes", t.reached_from[k],
				      "reached new bytes first found from roots of this kind");
	}
	for (int k = 0; k < RS_COUNT; k++) {
		snprintf(name, sizeof(name), "reach_staged_%s", ship_class_names[k]);
		status_report_counter(r, name, "bytes", t.staged[k],
				      "bytes staged for shipping in pages of this kind");
		snprintf(name, sizeof(name), "reach_shipped_%s", ship_class_names[k]);
		status_report_counter(r, name, "bytes", t.shipped[k],
				      "delta bytes encoded for pages of this kind, before compression");
		snprintf(name, sizeof(name), "reach_shipped_nonzero_%s", ship_class_names[k]);
		status_report_counter(r, name, "bytes", t.shipped_nonzero[k],
				      "of those, bytes not zero (zero runs compress to little)");
	}
}
