/*
 * warm_vs_dump.c - does the backup's image hold what the process holds?
 *
 *   warm_vs_dump STATE_DIR/SERVICE IMAGE_DIR
 *
 * Loads the journal under STATE_DIR/SERVICE into a store, exactly as the
 * backup does when it starts (every epoch, deltas included, replayed and
 * verified), and compares it page by page with a dump of the process
 * (`checksync-primaryd dump`): every page of the dump must be in the store
 * with the same bytes (or be all zero and absent: restore maps it fresh),
 * and the dump's page runs must ascend by address. Prints one line,
 * "compared N pages: M differ, K missing, store epoch E, U runs out of
 * order" (and on stderr the first few pages that differ or runs out of
 * order, and every page missing), and exits 0 only when M, K and U are 0.
 * Used by tests/test_delta.py.
 */
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>

#include "image/image.h"
#include "journal.h"
#include "store.h"
#include "util.h"

int main(int argc, char **argv)
{
	struct event_base *base = event_base_new();
	struct journal_writer *w = NULL;
	struct journal *j = NULL;
	struct store *s = NULL;
	struct image *dump = NULL, warm = {0};
	char err[512];
	uint64_t compared = 0, differ = 0, missing = 0, unordered = 0;
	size_t k = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: %s STATE_DIR/SERVICE IMAGE_DIR\n", argv[0]);
		return 2;
	}
	if (!base || journal_writer_new(base, &w) < 0 ||
	    journal_open(w, argv[1], "warm_vs_dump", &j, &s) < 0) {
		fprintf(stderr, "warm_vs_dump: cannot load the journal in %s\n", argv[1]);
		return 2;
	}
	if (image_read(argv[2], &dump, err, sizeof(err)) < 0) {
		fprintf(stderr, "warm_vs_dump: %s\n", err);
		return 2;
	}
	if (store_build_image(s, &warm) < 0) {
		fprintf(stderr, "warm_vs_dump: the journal in %s holds no image\n", argv[1]);
		return 2;
	}
	/*
	 * Both run lists must ascend by address (image.h): the walk below relies
	 * on it, and so does the primary's carry of unshipped pages (wp.c).
	 */
	for (size_t i = 1; i < dump->n_runs; i++)
		if (dump->runs[i].addr < dump->runs[i - 1].addr + dump->runs[i - 1].npages * PAGE_SIZE &&
		    unordered++ < 5)
			fprintf(stderr, "dump run %zu at %#" PRIx64 " starts below the end of run %zu\n",
				i, dump->runs[i].addr, i - 1);
	/* Walk both run lists together, page by page. */
	for (size_t i = 0; i < dump->n_runs; i++)
		for (uint64_t p = 0; p < dump->runs[i].npages; p++) {
			uint64_t addr = dump->runs[i].addr + p * PAGE_SIZE;
			const uint8_t *want = dump->pages + dump->runs[i].offset + p * PAGE_SIZE;
			const uint8_t *got = NULL;

			while (k < warm.n_runs &&
			       warm.runs[k].addr + warm.runs[k].npages * PAGE_SIZE <= addr)
				k++;
			if (k < warm.n_runs && warm.runs[k].addr <= addr)
				got = warm.pages + warm.runs[k].offset + (addr - warm.runs[k].addr);
			compared++;
			/* A page the image does not hold is restored as zero (a fresh mapping). */
			static const uint8_t zero[PAGE_SIZE];
			if (!got && memcmp(want, zero, PAGE_SIZE) == 0)
				got = zero;
			if (!got) {
				size_t nz = 0;
				for (size_t b = 0; b < PAGE_SIZE; b++)
					nz += want[b] != 0;
				missing++;
				fprintf(stderr, "missing page %#" PRIx64 " (%zu bytes not zero)\n", addr,
					nz);
			} else if (memcmp(got, want, PAGE_SIZE) != 0) {
				size_t first = 0, last = PAGE_SIZE - 1, n = 0;
				while (got[first] == want[first])
					first++;
				while (got[last] == want[last])
					last--;
				for (size_t b = first; b <= last; b++)
					n += got[b] != want[b];
				if (differ++ < 5)
					fprintf(stderr,
						"page %#" PRIx64 " differs: %zu bytes in [%zu, %zu]\n",
						addr, n, first, last);
			}
		}
	printf("compared %" PRIu64 " pages: %" PRIu64 " differ, %" PRIu64 " missing, store epoch %" PRIu64
	       ", %" PRIu64 " runs out of order\n",
	       compared, differ, missing, store_epoch(s), unordered);
	store_release_image(&warm);
	image_free(dump);
	journal_free(j);
	store_free(s);
	journal_writer_free(w);
	event_base_free(base);
	return differ || missing || unordered ? 1 : 0;
}
