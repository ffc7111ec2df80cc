/*
 * ship_micro.c - primaryd's CPU per epoch after resume, on real pages:
 * the epoch checksum, the delta encoding and the compression, each timed
 * with CLOCK_THREAD_CPUTIME_ID (a loaded machine slows it, it does not
 * inflate it).
 *
 *   ship_micro [--sha256] [--codec zstd|lz4|none] [--reps N] [--miss-percent P] OLD NEW
 *
 * OLD and NEW are two dumps of one process under load (`checksync-primaryd
 * dump`, see bench/README.md). The epoch is every page of NEW that differs
 * from OLD: a page OLD holds is encoded against it (delta_encode_page), one
 * it lacks against nothing (a cache miss: runs on zeros, or whole), an
 * all-zero page of OLD is cached as a flag, as in capture/shipped.c, 256
 * records to a batch compressed as
 * primaryd does (delta.c), each page added to the epoch checksum
 * (wire_epoch_hash_add_page). --sha256 hashes with the SHA-256 of protocol
 * version 2, for a before/after in one binary. Prints ms of CPU per epoch
 * per stage, the median of N repetitions.
 *
 *   ship_micro [...] --trace FILE
 *
 * replays instead the pages a live primaryd encoded, against its cache as
 * it was (capture/ship_trace.h says how to record one): the pages as the
 * reach scan left them, which two dumps do not give. The stages run one
 * after the other over all pages, so each page is read cold by each (in
 * primaryd the checksum warms it for the encoder): encode reads high.
 */
#include <fcntl.h>
#include <getopt.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capture/ship_trace.h"
#include "delta.h"
#include "image/image.h"
#include "wire.h"

#define BATCH WIRE_MAX_DELTA_PAGES
#define MAX_REPS 64

static double cpu_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const uint8_t *page_at(const struct image *img, uint64_t addr)
{
	size_t lo = 0, hi = img->n_runs;

	while (lo < hi) { /* runs are in address order */
		size_t mid = lo + (hi - lo) / 2;
		const struct image_pagerun *r = &img->runs[mid];
		if (addr < r->addr)
			hi = mid;
		else if (addr >= r->addr + r->npages * 4096)
			lo = mid + 1;
		else
			return img->pages + r->offset + (addr - r->addr);
	}
	return NULL;
}

struct page_ref {
	uint64_t addr;
	const uint8_t *base, *cur; /* base NULL: ships whole */
};

struct stage {
	double hash, encode, compress;
	size_t raw, wire;
	size_t kinds[DELTA_KINDS];
};

static const uint8_t trace_zeros[4096];

/*
 * A trace of the pages a live primaryd encoded (capture/ship_trace.h:
 * CHECKSYNC_DEBUG_SHIP_TRACE=PATH,SKIP,COUNT). Returns the pages, or 0.
 */
static size_t load_trace(const char *path, struct page_ref **out)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return 0;
	const uint8_t *p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0), *end = p + st.st_size;
	close(fd);
	if (p == MAP_FAILED)
		return 0;
	size_t n = 0, cap = st.st_size / 4105 + 1;
	struct page_ref *pg = calloc(cap, sizeof(*pg));
	while (pg && end - p >= 9 + 4096 && n < cap) {
		uint64_t addr;
		memcpy(&addr, p, 8);
		uint8_t how = p[8];
		p += 9;
		const uint8_t *base = how == SHIP_TRACE_MISS ? NULL : how == SHIP_TRACE_ZERO ? trace_zeros : p;
		if (how == SHIP_TRACE_CACHED)
			p += 4096;
		if (end - p < 4096)
			break;
		pg[n++] = (struct page_ref){addr, base, p};
		p += 4096;
	}
	*out = pg;
	return n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[n / 2];
}

/*
 * One epoch, a stage at a time over all its pages (timing each page would
 * cost a clock_gettime per page, as much as what it times): the checksum,
 * then the encoding into 256-record batches, then their compression.
 */
