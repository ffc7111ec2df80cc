/*
 * delta.h - sub-page deltas: a page as the bytes that changed since the
 * copy the backup already holds, and the payload format of the wire's
 * DELTA message (wire.h), shared by the primary (encode), the wire decoder
 * (check) and the backup (apply).
 *
 * A DELTA message carries, compressed as one block (lz4 or zstd), a
 * sequence of page records:
 *
 *   addr  u64 little-endian, page aligned
 *   kind  u8   DELTA_WHOLE: body is the page's 4096 bytes
 *              DELTA_ZRUN:  body is pairs (varint same, varint diff, diff
 *                           bytes): `same` bytes as in the base, then `diff`
 *                           bytes of the new page; the rest of the page as
 *                           in the base (XBZRLE's idea: runs of the XOR
 *                           that are zero cost a varint)
 *              DELTA_BLOCKS: body is a u64 little-endian mask of the 64-byte
 *                           blocks that changed, then those blocks in order
 *              DELTA_ON_ZERO: body as DELTA_ZRUN, applied to a page of zeros
 *                           instead of the base (protocol version 4)
 *   len   u16 little-endian, the body's length (<= 4096)
 *   body
 *
 * Why both kinds: a Go heap page changes in scattered words (a map bucket
 * entry, a pointer, a length) and in whole fresh objects; runs are tighter
 * for the first, blocks cost no varints for the second. The encoder takes
 * whichever is shorter for each page, and a page whose delta would be no
 * shorter than itself goes whole.
 *
 * Why DELTA_ON_ZERO: most pages a Go service writes hold per-request
 * garbage, which the reach scan zeroes (capture/reach.c). Such a page is
 * all or mostly zero, and when the cache has no copy of it (a miss, a full
 * epoch) its runs against zeros are a few hundred bytes where the whole
 * page was 4096 to copy and compress, and an all-zero page is a record
 * with an empty body; the cache then keeps a flag, not a copy.
 *
 * Nothing here trusts its input: delta_apply() and delta_payload_next()
 * check every length against the page and the payload.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DELTA_PAGE 4096u

enum delta_kind { DELTA_WHOLE = 0, DELTA_ZRUN = 1, DELTA_BLOCKS = 2, DELTA_ON_ZERO = 3 };
#define DELTA_KINDS 4

/* The record is applied to the copy the backup holds (else it gives the page by itself). */
static inline bool delta_needs_base(enum delta_kind kind)
{
	return kind == DELTA_ZRUN || kind == DELTA_BLOCKS;
}

/* A page of zeros, to encode against when the backup's copy is known to be one. */
extern const uint8_t delta_zero_page[4096];
enum delta_codec { DELTA_CODEC_NONE = 0, DELTA_CODEC_LZ4 = 1, DELTA_CODEC_ZSTD = 2 };

#define DELTA_REC_HEAD 11u
/* A page without a base goes whole when more of its bytes than this are in non-zero words. */
#define DELTA_ON_ZERO_MAX (DELTA_PAGE * 3 / 4)
#define DELTA_REC_MAX (DELTA_REC_HEAD + DELTA_PAGE)

/*
 * Append the record of page `cur` at addr (base: the copy the backup holds,
 * NULL when it is not known) to out, which has room for DELTA_REC_MAX
 * bytes. Returns the bytes appended; *kind says which encoding won. Runs
 * against delta_zero_page or against nothing are DELTA_ON_ZERO, so that
 * such a page found all zero is a record with no body (delta_rec_is_zero).
 */
size_t delta_encode_page(uint64_t addr, const uint8_t *base, const uint8_t *cur, uint8_t *out,
			 enum delta_kind *kind);

/* The record delta_encode_page() just gave says the page is all zero. */
static inline bool delta_rec_is_zero(enum delta_kind kind, size_t rec_len)
{
	return kind == DELTA_ON_ZERO && rec_len == DELTA_REC_HEAD;
}

/* The same with one encoding forced (whole if it is no shorter): for bench/delta_micro.c. */
size_t delta_encode_as(enum delta_kind want, uint64_t addr, const uint8_t *base, const uint8_t *cur,
		       uint8_t *out);

/* Append the record of a page shipped whole (no base). Returns DELTA_REC_MAX. */
size_t delta_encode_whole(uint64_t addr, const uint8_t *cur, uint8_t *out);

/* Apply one record's body to page (which holds the base). 0, or -EBADMSG. */
int delta_apply(enum delta_kind kind, const uint8_t *body, size_t len, uint8_t *page);

/* Check a body as delta_apply() would, without a page. 0, or -EBADMSG. */
int delta_check(enum delta_kind kind, const uint8_t *body, size_t len);

struct delta_rec {
	uint64_t addr;
	enum delta_kind kind;
	const uint8_t *body;
	uint32_t len;
};

/*
 * Walk a decompressed payload: 1 and *rec filled, 0 at its end, -EBADMSG for
 * a record that is cut short, unaligned, of an unknown kind or whose body
 * does not check (*pos is then where it starts).
 */
int delta_payload_next(const uint8_t *p, size_t n, size_t *pos, struct delta_rec *rec);

/*
 * The same two for a payload delta_payload_next() has already walked to its
 * end without an error (wire.c's decoder: wire_delta.raw): no record is
 * checked again. The backup's apply walked each record four times (two
 * checks on the way in, then delta_apply's check and its write); walk was
 * its largest cost (perf, backupd, 13% of its samples).
 */
int delta_payload_next_checked(const uint8_t *p, size_t n, size_t *pos, struct delta_rec *rec);
void delta_apply_checked(const struct delta_rec *rec, uint8_t *page);

/*
 * Compress src into dst (room for delta_bound(n)). Returns the compressed
 * length, or 0 when the codec failed (ship uncompressed then).
 */
size_t delta_bound(enum delta_codec codec, size_t n);
size_t delta_compress(enum delta_codec codec, const uint8_t *src, size_t n, uint8_t *dst,
		      size_t cap);
/* Decompress exactly want bytes; -EBADMSG if the block does not give exactly that many. */
int delta_decompress(enum delta_codec codec, const uint8_t *src, size_t n, uint8_t *dst,
		     size_t want);
const char *delta_codec_name(enum delta_codec codec);
