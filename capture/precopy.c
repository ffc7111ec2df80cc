/*
 * precopy.c - see precopy.h.
 *
 * The store is one anonymous mapping (reserved, filled as used, moved with
 * mremap when it grows: extents hold offsets, never pointers). Rounds read
 * with process_vm_readv while the service runs; a page torn by a write
 * during its read was written after its re-arm, so a later scan reports it
 * and it is read again (by the next round, or inside the stop).
 */
#include "precopy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include "capture.h"
#include "log.h"
#include "pagemap.h"
#include "util.h"

#define HUGE_SZ (2UL << 20)
#define PIECE_MAX (4UL << 20)	  /* a round's read, so a step stays within its budget */
#define HEADROOM (16UL << 20)	  /* populated ahead of use, so the stop takes no faults there */
#define FINAL_BYTES (1UL << 20)	  /* a round this small: stop now */
#define MAX_ROUNDS 8
#define IOV_BATCH 256

void precopy_init(struct precopy *p)
{
	memset(p, 0, sizeof(*p));
}

void precopy_reset(struct precopy *p)
{
	p->used = 0;
	p->n_ext = p->n_stale = p->n_todo = p->todo_pos = 0;
	p->active = p->full = false;
	p->rounds = 0;
	p->round_bytes = p->last_round_bytes = 0;
}

void precopy_free(struct precopy *p)
{
	if (p->buf)
		munmap(p->buf, p->cap);
	if (p->spare)
		munmap(p->spare, p->spare_cap);
	free(p->ext);
	free(p->stale);
	free(p->todo);
	free(p->vmas);
	precopy_init(p);
}

void precopy_recycle(struct precopy *p, uint8_t *buf, uint64_t cap)
{
	p->lent = NULL;
	if (p->spare && p->spare_cap >= cap) {
		munmap(buf, cap);
		return;
	}
	if (p->spare)
		munmap(p->spare, p->spare_cap);
	p->spare = buf;
	p->spare_cap = cap;
}

/*
 * Every byte of a store an image takes is read from the process first
 * (round or stop), so a recycled store's old contents never reach an image.
 */
static void store_start_in_spare(struct precopy *p)
{
	if (p->buf || !p->spare)
		return;
	p->buf = p->spare;
	p->cap = p->spare_cap;
	p->stats.stores_reused++;
	p->spare = NULL;
	p->spare_cap = 0;
}