static void one_epoch(const struct page_ref *pg, size_t n, bool sha256, enum delta_codec codec,
		      uint8_t *cache, bool *cache_zero, uint8_t *raw, struct stage *st)
{
	size_t nb = (n + BATCH - 1) / BATCH, cap = delta_bound(codec, BATCH * DELTA_REC_MAX);
	size_t *ends = calloc(nb + 1, sizeof(*ends));
	uint8_t *out = malloc(cap);
	struct wire_epoch_hash h;
	struct wire_msg begin = {.type = WIRE_EPOCH_BEGIN,
				 .epoch_begin = {.epoch = 2, .base_epoch = 1, .incarnation = 1}};
	struct wire_commit c;
	size_t len = 0;
	double t;

	*st = (struct stage){0};
	t = cpu_ms();
	if (sha256)
		wire_epoch_hash_init_sha256(&h);
	else
		wire_epoch_hash_init(&h);
	wire_epoch_hash_add(&h, &begin);
	for (size_t i = 0; i < n; i++)
		wire_epoch_hash_add_page(&h, pg[i].addr, pg[i].cur);
	wire_epoch_hash_final(&h, &c);
	wire_epoch_hash_done(&h);
	st->hash = cpu_ms() - t;

	for (size_t i = 0; i < n; i++) /* the cache as it was before this epoch: not timed */
		if (pg[i].base && !(cache_zero[i] = !memcmp(pg[i].base, delta_zero_page, 4096)))
			memcpy(cache + i * 4096, pg[i].base, 4096);
	t = cpu_ms();
	for (size_t i = 0; i < n; i++) {
		enum delta_kind kind;
		uint8_t *b = cache + i * 4096;
		/* encoded against the shipped-page cache, updated as primaryd does */
		const uint8_t *base = !pg[i].base ? NULL : cache_zero[i] ? delta_zero_page : b;
		size_t l = delta_encode_page(pg[i].addr, base, pg[i].cur, raw + len, &kind);
		if (!delta_rec_is_zero(kind, l))
			memcpy(b, pg[i].cur, 4096);
		len += l;
		st->kinds[kind]++;
		if ((i + 1) % BATCH == 0 || i + 1 == n)
			ends[(i + BATCH) / BATCH] = len;
	}
	st->encode = cpu_ms() - t;

	t = cpu_ms();
	for (size_t k = 0; k < nb; k++) {
		size_t l = ends[k + 1] - ends[k];
		size_t w = delta_compress(codec, raw + ends[k], l, out, cap);
		st->wire += w && w < l ? w : l;
	}
	st->compress = cpu_ms() - t;
	st->raw = len;
	free(out);
	free(ends);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"sha256", no_argument, 0, 's'},
					     {"codec", required_argument, 0, 'c'},
					     {"reps", required_argument, 0, 'r'},
					     {"miss-percent", required_argument, 0, 'm'},
					     {"trace", required_argument, 0, 't'},
					     {0}};
	enum delta_codec codec = DELTA_CODEC_ZSTD;
	bool sha256 = false;
	int reps = 9, o, miss_pct = 0;
	const char *trace = NULL;
	struct image *a, *b;
	char err[512] = "";

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 's')
			sha256 = true;
		else if (o == 'c')
			codec = !strcmp(optarg, "lz4")	  ? DELTA_CODEC_LZ4
				: !strcmp(optarg, "none") ? DELTA_CODEC_NONE
							  : DELTA_CODEC_ZSTD;
		else if (o == 'r')
			reps = atoi(optarg);
		else if (o == 'm')
			miss_pct = atoi(optarg);
		else if (o == 't')
			trace = optarg;
		else
			return 2;
	}
	if (reps < 1 || reps > MAX_REPS)
		reps = 9;
	size_t n = 0, zero = 0;
	struct page_ref *pg = NULL;
	if (trace) {
		n = load_trace(trace, &pg);
		a = b = NULL;
		if (!n) {
			fprintf(stderr, "%s: cannot read trace %s\n", argv[0], trace);
			return 2;
		}
	} else if (argc - optind != 2 || image_read(argv[optind], &a, err, sizeof(err)) < 0 ||
	    image_read(argv[optind + 1], &b, err, sizeof(err)) < 0) {
		fprintf(stderr,
			"usage: %s [--sha256] [--codec zstd|lz4|none] [--reps N] [--miss-percent P] OLD_IMAGE NEW_IMAGE%s%s\n",
			argv[0], err[0] ? ": " : "", err);
		return 2;
	}

	static const uint8_t zeros[4096];
	if (!trace)
		pg = calloc(b->pages_len / 4096 + 1, sizeof(*pg));
	for (size_t i = 0; !trace && i < b->n_runs; i++)
		for (uint64_t p = 0; p < b->runs[i].npages; p++) {
			uint64_t addr = b->runs[i].addr + p * 4096;
			const uint8_t *old = page_at(a, addr),
				      *cur = b->pages + b->runs[i].offset + p * 4096;
			if (old && !memcmp(old, cur, 4096))
				continue;
			/* --miss-percent: as if the bounded cache had lost these (primaryd sees ~20%) */
			if (old && (addr >> 12) * 0x9e3779b97f4a7c15ull >> 57 < (uint64_t)miss_pct * 128 / 100)
				old = NULL;
			pg[n++] = (struct page_ref){addr, old, cur};
			zero += !old && !memcmp(cur, zeros, 4096);
		}
	uint8_t *cache = malloc(n * 4096 + 1), *raw = malloc(n * DELTA_REC_MAX + 1);
	bool *cache_zero = calloc(n + 1, sizeof(*cache_zero));
	double hash[MAX_REPS], enc[MAX_REPS], comp[MAX_REPS], tot[MAX_REPS];
	struct stage st;
	for (int r = 0; r < reps; r++) {
		one_epoch(pg, n, sha256, codec, cache, cache_zero, raw, &st);
		hash[r] = st.hash, enc[r] = st.encode, comp[r] = st.compress;
		tot[r] = st.hash + st.encode + st.compress;
	}
	printf("epoch: %zu pages (%.1f MiB): %zu runs, %zu blocks, %zu whole, %zu on zeros (%zu misses "
	       "all zero)\n",
	       n, n * 4096.0 / (1 << 20), st.kinds[DELTA_ZRUN], st.kinds[DELTA_BLOCKS],
	       st.kinds[DELTA_WHOLE], st.kinds[DELTA_ON_ZERO], zero);
	printf("bytes: raw %zu (%.3f of the pages), wire %zu (%.3f)\n", st.raw,
	       (double)st.raw / (n * 4096.0), st.wire, (double)st.wire / (n * 4096.0));
	printf("CPU ms per epoch (median of %d), checksum %s, codec %s:\n", reps,
	       sha256 ? "SHA-256" : "XXH3-128", delta_codec_name(codec));
	printf("  checksum %8.2f\n  encode   %8.2f\n  compress %8.2f\n  total    %8.2f\n",
	       median(hash, reps), median(enc, reps), median(comp, reps), median(tot, reps));
	free(cache);
	free(cache_zero);
	free(raw);
	free(pg);
	if (!trace) {
		image_free(a);
		image_free(b);
	}
	return 0;
}
