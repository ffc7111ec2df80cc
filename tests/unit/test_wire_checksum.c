/*
 * test_wire_checksum.c - the epoch checksum COMMIT carries (wire.h):
 * XXH3-128 of the documented rendering of the epoch's decoded fields, 16
 * bytes on the wire; a SHA-256 COMMIT (protocol version 2, kept only in
 * old journal files) is told apart by its length and verifies only with
 * wire_epoch_hash_init_sha256().
 */
#include <endian.h>
#include <errno.h>
#include <openssl/evp.h>
#include <xxhash.h>

#include "unit.h"
#include "wire.h"

static uint8_t page[WIRE_PAGE_SIZE];
static uint8_t rendering[8 * 7 + WIRE_PAGE_SIZE];

static size_t put64(uint8_t *p, uint64_t v)
{
	uint64_t le = htole64(v);
	memcpy(p, &le, 8);
	return 8;
}

/* EPOCH_BEGIN {7, 6, 0x55} then the page at 0x10000, as wire.c renders them. */
static size_t render(void)
{
	size_t n = 0;
	n += put64(rendering + n, WIRE_EPOCH_BEGIN);
	n += put64(rendering + n, 7);
	n += put64(rendering + n, 6);
	n += put64(rendering + n, 0x55);
	n += put64(rendering + n, WIRE_PAGES);
	n += put64(rendering + n, 0x10000);
	n += put64(rendering + n, WIRE_PAGE_SIZE); /* the length before the bytes */
	memcpy(rendering + n, page, WIRE_PAGE_SIZE);
	return n + WIRE_PAGE_SIZE;
}

static int hash_epoch(struct wire_epoch_hash *h, struct wire_commit *c)
{
	struct wire_msg b = {.type = WIRE_EPOCH_BEGIN,
			     .epoch_begin = {.epoch = 7, .base_epoch = 6, .incarnation = 0x55}};
	int r = wire_epoch_hash_add(h, &b);
	if (r == 0)
		r = wire_epoch_hash_add_page(h, 0x10000, page);
	return r == 0 ? wire_epoch_hash_final(h, c) : r;
}

/* The sum is XXH3-128 of the rendering, canonical (big-endian) bytes, 16 of them. */
static void test_is_xxh3_128(void)
{
	struct wire_epoch_hash h;
	struct wire_commit c;
	XXH128_canonical_t want;

	for (size_t i = 0; i < sizeof(page); i++)
		page[i] = (uint8_t)(i * 7 + 3);
	size_t n = render();
	XXH128_canonicalFromHash(&want, XXH3_128bits(rendering, n));
	CHECK_INT(wire_epoch_hash_init(&h), 0);
	CHECK_INT(hash_epoch(&h, &c), 0);
	CHECK_INT(c.sum_len, WIRE_SUM_XXH128);
	CHECK_INT(c.epoch, 7);
	CHECK_INT(c.npages, 1);
	CHECK(memcmp(c.sum, want.digest, 16) == 0);
	wire_epoch_hash_done(&h);

	/* packed as a 16-byte bin, and back */
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	CHECK_INT(wire_pack(&sb, &(struct wire_msg){.type = WIRE_COMMIT, .commit = c}), 0);
	CHECK_INT(sb.size, 1 + 1 + 1 + 2 + 16 + 1); /* array, type, epoch, bin8 head, sum, npages */
	struct wire_decoder *d = wire_decoder_new();
	struct wire_msg m;
	char err[256] = "";
	wire_decoder_feed(d, sb.data, sb.size);
	CHECK_INT(wire_decoder_next(d, &m, err, sizeof(err)), 1);
	CHECK_INT(m.commit.sum_len, 16);
	CHECK(memcmp(m.commit.sum, want.digest, 16) == 0);
	wire_decoder_free(d);
	msgpack_sbuffer_destroy(&sb);

	/* a sum_len that is neither is not packed */
	c.sum_len = 20;
	msgpack_sbuffer_init(&sb);
	CHECK(wire_pack(&sb, &(struct wire_msg){.type = WIRE_COMMIT, .commit = c}) < 0);
	msgpack_sbuffer_destroy(&sb);
}

/* One byte of the page changed: the sum differs (the point of having one). */
static void test_detects_a_byte(void)
{
	struct wire_epoch_hash h;
	struct wire_commit a, b;
	char err[256] = "";

	CHECK_INT(wire_epoch_hash_init(&h), 0);
	CHECK_INT(hash_epoch(&h, &a), 0);
	page[4095] ^= 0x80;
	CHECK_INT(hash_epoch(&h, &b), 0);
	CHECK(memcmp(a.sum, b.sum, 16) != 0);
	CHECK_INT(hash_epoch(&h, &b), 0); /* the hash starts afresh at EPOCH_BEGIN */
	page[4095] ^= 0x80;
	struct wire_msg begin = {.type = WIRE_EPOCH_BEGIN,
				 .epoch_begin = {.epoch = 7, .base_epoch = 6, .incarnation = 0x55}};
	CHECK_INT(wire_epoch_hash_add(&h, &begin), 0);
	CHECK_INT(wire_epoch_hash_add_page(&h, 0x10000, page), 0);
	CHECK_INT(wire_epoch_hash_verify(&h, &b, err, sizeof(err)), -EBADMSG);
	CHECK_STR(err, "COMMIT: field 'checksum': does not match the epoch's messages");
	wire_epoch_hash_done(&h);
}

/* A version-2 COMMIT (SHA-256 of the same rendering): refused by the wire's hash, by name. */
static void test_sha256_commit(void)
{
	struct wire_epoch_hash h;
	struct wire_commit c = {.epoch = 7, .npages = 1, .sum_len = WIRE_SUM_SHA256};
	unsigned len = 32;
	char err[256] = "";

	CHECK_INT(EVP_Digest(rendering, render(), c.sum, &len, EVP_sha256(), NULL), 1);
	struct wire_msg begin = {.type = WIRE_EPOCH_BEGIN,
				 .epoch_begin = {.epoch = 7, .base_epoch = 6, .incarnation = 0x55}};

	CHECK_INT(wire_epoch_hash_init(&h), 0);
	CHECK_INT(wire_epoch_hash_add(&h, &begin), 0);
	CHECK_INT(wire_epoch_hash_add_page(&h, 0x10000, page), 0);
	CHECK_INT(wire_epoch_hash_verify(&h, &c, err, sizeof(err)), -EBADMSG);
	CHECK_STR(err, "COMMIT: field 'checksum': 32 bytes (SHA-256, protocol version 2), expected "
		       "a 16-byte XXH3-128");
	wire_epoch_hash_done(&h);

	/* ... and verified by the journal's legacy path */
	CHECK_INT(wire_epoch_hash_init_sha256(&h), 0);
	CHECK_INT(wire_epoch_hash_add(&h, &begin), 0);
	CHECK_INT(wire_epoch_hash_add_page(&h, 0x10000, page), 0);
	CHECK_INT(wire_epoch_hash_verify(&h, &c, err, sizeof(err)), 0);
	wire_epoch_hash_done(&h);

	/* a 16-byte sum offered to the legacy hash is refused the same way */
	CHECK_INT(wire_epoch_hash_init_sha256(&h), 0);
	struct wire_commit x;
	CHECK_INT(hash_epoch(&h, &x), 0);
	CHECK_INT(x.sum_len, WIRE_SUM_SHA256);
	CHECK(memcmp(x.sum, c.sum, 32) == 0);
	wire_epoch_hash_done(&h);
}

int main(void)
{
	test_is_xxh3_128();
	test_detects_a_byte();
	test_sha256_commit();
	UNIT_EXIT();
}
