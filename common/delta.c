/*
 * delta.c - see delta.h.
 *
 * The run encoder compares 32 bytes at a time while the page is equal
 * (most of it, usually) and a word at a time inside a changed run; equal
 * gaps of two bytes or less stay inside the run, since a new pair of
 * varints would cost as much. (A byte-at-a-time run scan was the largest
 * cost of primaryd's encoding: bench/ship_micro.c.)
 */
#include "delta.h"

#include <endian.h>
#include <errno.h>
#include <lz4.h>
#include <stdbool.h>
#include <string.h>
#include <zstd.h>

#define BLOCK 64u
#define NBLOCKS (DELTA_PAGE / BLOCK)
#define MERGE_GAP 2u
#define ZSTD_LEVEL 1

static uint64_t load64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static size_t put_varint(uint8_t *out, uint32_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		out[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

/* A varint of at most 2 bytes (values < 16384 cover a page): -1 when bad or cut short. */
static long get_varint(const uint8_t *p, size_t n, size_t *pos)
{
	uint32_t v = 0;
	for (unsigned shift = 0; shift <= 7; shift += 7) {
		if (*pos >= n)
			return -1;
		uint8_t b = p[(*pos)++];
		v |= (uint32_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return v;
	}
	return -1;
}

/* The XOR of eight bytes, byte 0 of the page lowest whatever the host's byte order. */
static uint64_t xor64(const uint8_t *a, const uint8_t *b, size_t i)
{
	return le64toh(load64(a + i) ^ load64(b + i));
}

/* 0x80 in each byte of x that is zero, nothing elsewhere (no false positives: no carries). */
static uint64_t zero_bytes(uint64_t x)
{
	const uint64_t low7 = 0x7f7f7f7f7f7f7f7full;
	return ~(((x & low7) + low7) | x | low7);
}

/*
 * The first byte from i on that differs, or DELTA_PAGE. 32 bytes per step
 * while they are equal (four independent loads the compiler keeps in
 * registers), then the word that differs says which byte.
 */
static size_t skip_equal(const uint8_t *a, const uint8_t *b, size_t i)
{
	while (i + 32 <= DELTA_PAGE && (xor64(a, b, i) | xor64(a, b, i + 8) | xor64(a, b, i + 16) |
					 xor64(a, b, i + 24)) == 0)
		i += 32;
	for (; i + 8 <= DELTA_PAGE; i += 8) {
		uint64_t x = xor64(a, b, i);
		if (x)
			return i + (size_t)__builtin_ctzll(x) / 8;
	}
	while (i < DELTA_PAGE && a[i] == b[i])
		i++;
	return i;
}

/* Byte k is equal, counting bytes past the page's end as equal. */
static bool equal_at(const uint8_t *a, const uint8_t *b, size_t k)
{
	return k >= DELTA_PAGE || a[k] == b[k];
}

/*
 * End of the changed run starting at i (a byte that differs): it ends
 * before the first MERGE_GAP + 1 equal bytes in a row, or before the equal
 * bytes that end the page. A word at a time: the run of three zero bytes
 * in its XOR is found with a mask, six bytes a step so that a run across
 * two words is seen.
 */
static size_t changed_end(const uint8_t *a, const uint8_t *b, size_t i)
{
	_Static_assert(MERGE_GAP == 2, "the mask below finds runs of three equal bytes");
	for (; i + 8 <= DELTA_PAGE; i += 6) {
		uint64_t z = zero_bytes(xor64(a, b, i));
		uint64_t three = z & (z >> 8) & (z >> 16);
		if (three)
			return i + (size_t)__builtin_ctzll(three) / 8;
	}
	for (; i < DELTA_PAGE; i++)
		if (equal_at(a, b, i) && equal_at(a, b, i + 1) && equal_at(a, b, i + 2))
			return i;
	return DELTA_PAGE;
}

/* The 64-byte blocks that bytes [i, end) touch. */
static uint64_t blocks_of(size_t i, size_t end)
{
	unsigned lo = i / BLOCK, hi = (end - 1) / BLOCK;
	uint64_t upto = hi == 63 ? ~0ull : (1ull << (hi + 1)) - 1;
	return upto & ~((1ull << lo) - 1);
}

/*
 * The run body, or SIZE_MAX when it would reach a whole page. *blocks gets
 * the changed 64-byte blocks as a by-product when the body is complete: a
 * run starts and ends on a byte that differs and holds no gap longer than
 * MERGE_GAP, so every block it touches holds a changed byte, exactly as
 * changed_blocks() would find, without reading the page a second time.
 */
static size_t encode_zrun(const uint8_t *base, const uint8_t *cur, uint8_t *out, uint64_t *blocks)
{
	size_t i = 0, last = 0, o = 0;
	uint64_t mask = 0;

	for (;;) {
		i = skip_equal(base, cur, i);
		if (i == DELTA_PAGE) {
			*blocks = mask;
			return o;
		}
		size_t end = changed_end(base, cur, i);
		if (o + 6 + (end - i) >= DELTA_PAGE)
			return SIZE_MAX;
		mask |= blocks_of(i, end);
		o += put_varint(out + o, i - last);
		o += put_varint(out + o, end - i);
		memcpy(out + o, cur + i, end - i);
		o += end - i;
		last = i = end;
	}
}

static uint64_t changed_blocks(const uint8_t *base, const uint8_t *cur)
{
	uint64_t mask = 0;
	for (unsigned k = 0; k < NBLOCKS; k++) {
		uint64_t x = 0;
		for (unsigned w = 0; w < BLOCK; w += 8) /* no memcmp call per block */
			x |= xor64(base, cur, k * BLOCK + w);
		mask |= (uint64_t)(x != 0) << k;
	}
	return mask;
}

static size_t encode_blocks(uint64_t mask, const uint8_t *cur, uint8_t *out)
{
	uint64_t le = htole64(mask);
	size_t o = 8;
	memcpy(out, &le, 8);
	for (unsigned k = 0; k < NBLOCKS; k++)
		if (mask & (1ull << k)) {
			memcpy(out + o, cur + k * BLOCK, BLOCK);
			o += BLOCK;
		}
	return o;
}

static void put_head(uint8_t *out, uint64_t addr, enum delta_kind kind, size_t len)
{
	uint64_t a = htole64(addr);
	uint16_t l = htole16((uint16_t)len);
	memcpy(out, &a, 8);
	out[8] = (uint8_t)kind;
	memcpy(out + 9, &l, 2);
}

const uint8_t delta_zero_page[DELTA_PAGE];

/* 8-byte words of the page that are not zero: one compare each, no early exit. */
static size_t nonzero_words(const uint8_t *page)
{
	size_t n = 0;
	for (size_t i = 0; i < DELTA_PAGE; i += 8)
		n += load64(page + i) != 0;
	return n;
}

/*
 * Runs against a page of zeros: the backup's copy plays no part. A page
 * mostly not zero (a live object's page the cache lost) goes whole at
 * once: its runs would save little and cost a scan (DELTA_ON_ZERO_MAX).
 */
static size_t encode_on_zero(uint64_t addr, const uint8_t *cur, uint8_t *out,
			     enum delta_kind *kind)
{
	uint64_t mask;
	size_t words = nonzero_words(cur), len = 0;

	if (words > DELTA_ON_ZERO_MAX / 8)
		len = SIZE_MAX;
	else if (words) /* none: an empty body, no scan */
		len = encode_zrun(delta_zero_page, cur, out + DELTA_REC_HEAD, &mask);

	if (len == SIZE_MAX) {
		*kind = DELTA_WHOLE;
		return delta_encode_whole(addr, cur, out);
	}
	*kind = DELTA_ON_ZERO;
	put_head(out, addr, DELTA_ON_ZERO, len);
	return DELTA_REC_HEAD + len;
}

size_t delta_encode_page(uint64_t addr, const uint8_t *base, const uint8_t *cur, uint8_t *out,
			 enum delta_kind *kind)
{
	uint8_t *body = out + DELTA_REC_HEAD;
	uint64_t mask = 0;

	if (!base)
		return encode_on_zero(addr, cur, out, kind);
	size_t len = encode_zrun(base, cur, body, &mask);
	if (len == SIZE_MAX) /* runs gave up before the page's end: blocks may still do */
		mask = changed_blocks(base, cur);
	size_t blocks_len = 8 + (size_t)__builtin_popcountll(mask) * BLOCK;

	/* Runs on the backup's copy of zeros are runs on zeros: delta_rec_is_zero() can tell. */
	*kind = base == delta_zero_page ? DELTA_ON_ZERO : DELTA_ZRUN;
	if (len != 0 && blocks_len < len && blocks_len < DELTA_PAGE) {
		len = encode_blocks(mask, cur, body);
		*kind = DELTA_BLOCKS;
	} else if (len == SIZE_MAX) {
		memcpy(body, cur, DELTA_PAGE);
		len = DELTA_PAGE;
		*kind = DELTA_WHOLE;
	}
	put_head(out, addr, *kind, len);
	return DELTA_REC_HEAD + len;
}

size_t delta_encode_as(enum delta_kind want, uint64_t addr, const uint8_t *base, const uint8_t *cur,
		       uint8_t *out)
{
	uint8_t *body = out + DELTA_REC_HEAD;
	size_t len = SIZE_MAX;

	uint64_t mask;
	if (want == DELTA_ZRUN)
		len = encode_zrun(base, cur, body, &mask);
	else if (want == DELTA_BLOCKS) {
		mask = changed_blocks(base, cur);
		if (8 + (size_t)__builtin_popcountll(mask) * BLOCK < DELTA_PAGE)
			len = encode_blocks(mask, cur, body);
	}
	if (len == SIZE_MAX)
		return delta_encode_whole(addr, cur, out);
	put_head(out, addr, want, len);
	return DELTA_REC_HEAD + len;
}

size_t delta_encode_whole(uint64_t addr, const uint8_t *cur, uint8_t *out)
{
	put_head(out, addr, DELTA_WHOLE, DELTA_PAGE);
	memcpy(out + DELTA_REC_HEAD, cur, DELTA_PAGE);
	return DELTA_REC_MAX;
}

/* One walk for both apply (page set) and check (page NULL). */
static int walk(enum delta_kind kind, const uint8_t *body, size_t len, uint8_t *page)
{
	size_t pos = 0, at = 0;

	switch (kind) {
	case DELTA_WHOLE:
		if (len != DELTA_PAGE)
			return -EBADMSG;
		if (page)
			memcpy(page, body, DELTA_PAGE);
		return 0;
	case DELTA_ON_ZERO:
		if (page)
			memset(page, 0, DELTA_PAGE);
		__attribute__((fallthrough)); /* the runs are applied to the zeros */
	case DELTA_ZRUN:
		while (pos < len) {
			long same = get_varint(body, len, &pos);
			long diff = same < 0 ? -1 : get_varint(body, len, &pos);
			if (diff < 0 || at + same + diff > DELTA_PAGE || pos + diff > len)
				return -EBADMSG;
			at += same;
			if (page)
				memcpy(page + at, body + pos, diff);
			at += diff;
			pos += diff;
		}
		return 0;
	case DELTA_BLOCKS: {
		uint64_t mask;
		if (len < 8)
			return -EBADMSG;
		memcpy(&mask, body, 8);
		mask = le64toh(mask);
		if (len != 8 + (size_t)__builtin_popcountll(mask) * BLOCK)
			return -EBADMSG;
		pos = 8;
		for (unsigned k = 0; page && k < NBLOCKS; k++)
			if (mask & (1ull << k)) {
				memcpy(page + k * BLOCK, body + pos, BLOCK);
				pos += BLOCK;
			}
		return 0;
	}
	}
	return -EBADMSG;
}

int delta_apply(enum delta_kind kind, const uint8_t *body, size_t len, uint8_t *page)
{
	/* Check first: a bad record must not leave the page half changed. */
	int r = walk(kind, body, len, NULL);
	return r < 0 ? r : walk(kind, body, len, page);
}

int delta_check(enum delta_kind kind, const uint8_t *body, size_t len)
{
	return walk(kind, body, len, NULL);
}

/* The head of the record at *pos, which has room for one: its body is not checked. */
static void rec_at(const uint8_t *p, size_t pos, struct delta_rec *rec)
{
	uint64_t addr;
	uint16_t len;

	memcpy(&addr, p + pos, 8);
	memcpy(&len, p + pos + 9, 2);
	rec->addr = le64toh(addr);
	rec->kind = p[pos + 8];
	rec->len = le16toh(len);
	rec->body = p + pos + DELTA_REC_HEAD;
}

int delta_payload_next(const uint8_t *p, size_t n, size_t *pos, struct delta_rec *rec)
{
	if (*pos == n)
		return 0;
	if (n - *pos < DELTA_REC_HEAD)
		return -EBADMSG;
	rec_at(p, *pos, rec);
	if (rec->addr % DELTA_PAGE || rec->len > DELTA_PAGE ||
	    n - *pos - DELTA_REC_HEAD < rec->len || rec->kind >= DELTA_KINDS ||
	    delta_check(rec->kind, rec->body, rec->len) < 0)
		return -EBADMSG;
	*pos += DELTA_REC_HEAD + rec->len;
	return 1;
}

int delta_payload_next_checked(const uint8_t *p, size_t n, size_t *pos, struct delta_rec *rec)
{
	if (*pos >= n)
		return 0;
	rec_at(p, *pos, rec);
	*pos += DELTA_REC_HEAD + rec->len;
	return 1;
}

void delta_apply_checked(const struct delta_rec *rec, uint8_t *page)
{
	walk(rec->kind, rec->body, rec->len, page);
}

size_t delta_bound(enum delta_codec codec, size_t n)
{
	switch (codec) {
	case DELTA_CODEC_LZ4:
		return LZ4_compressBound(n);
	case DELTA_CODEC_ZSTD:
		return ZSTD_compressBound(n);
	default:
		return n;
	}
}

size_t delta_compress(enum delta_codec codec, const uint8_t *src, size_t n, uint8_t *dst,
		      size_t cap)
{
	switch (codec) {
	case DELTA_CODEC_LZ4: {
		int r = LZ4_compress_default((const char *)src, (char *)dst, n, cap);
		return r > 0 ? (size_t)r : 0;
	}
	case DELTA_CODEC_ZSTD: {
		size_t r = ZSTD_compress(dst, cap, src, n, ZSTD_LEVEL);
		return ZSTD_isError(r) ? 0 : r;
	}
	default:
		if (n > cap)
			return 0;
		memcpy(dst, src, n);
		return n;
	}
}

int delta_decompress(enum delta_codec codec, const uint8_t *src, size_t n, uint8_t *dst,
		     size_t want)
{
	switch (codec) {
	case DELTA_CODEC_NONE:
		if (n != want)
			return -EBADMSG;
		memcpy(dst, src, n);
		return 0;
	case DELTA_CODEC_LZ4: {
		int r = LZ4_decompress_safe((const char *)src, (char *)dst, n, want);
		return r >= 0 && (size_t)r == want ? 0 : -EBADMSG;
	}
	case DELTA_CODEC_ZSTD: {
		size_t r = ZSTD_decompress(dst, want, src, n);
		return !ZSTD_isError(r) && r == want ? 0 : -EBADMSG;
	}
	}
	return -EBADMSG;
}

const char *delta_codec_name(enum delta_codec codec)
{
	return codec == DELTA_CODEC_LZ4 ? "lz4" : codec == DELTA_CODEC_ZSTD ? "zstd" : "none";
}
