/*
 * store.c - see store.h.
 *
 * Committing an epoch allocates everything it needs (the merged page
 * index) before it changes anything, so a commit that runs out of memory
 * leaves the store as it was: the store is always one whole epoch.
 */
#include "store.h"

#include <inttypes.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "delta.h"
#include "epoch.h"
#include "status.h"
#include "util.h"

struct page_index {
	uint64_t *addr; /* sorted, unique */
	uint8_t **data; /* PAGE_SIZE bytes each, malloc'd */
	size_t n;
};

/* Freed page buffers kept for the next epoch (16 MiB): more than an epoch of the paper workload. */
#define STORE_SPARE_PAGES 4096u

struct store {
	uint64_t epoch;
	uint64_t incarnation; /* whose state the image is (wire.h); 0: not known */
	struct image *meta;
	struct page_index pages;
	struct store_cost cost;
	struct store_epoch *committing; /* verified, being merged in steps (store_commit_begin) */
	/* Page buffers the last merges freed, for the next epoch (page_get): a pointer, since an
	 * epoch being received reads the store through a const pointer but takes from these. */
	struct spare_pages *spares;
};

struct spare_pages {
	uint8_t *page[STORE_SPARE_PAGES];
	size_t n;
};

struct pending_page {
	uint64_t addr;
	uint64_t seq; /* arrival order: the last copy of a page wins */
	uint8_t *data;
};

/* A private mapping whose pages the image carries. */
struct span {
	uint64_t start, end;
};

/*
 * A verified epoch on its way into the store. Until the swap the store's
 * index is the previous epoch's, untouched, for every reader; the merged
 * one is built beside it, and what it replaces is freed only after.
 */
enum merge_phase { MERGE_PAGES, MERGE_FREE, MERGE_DONE };
struct merge {
	enum merge_phase phase;
	struct span *spans;
	size_t n_spans, cur;	     /* cur: the span the pages have reached */
	struct page_index out;	     /* the new index */
	size_t i, j;		     /* next of the old index, next of the epoch's pages */
	uint8_t **garbage;	     /* old pages replaced or no longer covered */
	size_t n_garbage, freed;
	struct page_index retired;   /* the index before the swap: its arrays, or all of it */
	bool retire_pages;	     /* a full epoch: every old page goes */
};

struct store_epoch {
	uint64_t epoch, base, incarnation;
	uint64_t begun_us, verify_us, apply_us; /* for the cost breakdown */
	const struct store *store; /* the base a DELTA record applies to */
	struct wire_epoch_hash hash;
	struct image *meta;
	bool has_vmas, has_threads, has_fds;
	struct pending_page *pages;
	size_t n_pages, cap_pages;
	bool unsorted; /* a page came at or below the one before it: sort before merging */
	struct merge merge;
	uint64_t max_pages; /* what the service's mappings can hold; 0 while none are known */
};

static void merge_free(struct merge *m);

/* ---------- the store ---------- */

struct store *store_new(void)
{
	struct store *s = calloc(1, sizeof(struct store));

	if (s && !(s->spares = calloc(1, sizeof(*s->spares)))) {
		free(s);
		return NULL;
	}
	return s;
}

/*
 * Page buffers: each epoch mallocs a buffer for every page it carries, and
 * its merge frees as many (the pages they replace). glibc's 4 KiB chunks
 * cost malloc, free and their coalescing 15% of backupd's perf samples
 * (paper_bench pinned uffd), so the merge keeps up to STORE_SPARE_PAGES for
 * the next epoch to take. Only the hot path uses them; a torn epoch's pages
 * are freed.
 */
static uint8_t *page_get(const struct store *s)
{
	struct spare_pages *sp = s->spares;
	return sp->n ? sp->page[--sp->n] : malloc(PAGE_SIZE);
}

static void page_put(const struct store *s, uint8_t *p)
{
	struct spare_pages *sp = s->spares;
	if (sp->n < STORE_SPARE_PAGES)
		sp->page[sp->n++] = p;
	else
		free(p);
}