static int store_reserve(struct precopy *p, uint64_t need)
{
	store_start_in_spare(p);
	if (p->used + need <= p->cap)
		return 0;
	uint64_t cap = p->cap * 2 > p->used + need ? p->cap * 2 : p->used + need;
	cap = (cap < (64UL << 20) ? (64UL << 20) : cap + HUGE_SZ - 1) & ~(HUGE_SZ - 1);
	void *b = p->buf ? mremap(p->buf, p->cap, cap, MREMAP_MAYMOVE)
			 : mmap(NULL, cap, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (b == MAP_FAILED)
		return log_error_errno(-errno, "cannot grow the pre-copy store to %lu bytes",
				       (unsigned long)cap);
	madvise(b, cap, MADV_HUGEPAGE);
	p->buf = b;
	p->cap = cap;
	return 0;
}

static uint64_t store_alloc(struct precopy *p, uint64_t len)
{
	uint64_t off = p->used;
	p->used += len;
	return off;
}

static int push_todo(struct precopy *p, uint64_t addr, uint64_t len, uint64_t off)
{
	while (len) {
		uint64_t n = len < PIECE_MAX ? len : PIECE_MAX;
		struct image_pagerun *t = array_push(&p->todo, &p->n_todo, &p->cap_todo, sizeof(*t));
		if (!t)
			return -ENOMEM;
		*t = (struct image_pagerun){.addr = addr, .npages = n / PAGE_SIZE, .offset = off};
		addr += n, off += n, len -= n;
	}
	return 0;
}

static int cmp_ext(const void *a, const void *b)
{
	const struct precopy_extent *x = a, *y = b;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* The first extent ending after addr. */
static size_t ext_find(const struct precopy *p, uint64_t addr)
{
	size_t lo = 0, hi = p->n_ext;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (p->ext[mid].addr + p->ext[mid].len <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Give every page of the sorted, disjoint ranges v a place in the store
 * (the one it has, or a new one) and list it to be read.
 */
static int plan_round(struct precopy *p, const struct range *v, size_t n)
{
	struct precopy_extent *add = NULL;
	size_t n_add = 0, cap_add = 0, k = 0;
	int r = 0;

	p->n_todo = p->todo_pos = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		uint64_t a = v[i].s, e = v[i].e;
		k = ext_find(p, a);
		while (a < e && r == 0) {
			while (k < p->n_ext && p->ext[k].addr + p->ext[k].len <= a)
				k++;
			const struct precopy_extent *x = k < p->n_ext ? &p->ext[k] : NULL;
			uint64_t b;
			if (x && x->addr <= a) {
				b = x->addr + x->len < e ? x->addr + x->len : e;
				p->stats.round_reread += b - a;
				r = push_todo(p, a, b - a, x->off + (a - x->addr));
			} else {
				b = x && x->addr < e ? x->addr : e;
				if ((r = store_reserve(p, b - a)) < 0)
					break;
				uint64_t off = store_alloc(p, b - a);
				struct precopy_extent *l = n_add ? &add[n_add - 1] : NULL;
				if (l && l->addr + l->len == a && l->off + l->len == off) {
					l->len += b - a;
				} else if ((l = array_push(&add, &n_add, &cap_add, sizeof(*l)))) {
					*l = (struct precopy_extent){a, b - a, off};
				} else {
					r = -ENOMEM;
					break;
				}
				r = push_todo(p, a, b - a, off);
			}
			a = b;
		}
	}
	for (size_t i = 0; i < n_add && r == 0; i++) {
		struct precopy_extent *x = array_push(&p->ext, &p->n_ext, &p->cap_ext, sizeof(*x));
		if (!x)
			r = -ENOMEM;
		else
			*x = add[i];
	}
	free(add);
	if (r == 0 && n_add)
		qsort(p->ext, p->n_ext, sizeof(*p->ext), cmp_ext);
	return r;
}

struct present_ctx {
	struct range *v;
	size_t n, cap;
};

static int present_cb(void *ctx, uint64_t s, uint64_t e)
{
	struct present_ctx *pc = ctx;
	return range_append(&pc->v, &pc->n, &pc->cap, s, e);
}

/* Every present private page of the tracked mappings (a full epoch's first round). */
static int present_pages(pid_t pid, const struct proc_vma *vmas, size_t n, struct present_ctx *pc)
{
	const struct pm_scan_arg want = {
		.category_inverted = PAGE_IS_FILE | PAGE_IS_PFNZERO,
		.category_mask = PAGE_IS_FILE | PAGE_IS_PFNZERO | PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT,
	};
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	_cleanup_close_ int pfd = open(path, O_RDONLY | O_CLOEXEC);
	if (pfd < 0)
		return -errno;
	for (size_t i = 0; i < n; i++) {
		if (!wp_vma_tracked(&vmas[i]))
			continue;
		int r = pagemap_scan(pfd, &want, vmas[i].start, vmas[i].end, present_cb, pc);
		if (r < 0 && r != -ENOMEM && r != -EINVAL)
			return r;
	}
	return 0;
}

static uint64_t ranges_bytes(const struct range *v, size_t n)
{
	uint64_t b = 0;
	for (size_t i = 0; i < n; i++)
		b += v[i].e - v[i].s;
	return b;
}

int precopy_round_begin(struct precopy *p, struct wp_tracker *w, pid_t pid, bool full)
{
	struct proc_vma *vmas = NULL;
	struct present_ctx pc = {0};
	bool first = !p->active;
	int r;

	ssize_t nv = proc_read_maps(pid, &vmas);
	if (nv < 0)
		return nv;
	free(p->vmas);
	p->vmas = vmas;
	p->n_vmas = nv;
	/* Re-arm first, then read: a write after the re-arm is found by the next scan. */
	r = wp_scan_running(w, pid, vmas, nv);
	if (r < 0)
		return r;
	p->last_round_bytes = p->round_bytes;
	p->round_bytes = ranges_bytes(w->dirty, w->n);
	/* What was written is owed to the epoch, whatever the rounds make of it. */
	if ((r = wp_owe(w, w->dirty, w->n)) < 0)
		return r;
	if (first) {
		p->active = true;
		p->full = full;
		p->rounds = 0;
		p->stats.epochs++;
		if (full) {
			r = present_pages(pid, vmas, nv, &pc);
			if (r >= 0)
				r = plan_round(p, pc.v, pc.n);
			p->round_bytes = ranges_bytes(pc.v, pc.n);
			free(pc.v);
			return r;
		}
		/*
		 * Not what earlier epochs owe (written, not live then): mostly free
		 * memory, it would be read again every epoch; the stop reads the
		 * little of it that has become live.
		 */
	}
	return plan_round(p, w->dirty, w->n);
}

/*
 * Read pieces [from, to) of the list; a piece the process no longer maps
 * from some page on is left for the stop (stale), or, inside the stop,
 * read through /proc/PID/mem (memfd >= 0), which ignores protections.
 */
static int read_pieces(struct precopy *p, pid_t pid, int memfd, const struct image_pagerun *v,
		       size_t from, size_t to, uint64_t *copied)
{
	struct iovec local[IOV_BATCH], remote[IOV_BATCH];

	while (from < to) {
		size_t n = to - from < IOV_BATCH ? to - from : IOV_BATCH;
		uint64_t want = 0;
		for (size_t i = 0; i < n; i++) {
			local[i].iov_base = p->buf + v[from + i].offset;
			remote[i].iov_base = (void *)(uintptr_t)v[from + i].addr;
			local[i].iov_len = remote[i].iov_len = v[from + i].npages * PAGE_SIZE;
			want += local[i].iov_len;
		}
		ssize_t got = process_vm_readv(pid, local, n, remote, n, 0);
		if (got == (ssize_t)want) {
			*copied += want;
			from += n;
			continue;
		}
		uint64_t done = got > 0 ? got : 0;
		*copied += done;
		while (done >= v[from].npages * PAGE_SIZE) /* whole pieces read */
			done -= v[from++].npages * PAGE_SIZE;
		const struct image_pagerun *x = &v[from];
		uint64_t s = x->addr + (done & ~(PAGE_SIZE - 1)), e = x->addr + x->npages * PAGE_SIZE;
		if (memfd >= 0) {
			int r = tracer_peek(memfd, s, p->buf + x->offset + (s - x->addr), e - s);
			if (r < 0)
				return log_error_errno(r, "cannot read memory %#lx-%#lx",
						       (unsigned long)s, (unsigned long)e);
		} else if (range_append(&p->stale, &p->n_stale, &p->cap_stale, s, e) < 0) {
			return -ENOMEM;
		}
		from++;
	}
	return 0;
}

int precopy_round_step(struct precopy *p, pid_t pid, uint64_t budget)
{
	size_t end = p->todo_pos;
	uint64_t sum = 0, copied = 0;

	while (end < p->n_todo && sum < budget)
		sum += p->todo[end++].npages * PAGE_SIZE;
	int r = read_pieces(p, pid, -1, p->todo, p->todo_pos, end, &copied);
	p->stats.bytes_copied += copied;
	if (r < 0)
		return r;
	p->todo_pos = end;
	if (end < p->n_todo)
		return 0;
	p->rounds++;
	p->stats.rounds++;
	/* Room for the stop's new pages, faulted in now rather than inside it. */
	if (store_reserve(p, HEADROOM) == 0)
		madvise(p->buf + p->used, HEADROOM, MADV_POPULATE_WRITE);
	return 1;
}

bool precopy_converged(const struct precopy *p)
{
	if (!p->active || p->todo_pos < p->n_todo)
		return false;
	if (p->rounds >= MAX_ROUNDS || p->round_bytes <= FINAL_BYTES)
		return true;
	/* Writes outpace the rounds: another one would not make the stop shorter. */
	return p->rounds >= 3 && p->round_bytes * 2 > p->last_round_bytes;
}

/* What the stop must read from the process even where the store has it, sorted and merged. */
static int must_read(const struct capture *c, const struct precopy *p, struct range **out,
		     size_t *n_out)
{
	struct range *v = NULL;
	size_t n = 0, cap = 0;
	const struct wp_tracker *w = c->wp;
	int r = 0;

	for (size_t i = 0; i < w->n_fresh && r == 0; i++)
		r = range_append(&v, &n, &cap, w->fresh[i].s, w->fresh[i].e);
	for (size_t i = 0; i < p->n_stale && r == 0; i++)
		r = range_append(&v, &n, &cap, p->stale[i].s, p->stale[i].e);
	/* A round cut short (a handover's final epoch) left these unread. */
	for (size_t i = p->todo_pos; i < p->n_todo && r == 0; i++)
		r = range_append(&v, &n, &cap, p->todo[i].addr,
			       p->todo[i].addr + p->todo[i].npages * PAGE_SIZE);
	/* Writes to a mapping no longer tracked (made read-only since) went unseen. */
	for (size_t i = 0; i < c->n_vmas && r == 0; i++)
		if (vma_carries_contents(c->vmas[i].shared, c->vmas[i].kind) &&
		    !wp_vma_tracked(&c->vmas[i]))
			r = range_append(&v, &n, &cap, c->vmas[i].start, c->vmas[i].end);
	if (r < 0) {
		free(v);
		return r;
	}
	range_normalize(v, &n);
	*out = v;
	*n_out = n;
	return 0;
}

static int push_run(struct image_pagerun **v, size_t *n, size_t *cap, uint64_t a, uint64_t len,
		    uint64_t off)
{
	struct image_pagerun *l = *n ? &(*v)[*n - 1] : NULL;
	if (l && l->addr + l->npages * PAGE_SIZE == a && l->offset + l->npages * PAGE_SIZE == off) {
		l->npages += len / PAGE_SIZE;
		return 0;
	}
	if (!(l = array_push(v, n, cap, sizeof(*l))))
		return -ENOMEM;
	*l = (struct image_pagerun){.addr = a, .npages = len / PAGE_SIZE, .offset = off};
	return 0;
}

int precopy_place(struct capture *c, struct precopy *p)
{
	struct image *img = c->img;
	_cleanup_free_ struct range *m = NULL;
	struct image_pagerun *runs = NULL, *rd = NULL;
	size_t n_m, n_runs = 0, cap_runs = 0, n_rd = 0, cap_rd = 0, k = 0, j = 0;
	uint64_t total = 0, copied = 0;
	int r = must_read(c, p, &m, &n_m);

	for (size_t i = 0; i < img->n_runs && r == 0; i++) {
		uint64_t a = img->runs[i].addr, e = a + img->runs[i].npages * PAGE_SIZE;
		while (a < e && r == 0) {
			while (k < p->n_ext && p->ext[k].addr + p->ext[k].len <= a)
				k++;
			while (j < n_m && m[j].e <= a)
				j++;
			const struct precopy_extent *x = k < p->n_ext ? &p->ext[k] : NULL;
			bool in_x = x && x->addr <= a, in_m = j < n_m && m[j].s <= a;
			uint64_t b = e, off;
			if (in_x && x->addr + x->len < b)
				b = x->addr + x->len;
			if (!in_x && x && x->addr < b)
				b = x->addr;
			if (in_m && m[j].e < b)
				b = m[j].e;
			if (!in_m && j < n_m && m[j].s < b)
				b = m[j].s;
			if (in_x) {
				off = x->off + (a - x->addr);
			} else {
				if ((r = store_reserve(p, b - a)) < 0)
					break;
				off = store_alloc(p, b - a);
			}
			r = push_run(&runs, &n_runs, &cap_runs, a, b - a, off);
			if (r == 0 && (!in_x || in_m))
				r = push_run(&rd, &n_rd, &cap_rd, a, b - a, off);
			if (in_x && !in_m)
				p->stats.store_bytes += b - a;
			if (in_x && in_m)
				p->stats.stop_reread += b - a;
			total += b - a;
			a = b;
		}
	}
	if (r == 0)
		r = read_pieces(p, c->pid, c->memfd, rd, 0, n_rd, &copied);
	p->stats.final_bytes_copied += copied;
	free(rd);
	if (r < 0) {
		free(runs);
		return r;
	}
	free(img->runs);
	img->runs = runs;
	img->n_runs = img->cap_runs = n_runs;
	/* The image owns the store now (it had no pages); the next epoch's rounds start a new one. */
	img->pages = p->buf;
	img->pages_mapped = true;
	img->pages_map_len = p->cap;
	img->pages_len = total;
	p->lent = p->buf;
	p->buf = NULL;
	p->cap = 0;
	return 0;
}
