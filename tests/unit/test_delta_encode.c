/*
 * test_delta_encode.c - the word-at-a-time run encoder (common/delta.c)
 * gives exactly the records of the plain byte-at-a-time definition below,
 * and every record applies back to the new page; on pages built to hit the
 * edges: runs at the page's ends, equal gaps of 1, 2 and 3 bytes inside a
 * run, runs across the 8- and 32-byte steps, and random pages. A page the
 * backup's copy of which is unknown (no base) is runs on zeros, and an
 * all-zero page an empty record whatever the base: both apply back over
 * any page.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "delta.h"
#include "unit.h"

#define PAGE DELTA_PAGE

/* ---------- the definition, a byte at a time (what delta.c did before) ---------- */

static size_t ref_varint(uint8_t *out, uint32_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		out[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

/* A run ends before three equal bytes in a row, or before the equal bytes that end the page. */
static size_t ref_changed_end(const uint8_t *a, const uint8_t *b, size_t i)
{
	size_t end = i;
	while (i < PAGE) {
		if (a[i] != b[i]) {
			end = ++i;
			continue;
		}
		size_t j = i;
		while (j < PAGE && j - i <= 2 && a[j] == b[j])
			j++;
		if (j == PAGE || j - i > 2)
			break;
		i = j;
	}
	return end;
}

static size_t ref_zrun(const uint8_t *a, const uint8_t *b, uint8_t *out)
{
	size_t i = 0, last = 0, o = 0;
	for (;;) {
		while (i < PAGE && a[i] == b[i])
			i++;
		if (i == PAGE)
			return o;
		size_t end = ref_changed_end(a, b, i);
		if (o + 6 + (end - i) >= PAGE)
			return SIZE_MAX;
		o += ref_varint(out + o, i - last);
		o += ref_varint(out + o, end - i);
		memcpy(out + o, b + i, end - i);
		o += end - i;
		last = i = end;
	}
}

static const uint8_t zeros[PAGE];

/*
 * The record delta_encode_page() must give: the shorter of runs and changed
 * 64-byte blocks; without a base (a = NULL) runs on zeros, or whole when
 * mostly not zero; runs against delta_zero_page are runs on zeros too.
 */
static size_t ref_page(const uint8_t *a, const uint8_t *b, uint8_t *out, enum delta_kind *kind)
{
	uint8_t *body = out + DELTA_REC_HEAD;
	bool no_base = !a, on_zero = !a || a == delta_zero_page;
	size_t len = ref_zrun(no_base ? zeros : a, b, body), nonzero = 0;
	for (size_t i = 0; i < PAGE; i += 8)
		nonzero += memcmp(b + i, zeros, 8) ? 8 : 0;
	if (no_base && nonzero > DELTA_ON_ZERO_MAX)
		len = SIZE_MAX; /* mostly not zero: whole without trying */
	uint64_t mask = 0;
	for (unsigned k = 0; !no_base && len != 0 && k < PAGE / 64; k++)
		if (memcmp(a + k * 64, b + k * 64, 64) != 0)
			mask |= 1ull << k;
	size_t blocks_len = 8 + (size_t)__builtin_popcountll(mask) * 64;

	*kind = on_zero ? DELTA_ON_ZERO : DELTA_ZRUN;
	if (no_base) {
		if (len == SIZE_MAX) {
			memcpy(body, b, PAGE);
			len = PAGE;
			*kind = DELTA_WHOLE;
		}
	} else if (len != 0 && blocks_len < len && blocks_len < PAGE) {
		memcpy(body, &mask, 8); /* little-endian host (x86-64) */
		len = 8;
		for (unsigned k = 0; k < PAGE / 64; k++)
			if (mask & (1ull << k)) {
				memcpy(body + len, b + k * 64, 64);
				len += 64;
			}
		*kind = DELTA_BLOCKS;
	} else if (len == SIZE_MAX) {
		memcpy(body, b, PAGE);
		len = PAGE;
		*kind = DELTA_WHOLE;
	}
	uint64_t addr = 0x1000;
	uint16_t l = (uint16_t)len;
	memcpy(out, &addr, 8);
	out[8] = (uint8_t)*kind;
	memcpy(out + 9, &l, 2);
	return DELTA_REC_HEAD + len;
}

/* ---------- checks ---------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)rng;
}

static int cases;

/*
 * The record as a payload of one, walked as the backup does (checked once,
 * then walked and applied unchecked): the same record and the same page.
 */
static void check_payload(const uint8_t *rec, size_t n, const uint8_t *base, const uint8_t *cur)
{
	static uint8_t page[PAGE];
	struct delta_rec a, b;
	size_t pos = 0, pos2 = 0;

	CHECK_INT(delta_payload_next(rec, n, &pos, &a), 1);
	CHECK_INT(delta_payload_next(rec, n, &pos, &a), 0);
	CHECK_INT(delta_payload_next_checked(rec, n, &pos2, &b), 1);
	CHECK_INT(pos2, n);
	CHECK(b.addr == 0x1000 && b.kind == a.kind && b.len == a.len && b.body == a.body);
	CHECK_INT(delta_payload_next_checked(rec, n, &pos2, &b), 0);
	memcpy(page, base, PAGE);
	delta_apply_checked(&b, page);
	CHECK(memcmp(page, cur, PAGE) == 0);
}

/* The record of cur against base: same body as the definition's, and it applies back. */
static void check_pair(const uint8_t *base, const uint8_t *cur)
{
	static uint8_t rec[DELTA_REC_MAX], want[PAGE + 16], page[PAGE];
	size_t n = delta_encode_as(DELTA_ZRUN, 0x1000, base, cur, rec);
	size_t w = ref_zrun(base, cur, want);
	uint16_t len;

	cases++;
	memcpy(&len, rec + 9, 2);
	if (w == SIZE_MAX) {
		CHECK_INT(rec[8], DELTA_WHOLE);
	} else {
		CHECK_INT(rec[8], DELTA_ZRUN);
		CHECK_INT(len, w);
		CHECK_INT(n, DELTA_REC_HEAD + w);
		CHECK(memcmp(rec + DELTA_REC_HEAD, want, w) == 0);
	}
	memcpy(page, base, PAGE);
	CHECK_INT(delta_apply(rec[8], rec + DELTA_REC_HEAD, len, page), 0);
	CHECK(memcmp(page, cur, PAGE) == 0);

	/* delta_encode_page (the shorter of runs and blocks): the reference's record, applies back */
	static uint8_t ref[DELTA_REC_MAX];
	enum delta_kind kind, ref_kind;
	n = delta_encode_page(0x1000, base, cur, rec, &kind);
	size_t rn = ref_page(base, cur, ref, &ref_kind);
	memcpy(&len, rec + 9, 2);
	CHECK_INT(n, DELTA_REC_HEAD + len);
	CHECK_INT(kind, ref_kind);
	CHECK_INT(n, rn);
	CHECK(memcmp(rec, ref, n < rn ? n : rn) == 0);
	memcpy(page, base, PAGE);
	CHECK_INT(delta_apply(kind, rec + DELTA_REC_HEAD, len, page), 0);
	CHECK(memcmp(page, cur, PAGE) == 0);
	check_payload(rec, n, base, cur);

	/* no base (a cache miss): the same as the definition's, and it applies over anything */
	n = delta_encode_page(0x1000, NULL, cur, rec, &kind);
	rn = ref_page(NULL, cur, ref, &ref_kind);
	memcpy(&len, rec + 9, 2);
	CHECK_INT(kind, ref_kind);
	CHECK_INT(n, rn);
	CHECK(memcmp(rec, ref, n < rn ? n : rn) == 0);
	CHECK(kind == DELTA_WHOLE || !delta_needs_base(kind));
	memset(page, 0xa5, PAGE);
	CHECK_INT(delta_apply(kind, rec + DELTA_REC_HEAD, len, page), 0);
	CHECK(memcmp(page, cur, PAGE) == 0);
	CHECK(delta_rec_is_zero(kind, n) == !memcmp(cur, zeros, PAGE));
	if (base == delta_zero_page) { /* runs against the zero page are runs on zeros */
		n = delta_encode_page(0x1000, base, cur, rec, &kind);
		CHECK(kind != DELTA_ZRUN);
		CHECK(delta_rec_is_zero(kind, n) == !memcmp(cur, zeros, PAGE));
	}
}

/* Garbage zeroed around a few live objects, and pages of zeros, against old contents. */
static void test_on_zero(void)
{
	static uint8_t base[PAGE], cur[PAGE], rec[DELTA_REC_MAX];
	enum delta_kind kind;

	for (size_t i = 0; i < PAGE; i++)
		base[i] = (uint8_t)(i * 13 + 7);
	memset(cur, 0, PAGE);
	check_pair(base, cur); /* now all zero: runs of zeros against the old bytes */
	check_pair(delta_zero_page, cur); /* zero, cached as zero: an empty record on zeros */
	CHECK_INT(delta_encode_page(0x1000, delta_zero_page, cur, rec, &kind), DELTA_REC_HEAD);
	CHECK_INT(kind, DELTA_ON_ZERO);
	CHECK(delta_rec_is_zero(kind, DELTA_REC_HEAD));
	CHECK_INT(delta_encode_page(0x1000, NULL, cur, rec, &kind), DELTA_REC_HEAD);
	CHECK_INT(kind, DELTA_ON_ZERO);
	for (int round = 0; round < 500; round++) {
		memset(cur, 0, PAGE);
		for (int o = rnd() % 8; o > 0; o--) { /* a few live objects */
			size_t p = rnd() % PAGE, l = 8 + rnd() % 200;
			for (size_t k = p; k < p + l && k < PAGE; k++)
				cur[k] = (uint8_t)rnd();
		}
		check_pair(base, cur);
		check_pair(delta_zero_page, cur);
	}
	/* no base, every byte set: whole */
	memset(cur, 0x5a, PAGE);
	CHECK_INT(delta_encode_page(0x1000, NULL, cur, rec, &kind), DELTA_REC_MAX);
	CHECK_INT(kind, DELTA_WHOLE);
}

static void test_edges(void)
{
	static uint8_t base[PAGE], cur[PAGE];

	for (size_t i = 0; i < PAGE; i++)
		base[i] = (uint8_t)(i * 13 + 7);
	memcpy(cur, base, PAGE);
	check_pair(base, cur); /* equal: an empty body */

	/* one changed byte at every offset near the word and block steps and the page's ends */
	static const size_t at[] = {0, 1, 2, 5, 6, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 4064,
				    4086, 4087, 4088, 4089, 4090, 4091, 4092, 4093, 4094, 4095};
	for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
		memcpy(cur, base, PAGE);
		cur[at[k]] ^= 0x5a;
		check_pair(base, cur);
		/* and gaps of 1..4 equal bytes after it, then another change */
		for (size_t gap = 1; gap <= 4; gap++) {
			size_t j = at[k] + 1 + gap;
			if (j < PAGE) {
				cur[j] ^= 0xa5;
				check_pair(base, cur);
				cur[j] ^= 0xa5;
			}
		}
	}

	/* runs that straddle each 8-byte word boundary: two changed bytes, a gap of 2, two more */
	for (size_t s = 0; s < 40; s++) {
		memcpy(cur, base, PAGE);
		cur[100 + s] ^= 1, cur[101 + s] ^= 1, cur[104 + s] ^= 1, cur[105 + s] ^= 1;
		check_pair(base, cur);
	}

	/* scattered changes: runs give up, blocks win (the mask comes from changed_blocks then) */
	memcpy(cur, base, PAGE);
	for (size_t i = 0; i < PAGE / 2; i += 3)
		cur[i] ^= 1;
	check_pair(base, cur);
	/* one changed byte in each of a few blocks, and in every block */
	for (size_t step = 64; step <= 1024; step *= 2) {
		memcpy(cur, base, PAGE);
		for (size_t i = 63; i < PAGE; i += step)
			cur[i] ^= 1, cur[i - 63 + (i / 64) % 64] ^= 2;
		check_pair(base, cur);
	}

	/* every other block wholly changed: blocks win, each run ending on a block's end */
	memcpy(cur, base, PAGE);
	for (size_t k = 0; k < 16; k += 2)
		for (size_t i = k * 64; i < k * 64 + 64; i++)
			cur[i] ^= 0x11;
	check_pair(base, cur);
	enum delta_kind kind;
	static uint8_t rec[DELTA_REC_MAX];
	CHECK_INT(delta_encode_page(0x1000, base, cur, rec, &kind), DELTA_REC_HEAD + 8 + 8 * 64);
	CHECK_INT(kind, DELTA_BLOCKS);

	/* the whole page changed: whole */
	for (size_t i = 0; i < PAGE; i++)
		cur[i] = base[i] ^ 0xff;
	check_pair(base, cur);
}

static void test_random(void)
{
	static uint8_t base[PAGE], cur[PAGE];

	for (int round = 0; round < 3000; round++) {
		for (size_t i = 0; i < PAGE; i++)
			base[i] = (uint8_t)(rnd() % 4); /* few values: equal bytes happen by chance */
		memcpy(cur, base, PAGE);
		int changes = 1 + rnd() % (round % 7 == 0 ? 2000 : 40);
		for (int c = 0; c < changes; c++) {
			size_t p = rnd() % PAGE, l = 1 + rnd() % 12;
			for (size_t k = p; k < p + l && k < PAGE; k++)
				cur[k] = (uint8_t)rnd();
		}
		check_pair(base, cur);
	}
}

int main(void)
{
	test_edges();
	test_random();
	test_on_zero();
	CHECK(cases > 3000);
	UNIT_EXIT();
}