static void index_free(struct page_index *pi)
{
	for (size_t i = 0; i < pi->n; i++)
		free(pi->data[i]);
	free(pi->addr);
	free(pi->data);
	*pi = (struct page_index){0};
}

void store_free(struct store *s)
{
	store_commit_finish(s); /* the merge has moved pages between its two indexes */
	index_free(&s->pages);
	while (s->spares->n)
		free(s->spares->page[--s->spares->n]);
	free(s->spares);
	if (s->meta)
		image_free(s->meta);
	free(s);
}

uint64_t store_epoch(const struct store *s) { return s->epoch; }

uint64_t store_incarnation(const struct store *s) { return s->incarnation; }

uint64_t store_npages(const struct store *s) { return s->pages.n; }

const struct image *store_meta(const struct store *s) { return s->meta; }

/* ---------- receiving an epoch ---------- */

/* The committed copy of the page at addr, or NULL. */
static const uint8_t *index_find(const struct page_index *pi, uint64_t addr)
{
	size_t lo = 0, hi = pi->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (pi->addr[mid] < addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < pi->n && pi->addr[lo] == addr ? pi->data[lo] : NULL;
}

/* Pages all of img's mappings span: no epoch of this service can carry more. */
static uint64_t mapped_pages(const struct image *img)
{
	uint64_t n = 0;

	for (size_t i = 0; img && i < img->n_vmas; i++)
		n += (img->vmas[i].end - img->vmas[i].start) / PAGE_SIZE;
	return n;
}

int store_epoch_begin(const struct store *s, const struct wire_epoch_begin *b,
		      struct store_epoch **out, char *err, size_t errlen)
{
	struct wire_msg m = {.type = WIRE_EPOCH_BEGIN, .epoch_begin = *b};
	struct store_epoch *e;

	if (b->base_epoch != 0 && b->base_epoch != s->epoch) {
		snprintf(err, errlen, "base epoch %" PRIu64 ", have %" PRIu64, b->base_epoch,
			 s->epoch);
		return -ESTALE;
	}
	/* Epoch numbers start again with each run: a delta applies only to its own run's image. */
	if (b->base_epoch != 0 && b->incarnation != s->incarnation) {
		snprintf(err, errlen, "a delta of incarnation %016" PRIx64 " on the image of %016" PRIx64,
			 b->incarnation, s->incarnation);
		return -ESTALE;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->epoch = b->epoch;
	e->base = b->base_epoch;
	e->incarnation = b->incarnation;
	e->begun_us = now_us();
	e->store = s;
	e->max_pages = mapped_pages(s->meta); /* until the epoch's own MAPPINGS say otherwise */
	e->meta = image_new();
	if (!e->meta || wire_epoch_hash_init(&e->hash) < 0 ||
	    wire_epoch_hash_add(&e->hash, &m) < 0) {
		store_epoch_free(e);
		return -ENOMEM;
	}
	*out = e;
	return 0;
}

int store_epoch_hash_sha256(struct store_epoch *e)
{
	struct wire_msg m = {.type = WIRE_EPOCH_BEGIN,
			     .epoch_begin = {.epoch = e->epoch,
					     .base_epoch = e->base,
					     .incarnation = e->incarnation}};

	wire_epoch_hash_done(&e->hash);
	if (wire_epoch_hash_init_sha256(&e->hash) < 0)
		return -ENOMEM;
	return wire_epoch_hash_add(&e->hash, &m);
}

static void clear_fds(struct image *img)
{
	for (size_t i = 0; i < img->n_fds; i++) {
		free(img->fds[i].path);
		free(img->fds[i].data);
		free(img->fds[i].tfds);
	}
	free(img->fds);
	img->fds = NULL;
	img->n_fds = img->cap_fds = 0;
}

/* The primary sends pages in address order: then the commit need not sort them. */
static void note_order(struct store_epoch *e)
{
	if (e->n_pages > 1 && e->pages[e->n_pages - 1].addr <= e->pages[e->n_pages - 2].addr)
		e->unsorted = true;
}

static int add_pages(struct store_epoch *e, const struct wire_pages *p, char *err, size_t errlen)
{
	/*
	 * Every page is held in memory until COMMIT: a peer sending more than
	 * the mappings can hold is not replicating a process, it is filling us.
	 */
	if (e->max_pages && e->n_pages + p->npages > e->max_pages) {
		snprintf(err, errlen,
			 "PAGES: epoch %" PRIu64 " carries more than the %" PRIu64
			 " pages its mappings can hold",
			 e->epoch, e->max_pages);
		return -EBADMSG;
	}
	if (e->n_pages + p->npages > STORE_MAX_EPOCH_PAGES) {
		snprintf(err, errlen, "PAGES: epoch %" PRIu64 " carries more than %u pages",
			 e->epoch, STORE_MAX_EPOCH_PAGES);
		return -EBADMSG;
	}
	for (uint32_t i = 0; i < p->npages; i++) {
		struct pending_page *pp =
		    array_push(&e->pages, &e->n_pages, &e->cap_pages, sizeof(*pp));
		if (!pp)
			return -ENOMEM;
		*pp = (struct pending_page){.addr = p->addr + (uint64_t)i * PAGE_SIZE,
					    .seq = e->n_pages,
					    .data = page_get(e->store)};
		note_order(e);
		if (!pp->data) {
			e->n_pages--;
			return -ENOMEM;
		}
		memcpy(pp->data, p->data + (size_t)i * PAGE_SIZE, PAGE_SIZE);
	}
	return 0;
}

/*
 * Hash the pages rebuilt since pending page `from`: HASH_GROUP at a time
 * (64 KiB, still in L2 from the rebuild), so the clock is read twice a
 * group, not twice a page (its reads were 2-4% of backupd's perf samples).
 */
#define HASH_GROUP 16u
static int hash_rebuilt(struct store_epoch *e, size_t from)
{
	uint64_t t = now_us();
	int r = 0;

	for (size_t i = from; r == 0 && i < e->n_pages; i++)
		r = wire_epoch_hash_add_page(&e->hash, e->pages[i].addr, e->pages[i].data);
	e->verify_us += now_us() - t;
	return r;
}

/*
 * Rebuild each page of a DELTA from the base epoch's copy (a whole page,
 * or runs on zeros, needs none) and hash what was rebuilt: the commit checks the
 * pages we will hold, not the encoding they came in.
 */
static int add_delta(struct store_epoch *e, const struct wire_delta *d, char *err, size_t errlen)
{
	struct delta_rec rec;
	size_t pos = 0, group = e->n_pages;
	int r;

	if (e->n_pages + d->npages > STORE_MAX_EPOCH_PAGES) {
		snprintf(err, errlen, "DELTA: epoch %" PRIu64 " carries more than %u pages", e->epoch,
			 STORE_MAX_EPOCH_PAGES);
		return -EBADMSG;
	}
	/* wire.c's decoder checked every record of d->raw (wire.h): walk and apply unchecked. */
	while ((r = delta_payload_next_checked(d->raw, d->raw_len, &pos, &rec)) == 1) {
		const uint8_t *base = NULL;
		if (delta_needs_base(rec.kind)) {
			base = e->base ? index_find(&e->store->pages, rec.addr) : NULL;
			if (!base) {
				snprintf(err, errlen,
					 "DELTA: page %#" PRIx64 " is a delta, but base epoch %" PRIu64
					 " holds no such page",
					 rec.addr, e->base);
				return -EBADMSG;
			}
		}
		struct pending_page *pp =
		    array_push(&e->pages, &e->n_pages, &e->cap_pages, sizeof(*pp));
		if (!pp)
			return -ENOMEM;
		*pp = (struct pending_page){.addr = rec.addr, .seq = e->n_pages,
					    .data = page_get(e->store)};
		note_order(e);
		if (!pp->data) {
			e->n_pages--;
			return -ENOMEM;
		}
		if (base)
			memcpy(pp->data, base, PAGE_SIZE);
		delta_apply_checked(&rec, pp->data);
		if (e->n_pages - group == HASH_GROUP) {
			if ((r = hash_rebuilt(e, group)) < 0)
				return r;
			group = e->n_pages;
		}
	}
	if (r == 0)
		r = hash_rebuilt(e, group);
	return r;
}

int store_epoch_add(struct store_epoch *e, const struct wire_msg *m, char *err, size_t errlen)
{
	uint64_t t0 = now_us(), t1;
	int r;

	switch (m->type) {
	case WIRE_MAPPINGS:
		r = epoch_set_vmas(e->meta, m->mappings.vmas, m->mappings.n, err, errlen);
		e->has_vmas = true;
		e->max_pages = mapped_pages(e->meta);
		break;
	case WIRE_THREADS:
		r = epoch_set_threads(e->meta, &m->threads, err, errlen);
		e->has_threads = true;
		break;
	case WIRE_FDS:
		clear_fds(e->meta); /* image_unpack_fds() fills, it does not replace */
		r = image_unpack_fds(e->meta, m->fds.table.data, m->fds.table.len, err, errlen);
		e->has_fds = true;
		break;
	case WIRE_PAGES:
		r = add_pages(e, &m->pages, err, errlen);
		break;
	case WIRE_DELTA: {
		uint64_t v0 = e->verify_us; /* add_delta hashes as it rebuilds: keep that apart */
		r = add_delta(e, &m->delta, err, errlen);
		if (r == -ENOMEM)
			snprintf(err, errlen, "out of memory");
		e->apply_us += now_us() - t0 - (e->verify_us - v0);
		return r;
	}
	default:
		snprintf(err, errlen, "%s inside epoch %" PRIu64, wire_type_name(m->type),
			 e->epoch);
		return -EBADMSG;
	}
	if (r == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	if (r < 0)
		return r;
	t1 = now_us();
	e->apply_us += t1 - t0;
	r = wire_epoch_hash_add(&e->hash, m);
	e->verify_us += now_us() - t1;
	return r;
}

uint64_t store_epoch_number(const struct store_epoch *e) { return e->epoch; }

uint64_t store_epoch_base(const struct store_epoch *e) { return e->base; }

uint64_t store_epoch_npages(const struct store_epoch *e) { return e->n_pages; }

void store_epoch_free(struct store_epoch *e)
{
	merge_free(&e->merge);
	for (size_t i = e->merge.j; i < e->n_pages; i++) /* those before j went to the merge */
		free(e->pages[i].data);
	free(e->pages);
	if (e->meta)
		image_free(e->meta);
	wire_epoch_hash_done(&e->hash);
	free(e);
}

/* ---------- committing ---------- */

/* MAPPINGS may come before THREADS names the executable: find it once both are in. */
static void find_exe_file(struct image *img)
{
	img->exe_file = -1;
	for (size_t i = 0; img->exe && i < img->n_files; i++)
		if (strcmp(img->files[i].path, img->exe) == 0)
			img->exe_file = i;
}

static int check_metadata(struct store_epoch *e, char *err, size_t errlen)
{
	const char *missing = !e->has_vmas	? "MAPPINGS"
			      : !e->has_threads ? "THREADS"
			      : !e->has_fds	? "FDS"
						: NULL;
	char why[400];

	if (missing) {
		snprintf(err, errlen, "epoch %" PRIu64 " carried no %s", e->epoch, missing);
		return -EBADMSG;
	}
	find_exe_file(e->meta);
	if (image_validate(e->meta, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "epoch %" PRIu64 " is not a restorable image: %s", e->epoch,
			 why);
		return -EBADMSG;
	}
	return 0;
}

static int cmp_pending(const void *a, const void *b)
{
	const struct pending_page *x = a, *y = b;

	if (x->addr != y->addr)
		return x->addr < y->addr ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sort by address, keeping only the last copy of a page sent twice. */
static void sort_pending(struct store_epoch *e)
{
	size_t k = 0;

	if (!e->unsorted)
		return; /* strictly ascending: no page twice either */
	if (e->n_pages)
		qsort(e->pages, e->n_pages, sizeof(*e->pages), cmp_pending);
	for (size_t i = 0; i < e->n_pages; i++) {
		if (i + 1 < e->n_pages && e->pages[i + 1].addr == e->pages[i].addr) {
			free(e->pages[i].data);
			continue;
		}
		e->pages[k++] = e->pages[i];
	}
	e->n_pages = k;
	e->unsorted = false;
}

static bool is_private_data(const struct image_vma *v)
{
	return vma_carries_contents(v->shared, v->kind);
}

static int cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

static int private_spans(const struct image *img, struct span **out, size_t *n)
{
	struct span *s = calloc(img->n_vmas + 1, sizeof(*s));
	size_t k = 0;

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_vmas; i++)
		if (is_private_data(&img->vmas[i]))
			s[k++] = (struct span){img->vmas[i].start, img->vmas[i].end};
	qsort(s, k, sizeof(*s), cmp_span);
	*out = s;
	*n = k;
	return 0;
}

/* Does a private mapping cover the page at addr? Pages come in address order; *cur follows them. */
static bool covered(const struct span *s, size_t n, size_t *cur, uint64_t addr)
{
	while (*cur < n && s[*cur].end <= addr)
		(*cur)++;
	return *cur < n && s[*cur].start <= addr && addr + PAGE_SIZE <= s[*cur].end;
}

static void merge_free(struct merge *m)
{
	for (size_t k = m->freed; k < m->n_garbage; k++)
		free(m->garbage[k]);
	if (m->retire_pages)
		for (size_t k = m->freed; k < m->retired.n; k++)
			free(m->retired.data[k]);
	free(m->retired.addr);
	free(m->retired.data);
	free(m->garbage);
	free(m->spans);
	if (m->phase == MERGE_PAGES) { /* never swapped in: the new index owns nothing yet */
		free(m->out.addr);
		free(m->out.data);
	}
	*m = (struct merge){.i = m->i, .j = m->j};
}

/* Work between two looks at the clock: small, so a step overruns its budget by little. */
#define MERGE_BATCH 4096u

/*
 * The next pages of the new index: old pages (none for a full epoch)
 * overwritten by the epoch's, minus those no private mapping covers. An
 * epoch page not kept is freed at once (nobody else sees it), an old one
 * goes to the garbage (the store still shows it). Returns true when done.
 */
static bool merge_pages_step(const struct page_index *old, struct store_epoch *e, size_t n)
{
	struct merge *m = &e->merge;
	size_t old_n = m->retire_pages ? 0 : old->n;

	while (n-- && (m->i < old_n || m->j < e->n_pages)) {
		uint64_t addr;
		uint8_t *data;
		bool ours;

		if (m->j == e->n_pages || (m->i < old_n && old->addr[m->i] < e->pages[m->j].addr)) {
			addr = old->addr[m->i];
			data = old->data[m->i++];
			ours = false;
		} else {
			if (m->i < old_n && old->addr[m->i] == e->pages[m->j].addr)
				m->garbage[m->n_garbage++] = old->data[m->i++];
			addr = e->pages[m->j].addr;
			data = e->pages[m->j++].data;
			ours = true;
		}
		if (!covered(m->spans, m->n_spans, &m->cur, addr)) {
			if (ours)
				page_put(e->store, data);
			else
				m->garbage[m->n_garbage++] = data;
			continue;
		}
		m->out.addr[m->out.n] = addr;
		m->out.data[m->out.n++] = data;
	}
	return m->i == old_n && m->j == e->n_pages;
}

/* The new index and metadata in, in one go: from here the store is the new epoch. */
static void swap_in(struct store *s, struct store_epoch *e)
{
	struct merge *m = &e->merge;

	m->retired = s->pages;
	s->pages = m->out;
	m->out = (struct page_index){0};
	if (s->meta)
		image_free(s->meta);
	s->meta = TAKE_PTR(e->meta);
	s->epoch = e->epoch;
	s->incarnation = e->incarnation;
	m->phase = MERGE_FREE;
}

/* Free up to n of the pages the new epoch replaced. Returns true when none are left. */
static bool free_step(struct store *s, struct merge *m, size_t n)
{
	size_t total = m->retire_pages ? m->retired.n : m->n_garbage;

	for (; n-- && m->freed < total; m->freed++)
		page_put(s, m->retire_pages ? m->retired.data[m->freed] : m->garbage[m->freed]);
	return m->freed == total;
}

/*
 * Verify, check, and allocate everything the merge will need: the store is untouched. One
 * epoch is merged at a time, since each builds on the index the one before leaves.
 */
static int commit_prepare(struct store *s, struct store_epoch *e, const struct wire_commit *c,
			  char *err, size_t errlen)
{
	struct merge *m = &e->merge;
	size_t cap;
	uint64_t t0, t1;
	int r;

	if (s->committing) {
		snprintf(err, errlen, "another epoch is being committed");
		return -EBUSY;
	}
	t0 = now_us();
	r = wire_epoch_hash_verify(&e->hash, c, err, errlen);
	t1 = now_us();
	e->verify_us += t1 - t0;
	if (r < 0)
		return r;
	r = check_metadata(e, err, errlen);
	if (r < 0)
		return r;
	m->retire_pages = e->base == 0; /* a full image starts from nothing */
	cap = (m->retire_pages ? 0 : s->pages.n) + e->n_pages + 1;
	if (private_spans(e->meta, &m->spans, &m->n_spans) < 0 ||
	    !(m->out.addr = malloc(cap * sizeof(*m->out.addr))) ||
	    !(m->out.data = malloc(cap * sizeof(*m->out.data))) ||
	    !(m->garbage = malloc((s->pages.n + 1) * sizeof(*m->garbage)))) {
		merge_free(m);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* Nothing can fail from here on. */
	sort_pending(e);
	m->phase = MERGE_PAGES;
	e->apply_us += now_us() - t1;
	hist_add_us(&s->cost.h[STORE_COST_RECEIVE], t0 - e->begun_us);
	return 0;
}

/* Up to budget_us more of e's merge (at least one batch). Returns true when all is done. */
static bool commit_run(struct store *s, struct store_epoch *e, uint64_t budget_us)
{
	struct merge *m = &e->merge;
	uint64_t start = now_us();

	do {
		if (m->phase == MERGE_PAGES && merge_pages_step(&s->pages, e, MERGE_BATCH))
			swap_in(s, e);
		else if (m->phase == MERGE_FREE && free_step(s, m, MERGE_BATCH))
			m->phase = MERGE_DONE;
	} while (m->phase != MERGE_DONE && now_us() - start < budget_us);
	e->apply_us += now_us() - start;
	if (m->phase != MERGE_DONE)
		return false;
	e->n_pages = m->j = 0; /* every page is the store's now, or freed */
	hist_add_us(&s->cost.h[STORE_COST_VERIFY], e->verify_us);
	hist_add_us(&s->cost.h[STORE_COST_APPLY], e->apply_us);
	merge_free(m);
	return true;
}

int store_epoch_commit(struct store *s, struct store_epoch *e, const struct wire_commit *c,
		       char *err, size_t errlen)
{
	int r = commit_prepare(s, e, c, err, errlen);

	if (r < 0)
		return r;
	while (!commit_run(s, e, UINT64_MAX))
		;
	return 0;
}

int store_commit_begin(struct store *s, struct store_epoch *e, const struct wire_commit *c,
		       char *err, size_t errlen)
{
	int r = commit_prepare(s, e, c, err, errlen);

	if (r < 0)
		return r;
	s->committing = e;
	return 0;
}

bool store_commit_step(struct store *s, uint64_t budget_us)
{
	if (s->committing && commit_run(s, s->committing, budget_us)) {
		store_epoch_free(s->committing);
		s->committing = NULL;
	}
	return !s->committing;
}

bool store_committing(const struct store *s) { return s->committing != NULL; }

void store_commit_finish(struct store *s) { (void)store_commit_step(s, UINT64_MAX); }

void store_report(const struct store *s, struct status_report *r)
{
	status_report_histogram(r, "recv_read", &s->cost.h[STORE_COST_RECEIVE],
				"EPOCH_BEGIN to COMMIT received: network, TLS decryption, decoding (wall)");
	status_report_histogram(r, "recv_verify", &s->cost.h[STORE_COST_VERIFY],
				"the epoch checksum over the decoded pages");
	status_report_histogram(r, "recv_apply", &s->cost.h[STORE_COST_APPLY],
				"decoding deltas, copying pages and merging them into the warm image");
}

/* ---------- takeover ---------- */

static size_t count_runs(const struct page_index *pi)
{
	size_t n = 0;

	for (size_t i = 0; i < pi->n; i++)
		if (i == 0 || pi->addr[i] != pi->addr[i - 1] + PAGE_SIZE)
			n++;
	return n;
}

/* One populated buffer: faulting 4 KiB at a time would cost more than the copy itself. */
static uint8_t *page_buffer(size_t len)
{
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	(void)madvise(p, len, MADV_HUGEPAGE);
	(void)madvise(p, len, MADV_POPULATE_WRITE); /* best effort: the copy faults otherwise */
	return p;
}

int store_build_image(struct store *s, struct image *out)
{
	const struct page_index *pi = &s->pages;
	struct image_pagerun *runs;
	size_t n_runs, k = 0;
	uint8_t *pages = NULL;

	store_commit_finish(s); /* a verified epoch is restored, not the one before it */
	if (!s->meta)
		return -ENOENT;
	n_runs = count_runs(pi);
	runs = calloc(n_runs + 1, sizeof(*runs));
	if (!runs)
		return -ENOMEM;
	if (pi->n && !(pages = page_buffer(pi->n * PAGE_SIZE))) {
		free(runs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < pi->n; i++) {
		if (i == 0 || pi->addr[i] != pi->addr[i - 1] + PAGE_SIZE)
			runs[k++] =
			    (struct image_pagerun){.addr = pi->addr[i], .offset = i * PAGE_SIZE};
		runs[k - 1].npages++;
		memcpy(pages + i * PAGE_SIZE, pi->data[i], PAGE_SIZE);
	}
	*out = *s->meta; /* borrowed: store_release_image() frees only what is below */
	out->runs = runs;
	out->n_runs = out->cap_runs = n_runs;
	out->pages = pages;
	out->pages_len = pi->n * PAGE_SIZE;
	out->pages_mapped = true;
	out->pages_map_len = out->pages_len;
	return 0;
}

void store_release_image(struct image *img)
{
	if (img->pages)
		munmap(img->pages, img->pages_map_len);
	free(img->runs);
	*img = (struct image){0};
}

/* ---------- writing the store out as one epoch ---------- */

struct packer {
	msgpack_sbuffer sb;
	struct wire_epoch_hash hash;
	store_emit_fn emit;
	void *arg;
};

static int pack_one(struct packer *p, const struct wire_msg *m)
{
	int r;

	msgpack_sbuffer_clear(&p->sb);
	r = wire_pack(&p->sb, m);
	if (r < 0)
		return r;
	r = wire_epoch_hash_add(&p->hash, m);
	if (r < 0)
		return r;
	return p->emit(p->sb.data, p->sb.size, p->arg);
}

static int pack_mappings(struct packer *p, const struct image *img)
{
	_cleanup_free_ struct wire_vma *v = NULL;
	struct wire_msg m = {.type = WIRE_MAPPINGS};
	int r = epoch_wire_vmas(img, &v, &m.mappings.n);

	if (r < 0)
		return r;
	m.mappings.vmas = v;
	return pack_one(p, &m);
}

/* Blob 0 the process record, then one per thread, leader first (epoch.h). */
static int pack_threads(struct packer *p, const struct image *img)
{
	size_t n = img->n_threads + 1;
	msgpack_sbuffer *sbs = calloc(n, sizeof(*sbs));
	struct wire_blob *blobs = calloc(n, sizeof(*blobs));
	struct wire_msg m = {.type = WIRE_THREADS};
	int r = sbs && blobs ? 0 : -ENOMEM;

	for (size_t i = 0; r >= 0 && i < n; i++) {
		msgpack_sbuffer_init(&sbs[i]);
		r = i == 0 ? image_pack_process(img, &sbs[i])
			   : image_pack_thread(&img->threads[i - 1], &sbs[i]);
		blobs[i] = (struct wire_blob){(const uint8_t *)sbs[i].data, sbs[i].size};
	}
	if (r >= 0) {
		m.threads = (struct wire_threads){blobs, n};
		r = pack_one(p, &m);
	}
	for (size_t i = 0; sbs && i < n; i++)
		msgpack_sbuffer_destroy(&sbs[i]);
	free(sbs);
	free(blobs);
	return r;
}

static int pack_fds(struct packer *p, const struct image *img)
{
	msgpack_sbuffer sb;
	struct wire_msg m = {.type = WIRE_FDS};
	int r;

	msgpack_sbuffer_init(&sb);
	r = image_pack_fds(img, &sb);
	if (r >= 0) {
		m.fds.table = (struct wire_blob){(const uint8_t *)sb.data, sb.size};
		r = pack_one(p, &m);
	}
	msgpack_sbuffer_destroy(&sb);
	return r;
}

/* Runs of adjacent pages, at most WIRE_MAX_PAGES to a message, copied together into buf. */
static int pack_pages(struct packer *p, const struct page_index *pi, uint8_t *buf)
{
	size_t i = 0;

	while (i < pi->n) {
		struct wire_msg m = {.type = WIRE_PAGES};
		uint32_t n = 0;
		int r;

		do {
			memcpy(buf + (size_t)n * PAGE_SIZE, pi->data[i + n], PAGE_SIZE);
			n++;
		} while (i + n < pi->n && n < WIRE_MAX_PAGES &&
			 pi->addr[i + n] == pi->addr[i] + (uint64_t)n * PAGE_SIZE);
		m.pages = (struct wire_pages){.addr = pi->addr[i], .npages = n, .data = buf};
		r = pack_one(p, &m);
		if (r < 0)
			return r;
		i += n;
	}
	return 0;
}

static int pack_commit(struct packer *p)
{
	struct wire_msg m = {.type = WIRE_COMMIT};
	int r = wire_epoch_hash_final(&p->hash, &m.commit);

	if (r < 0)
		return r;
	msgpack_sbuffer_clear(&p->sb);
	r = wire_pack(&p->sb, &m);
	return r < 0 ? r : p->emit(p->sb.data, p->sb.size, p->arg);
}

int store_pack_full(const struct store *s, store_emit_fn emit, void *arg)
{
	struct packer p = {.emit = emit, .arg = arg};
	struct wire_msg begin = {.type = WIRE_EPOCH_BEGIN,
				 .epoch_begin = {.epoch = s->epoch,
						 .base_epoch = 0,
						 .incarnation = s->incarnation}};
	_cleanup_free_ uint8_t *buf = malloc(WIRE_MAX_BIN);
	int r;

	if (!s->meta)
		return -ENOENT;
	if (!buf || wire_epoch_hash_init(&p.hash) < 0) {
		wire_epoch_hash_done(&p.hash);
		return -ENOMEM;
	}
	msgpack_sbuffer_init(&p.sb);
	r = pack_one(&p, &begin);
	if (r >= 0)
		r = pack_mappings(&p, s->meta);
	if (r >= 0)
		r = pack_threads(&p, s->meta);
	if (r >= 0)
		r = pack_fds(&p, s->meta);
	if (r >= 0)
		r = pack_pages(&p, &s->pages, buf);
	if (r >= 0)
		r = pack_commit(&p);
	msgpack_sbuffer_destroy(&p.sb);
	wire_epoch_hash_done(&p.hash);
	return r;
}
