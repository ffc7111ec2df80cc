/*
 * delta_micro.c - which delta encoding and which codec, measured on real pages.
 *
 *   delta_micro OLD_IMAGE NEW_IMAGE
 *
 * Takes two dumps of the same process (`checksync-primaryd dump`, say
 * 100 ms apart under load) and, for every page present in both that
 * changed, encodes NEW against OLD as byte runs only, as 64-byte blocks
 * only, and as whichever is shorter (what primaryd does); then compresses
 * the records 256 pages to a batch with no codec, lz4 and zstd level 1.
 * Prints bytes and CPU time (CLOCK_PROCESS_CPUTIME_ID, so a loaded machine
 * slows it but does not inflate it) per variant. Build (after meson):
 *
 *   cc -O2 -D_GNU_SOURCE -Icommon bench/delta_micro.c build/common/libchecksync-common.a \
 *      $(pkg-config --libs msgpack openssl libdw libelf inih libevent liblz4 libzstd) -o delta_micro
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "delta.h"
#include "image/image.h"

#define BATCH 256

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const uint8_t *page_at(const struct image *img, uint64_t addr)
{
	for (size_t i = 0; i < img->n_runs; i++) {
		const struct image_pagerun *r = &img->runs[i];
		if (addr >= r->addr && addr < r->addr + r->npages * 4096)
			return img->pages + r->offset + (addr - r->addr);
	}
	return NULL;
}

/* mode 0: runs only, 1: blocks only, 2: shorter of the two (what primaryd does) */
static size_t encode(int mode, uint64_t addr, const uint8_t *base, const uint8_t *cur, uint8_t *out)
{
	enum delta_kind kind;
	if (mode == 0)
		return delta_encode_as(DELTA_ZRUN, addr, base, cur, out);
	if (mode == 1)
		return delta_encode_as(DELTA_BLOCKS, addr, base, cur, out);
	return delta_encode_page(addr, base, cur, out, &kind);
}

int main(int argc, char **argv)
{
	struct image *a, *b;
	char err[512];
	static uint8_t raw[BATCH * DELTA_REC_MAX], out[BATCH * DELTA_REC_MAX * 2];
	const char *names[] = {"runs (zrun)", "blocks (64 B)", "shorter of both"};

	if (argc != 3 || image_read(argv[1], &a, err, sizeof(err)) < 0 ||
	    image_read(argv[2], &b, err, sizeof(err)) < 0) {
		fprintf(stderr, "usage: %s OLD_IMAGE NEW_IMAGE (%s)\n", argv[0], argc == 3 ? err : "");
		return 2;
	}
	size_t changed = 0, same = 0, fresh = 0;
	for (size_t i = 0; i < b->n_runs; i++)
		for (uint64_t p = 0; p < b->runs[i].npages; p++) {
			uint64_t addr = b->runs[i].addr + p * 4096;
			const uint8_t *o = page_at(a, addr), *n = b->pages + b->runs[i].offset + p * 4096;
			if (!o)
				fresh++;
			else if (memcmp(o, n, 4096))
				changed++;
			else
				same++;
		}
	printf("pages in NEW: %zu changed, %zu unchanged, %zu not in OLD\n", changed, same, fresh);
	printf("%-18s %12s %10s %12s %10s %12s %10s %9s\n", "encoding", "raw B", "enc s", "lz4 B", "lz4 s",
	       "zstd-1 B", "zstd s", "B/page");
	for (int mode = 0; mode < 3; mode++) {
		size_t tot_raw = 0, tot_lz4 = 0, tot_zstd = 0, len = 0, np = 0;
		double t_enc = 0, t_lz4 = 0, t_zstd = 0;
		for (size_t i = 0; i < b->n_runs; i++)
			for (uint64_t p = 0; p < b->runs[i].npages; p++) {
				uint64_t addr = b->runs[i].addr + p * 4096;
				const uint8_t *o = page_at(a, addr), *n = b->pages + b->runs[i].offset + p * 4096;
				if (!o || !memcmp(o, n, 4096))
					continue;
				double t0 = cpu_s();
				len += encode(mode, addr, o, n, raw + len);
				t_enc += cpu_s() - t0;
				if (++np == BATCH || (i + 1 == b->n_runs && p + 1 == b->runs[i].npages)) {
					t0 = cpu_s();
					tot_lz4 += delta_compress(DELTA_CODEC_LZ4, raw, len, out, sizeof(out));
					t_lz4 += cpu_s() - t0;
					t0 = cpu_s();
					tot_zstd += delta_compress(DELTA_CODEC_ZSTD, raw, len, out, sizeof(out));
					t_zstd += cpu_s() - t0;
					tot_raw += len;
					len = np = 0;
				}
			}
		if (len) {
			tot_lz4 += delta_compress(DELTA_CODEC_LZ4, raw, len, out, sizeof(out));
			tot_zstd += delta_compress(DELTA_CODEC_ZSTD, raw, len, out, sizeof(out));
			tot_raw += len;
		}
		printf("%-18s %12zu %10.4f %12zu %10.4f %12zu %10.4f %9.0f\n", names[mode], tot_raw, t_enc,
		       tot_lz4, t_lz4, tot_zstd, t_zstd, changed ? (double)tot_zstd / changed : 0);
	}
	printf("whole pages: %zu B raw\n", changed * 4096);
	return 0;
}
