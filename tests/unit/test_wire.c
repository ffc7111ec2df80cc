/*
 * test_wire.c - the replication protocol's encoder and decoder.
 *
 * Round trips of every message type, whole and byte by byte; every
 * truncation of a valid stream; hand-made bad frames, each with the reason
 * it must give; every single-byte corruption of an epoch, which must never
 * commit; and a seeded mutation fuzzer that must never crash (run it under
 * -Db_sanitize=address,undefined to make "never" mean something).
 */
#include <msgpack.h>
#include <stdlib.h>

#include "delta.h"
#include "image/image.h"
#include "unit.h"
#include "util.h"
#include "wire.h"

/* Override with CHECKSYNC_FUZZ_SEED / CHECKSYNC_FUZZ_ITERATIONS for a longer run. */
#define FUZZ_SEED 0x5eedc0de
#define FUZZ_ITERATIONS 30000

/* ---------- sample messages ---------- */

static uint8_t page_data[2 * WIRE_PAGE_SIZE];
static uint8_t thread_a[100], thread_b[3000], fd_table[500];
static const uint8_t file_sha[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

static const struct wire_vma vmas[] = {
    {.start = 0x400000,
     .end = 0x401000,
     .prot = 5,
     .kind = VMA_FILE,
     .pgoff = 0x2000,
     .path = "/usr/bin/kvserver",
     .file_size = 123456,
     .sha256 = file_sha},
    {.start = 0xc000000000, .end = 0xc000400000, .prot = 3, .kind = VMA_ANON},
    {.start = 0x7ffff000,
     .end = 0x80001000,
     .prot = 3,
     .kind = VMA_STACK,
     .shared = true,
     .path = ""},
};

static const struct wire_blob thread_blobs[] = {{thread_a, sizeof(thread_a)},
						{thread_b, sizeof(thread_b)}};

enum {
	S_HELLO,
	S_HEARTBEAT,
	S_BEGIN,
	S_MAPPINGS,
	S_THREADS,
	S_FDS,
	S_PAGES2,
	S_PAGES1,
	S_COMMIT,
	S_ACK,
	S_ERROR,
	S_FDS_EMPTY,
	S_HANDOVER,
	S_STAND_DOWN,
	S_DELTA,
	S_COUNT
};

static struct wire_msg samples[S_COUNT] = {
    [S_HELLO] = {.type = WIRE_HELLO,
		 .hello = {.proto_version = WIRE_PROTO_VERSION,
			   .role = 0,
			   .service = "kvserver",
			   .boot_id = "2f1b6c1e-7a53-4c1e-9a43-0c6b1f5d9e21",
			   .pid = 4242,
			   .incarnation = 0x8badf00ddeadbeefULL,
			   .flags = WIRE_HELLO_FRESH,
			   .epoch = 4711}},
    [S_HEARTBEAT] = {.type = WIRE_HEARTBEAT,
		     .heartbeat = {.seq = 7,
				   .time_us = 123456789012ULL,
				   .epoch = 3,
				   .echo_us = 98765432109ULL,
				   .echo_age_us = 1234}},
    [S_BEGIN] = {.type = WIRE_EPOCH_BEGIN,
		 .epoch_begin = {.epoch = 4, .base_epoch = 3, .incarnation = 0x8badf00ddeadbeefULL}},
    [S_MAPPINGS] = {.type = WIRE_MAPPINGS, .mappings = {.vmas = vmas, .n = 3}},
    [S_THREADS] = {.type = WIRE_THREADS, .threads = {.threads = thread_blobs, .n = 2}},
    [S_FDS] = {.type = WIRE_FDS, .fds = {.table = {fd_table, sizeof(fd_table)}}},
    [S_PAGES2] = {.type = WIRE_PAGES,
		  .pages = {.addr = 0xc000000000, .npages = 2, .data = page_data}},
    [S_PAGES1] = {.type = WIRE_PAGES, .pages = {.addr = 0x400000, .npages = 1, .data = page_data}},
    [S_COMMIT] = {.type = WIRE_COMMIT}, /* filled by make_samples() */
    [S_ACK] = {.type = WIRE_ACK, .ack = {.epoch = 4}},
    [S_ERROR] = {.type = WIRE_ERROR,
		 .error = {.code = WIRE_ERR_TAKEN_OVER, .reason = "backup has taken over"}},
    [S_FDS_EMPTY] = {.type = WIRE_FDS, .fds = {.table = {NULL, 0}}},
    [S_HANDOVER] = {.type = WIRE_HANDOVER, .handover = {.epoch = 4}},
    [S_STAND_DOWN] = {.type = WIRE_STAND_DOWN},
    [S_DELTA] = {.type = WIRE_DELTA}, /* filled by make_delta() */
};

/* Two page records (a run delta and a whole page), zstd-compressed. */
static uint8_t delta_raw[2 * DELTA_REC_MAX], delta_packed[2 * DELTA_REC_MAX + 512];

static size_t make_payload(uint8_t *raw, enum delta_kind kinds[2])
{
	static uint8_t base[DELTA_PAGE], cur[DELTA_PAGE];
	size_t n;

	memcpy(base, page_data, DELTA_PAGE);
	memcpy(cur, base, DELTA_PAGE);
	cur[10] ^= 0x55;
	cur[3000] ^= 0x11;
	n = delta_encode_page(0xc000001000, base, cur, raw, &kinds[0]);
	n += delta_encode_page(0xc000005000, base, page_data + 1, raw + n, &kinds[1]);
	return n;
}

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 31 + seed);
}

/* The sender's side of an epoch: hash each message, then commit. */
static void make_samples(void)
{
	struct wire_epoch_hash h;

	fill(page_data, sizeof(page_data), 1);
	fill(thread_a, sizeof(thread_a), 2);
	fill(thread_b, sizeof(thread_b), 3);
	fill(fd_table, sizeof(fd_table), 4);
	CHECK_INT(wire_epoch_hash_init(&h), 0);
	for (int i = S_HELLO; i < S_COMMIT; i++)
		CHECK_INT(wire_epoch_hash_add(&h, &samples[i]), 0);
	CHECK_INT(wire_epoch_hash_final(&h, &samples[S_COMMIT].commit), 0);
	CHECK_INT(samples[S_COMMIT].commit.epoch, 4);
	CHECK_INT(samples[S_COMMIT].commit.npages, 3);
	wire_epoch_hash_done(&h);

	enum delta_kind kinds[2];
	size_t raw = make_payload(delta_raw, kinds);
	CHECK_INT(kinds[0], DELTA_ZRUN);
	CHECK_INT(kinds[1], DELTA_WHOLE);
	size_t packed = delta_compress(DELTA_CODEC_ZSTD, delta_raw, raw, delta_packed,
				       sizeof(delta_packed));
	CHECK(packed > 0 && packed < raw);
	samples[S_DELTA].delta = (struct wire_delta){.codec = DELTA_CODEC_ZSTD,
						     .npages = 2,
						     .raw_len = raw,
						     .data = {delta_packed, packed},
						     .raw = delta_raw};
}

/* Pack samples [from, to) into sb; ends[i] is where message from+i ends. */
static void pack_range(msgpack_sbuffer *sb, int from, int to, size_t *ends)
{
	for (int i = from; i < to; i++) {
		CHECK_INT(wire_pack(sb, &samples[i]), 0);
		if (ends)
			ends[i - from] = sb->size;
	}
}

/* ---------- comparing ---------- */

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool blob_eq(const void *a, uint32_t alen, const void *b, uint32_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static bool vma_eq(const struct wire_vma *a, const struct wire_vma *b)
{
	return a->start == b->start && a->end == b->end && a->prot == b->prot &&
	       a->kind == b->kind && a->shared == b->shared && a->pgoff == b->pgoff &&
	       str_eq(a->path, b->path) && a->file_size == b->file_size &&
	       (a->sha256 ? b->sha256 && memcmp(a->sha256, b->sha256, 32) == 0 : !b->sha256);
}

static bool msg_eq(const struct wire_msg *a, const struct wire_msg *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case WIRE_HELLO:
		return a->hello.proto_version == b->hello.proto_version &&
		       a->hello.role == b->hello.role &&
		       str_eq(a->hello.service, b->hello.service) &&
		       str_eq(a->hello.boot_id, b->hello.boot_id) && a->hello.pid == b->hello.pid &&
		       a->hello.incarnation == b->hello.incarnation &&
		       a->hello.flags == b->hello.flags && a->hello.epoch == b->hello.epoch;
	case WIRE_EPOCH_BEGIN:
		return a->epoch_begin.epoch == b->epoch_begin.epoch &&
		       a->epoch_begin.base_epoch == b->epoch_begin.base_epoch &&
		       a->epoch_begin.incarnation == b->epoch_begin.incarnation;
	case WIRE_MAPPINGS:
		if (a->mappings.n != b->mappings.n)
			return false;
		for (uint32_t i = 0; i < a->mappings.n; i++)
			if (!vma_eq(&a->mappings.vmas[i], &b->mappings.vmas[i]))
				return false;
		return true;
	case WIRE_THREADS:
		if (a->threads.n != b->threads.n)
			return false;
		for (uint32_t i = 0; i < a->threads.n; i++)
			if (!blob_eq(a->threads.threads[i].data, a->threads.threads[i].len,
				     b->threads.threads[i].data, b->threads.threads[i].len))
				return false;
		return true;
	case WIRE_FDS:
		return blob_eq(a->fds.table.data, a->fds.table.len, b->fds.table.data,
			       b->fds.table.len);
	case WIRE_PAGES:
		return a->pages.addr == b->pages.addr && a->pages.npages == b->pages.npages &&
		       memcmp(a->pages.data, b->pages.data,
			      (size_t)a->pages.npages * WIRE_PAGE_SIZE) == 0;
	case WIRE_COMMIT:
		return a->commit.epoch == b->commit.epoch &&
		       a->commit.sum_len == b->commit.sum_len &&
		       memcmp(a->commit.sum, b->commit.sum, a->commit.sum_len) == 0 &&
		       a->commit.npages == b->commit.npages;
	case WIRE_ACK:
		return a->ack.epoch == b->ack.epoch;
	case WIRE_HEARTBEAT:
		return a->heartbeat.seq == b->heartbeat.seq &&
		       a->heartbeat.time_us == b->heartbeat.time_us &&
		       a->heartbeat.epoch == b->heartbeat.epoch &&
		       a->heartbeat.echo_us == b->heartbeat.echo_us &&
		       a->heartbeat.echo_age_us == b->heartbeat.echo_age_us;
	case WIRE_ERROR:
		return a->error.code == b->error.code && str_eq(a->error.reason, b->error.reason);
	case WIRE_HANDOVER:
		return a->handover.epoch == b->handover.epoch;
	case WIRE_STAND_DOWN:
		return true;
	case WIRE_DELTA:
		return a->delta.codec == b->delta.codec && a->delta.npages == b->delta.npages &&
		       a->delta.raw_len == b->delta.raw_len &&
		       blob_eq(a->delta.data.data, a->delta.data.len, b->delta.data.data,
			       b->delta.data.len) &&
		       blob_eq(a->delta.raw, a->delta.raw_len, b->delta.raw, b->delta.raw_len);
	}
	return false;
}

/* ---------- round trips ---------- */

static void test_roundtrip_whole(void)
{
	_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();
	msgpack_sbuffer sb;
	struct wire_msg m;
	char err[512] = "";

	msgpack_sbuffer_init(&sb);
	pack_range(&sb, 0, S_COUNT, NULL);
	CHECK_INT(wire_decoder_feed(d, sb.data, sb.size), 0);
	for (int i = 0; i < S_COUNT; i++) {
		CHECK_INT(wire_decoder_next(d, &m, err, sizeof(err)), 1);
		if (!msg_eq(&m, &samples[i])) {
			fprintf(stderr, "sample %d (%s) differs after a round trip\n", i,
				wire_type_name(samples[i].type));
			unit_failures++;
		}
	}
	CHECK_INT(wire_decoder_next(d, &m, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	msgpack_sbuffer_destroy(&sb);
}

static void test_roundtrip_bytewise(void)
{
	_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();
	msgpack_sbuffer sb;
	struct wire_msg m;
	char err[512];
	int got = 0, r;

	msgpack_sbuffer_init(&sb);
	pack_range(&sb, 0, S_COUNT, NULL);
	for (size_t i = 0; i < sb.size; i++) {
		CHECK_INT(wire_decoder_feed(d, sb.data + i, 1), 0);
		while ((r = wire_decoder_next(d, &m, err, sizeof(err))) == 1) {
			CHECK(got < S_COUNT && msg_eq(&m, &samples[got]));
			got++;
		}
		CHECK_INT(r, 0);
	}
	CHECK_INT(got, S_COUNT);
	msgpack_sbuffer_destroy(&sb);
}

/* The biggest legal message must fit every limit. */
static void test_roundtrip_max_pages(void)
{
	_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();
	_cleanup_free_ uint8_t *data = malloc(WIRE_MAX_BIN);
	struct wire_msg in = {
	    .type = WIRE_PAGES,
	    .pages = {.addr = 0x7f0000000000, .npages = WIRE_MAX_PAGES, .data = data}};
	msgpack_sbuffer sb;
	struct wire_msg m;
	char err[512] = "";
	int r = 0;

	fill(data, WIRE_MAX_BIN, 9);
	msgpack_sbuffer_init(&sb);
	CHECK_INT(wire_pack(&sb, &in), 0);
	for (size_t off = 0; off < sb.size && r == 0; off += 65536) {
		CHECK_INT(wire_decoder_feed(d, sb.data + off, min_sz(65536, sb.size - off)), 0);
		r = wire_decoder_next(d, &m, err, sizeof(err));
	}
	CHECK_INT(r, 1);
	CHECK_STR(err, "");
	CHECK(r == 1 && msg_eq(&m, &in));
	msgpack_sbuffer_destroy(&sb);
}

/* ---------- truncations ---------- */

/* Decode p[0..n) with a fresh decoder: the messages it yields, and the final result. */
static int decode_all(const void *p, size_t n, int *count, char *err, size_t errlen)
{
	_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();
	struct wire_msg m;
	int r;

	*count = 0;
	r = wire_decoder_feed(d, p, n);
	if (r == -ENOMEM)
		return r;
	while ((r = wire_decoder_next(d, &m, err, errlen)) == 1)
		(*count)++;
	return r;
}

static void test_truncations(void)
{
	size_t ends[S_COUNT];
	msgpack_sbuffer sb;
	char err[512];
	int count, r;

	msgpack_sbuffer_init(&sb);
	/* Each message alone: every strict prefix needs more and yields nothing. */
	for (int i = 0; i < S_COUNT; i++) {
		msgpack_sbuffer_clear(&sb);
		pack_range(&sb, i, i + 1, NULL);
		for (size_t len = 0; len < sb.size; len++) {
			r = decode_all(sb.data, len, &count, err, sizeof(err));
			if (r != 0 || count != 0) {
				fprintf(stderr, "%s cut to %zu of %zu bytes: r=%d count=%d (%s)\n",
					wire_type_name(samples[i].type), len, sb.size, r, count,
					err);
				unit_failures++;
				break;
			}
		}
	}
	/* The whole stream: a prefix yields exactly the messages it holds whole. */
	msgpack_sbuffer_clear(&sb);
	pack_range(&sb, 0, S_COUNT, ends);
	for (size_t len = 0; len <= sb.size; len++) {
		int whole = 0;
		while (whole < S_COUNT && ends[whole] <= len)
			whole++;
		r = decode_all(sb.data, len, &count, err, sizeof(err));
		if (r != 0 || count != whole) {
			fprintf(stderr, "stream cut to %zu bytes: r=%d count=%d, expected %d\n",
				len, r, count, whole);
			unit_failures++;
			break;
		}
	}
	msgpack_sbuffer_destroy(&sb);
}

/* ---------- bad frames ---------- */

static size_t unhex(const char *hex, uint8_t *out)
{
	size_t n = 0;
	unsigned v;

	while (sscanf(hex, " %2x", &v) == 1) {
		out[n++] = v;
		hex += strspn(hex, " ");
		hex += 2;
	}
	return n;
}

static void expect_bad(const char *what, const void *p, size_t n, const char *reason)
{
	_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();
	struct wire_msg m;
	char err[512] = "";
	int r;

	wire_decoder_feed(d, p, n);
	while ((r = wire_decoder_next(d, &m, err, sizeof(err))) == 1)
		;
	if (r != -EBADMSG || !strstr(err, reason)) {
		fprintf(stderr, "%s: r=%d err=\"%s\", expected -EBADMSG and \"%s\"\n", what, r, err,
			reason);
		unit_failures++;
	}
	/* Bad for good: the same answer again, and no more input taken. */
	CHECK_INT(wire_decoder_next(d, &m, err, sizeof(err)), -EBADMSG);
	CHECK_INT(wire_decoder_feed(d, "\x91\x08", 2), -EBADMSG);
}

static const struct {
	const char *hex;
	const char *reason;
} hex_cases[] = {
    {"91 63", "message: unknown message type 99"},
    {"91 00", "message: unknown message type 0"},
    {"91 a1 78", "message: expected a message type, got a string"},
    {"93 06 cd 10 00 01", "PAGES: 2 fields, expected 3"},
    {"91 05", "FDS: 0 fields, expected 1"},
    {"9a 01 01 01 01 01 01 01 01 01 01", "message: an array of 10 elements, expected 1 to 9"},
    {"90", "message: an array of 0 elements, expected 1 to 9"},
    {"99 01 01 00 a2 6b 76 a1 62 a3 31 32 33 00 00 00",
     "HELLO: field 'pid': expected an unsigned integer, got a string"},
    {"99 01 01 02 a2 6b 76 a1 62 05 00 00 00",
     "HELLO: field 'role': 2 is neither primary (0) nor backup (1)"},
    {"99 01 01 00 a0 a1 62 05 00 00 00", "HELLO: field 'service': 0 bytes, expected 1 to 64"},
    {"99 01 01 00 a3 6b 00 76 a1 62 05 00 00 00", "HELLO: field 'service': contains a NUL byte"},
    {"99 01 01 00 c0 a1 62 05 00 00 00", "HELLO: field 'service': expected a string, got nil"},
    {"99 01 cf 00 00 00 01 00 00 00 00 00 a2 6b 76 a1 62 05 00 00 00",
     "HELLO: field 'proto_version': 4294967296 is more than 4294967295"},
    {"94 06 00 00 c4 00", "PAGES: field 'npages': 0, expected 1 to 4096"},
    {"94 06 00 cd 10 01 c4 00", "PAGES: field 'npages': 4097, expected 1 to 4096"},
    {"94 06 cd 10 01 01 c4 00", "PAGES: field 'addr': 0x1001 is not page aligned"},
    {"94 06 cf ff ff ff ff ff ff f0 00 02 c4 00",
     "PAGES: field 'addr': 0xfffffffffffff000 + 2 pages wraps around"},
    {"94 06 00 01 a1 78", "PAGES: field 'data': expected binary, got a string"},
    {"94 06 00 01 c6 7f ff ff ff",
     "PAGES: field 'data': a binary of 2147483647 bytes, more than 16777216"},
    {"92 03 dd ff ff ff ff", "MAPPINGS: field 'vmas': more than 1048576 elements"},
    {"92 03 91 99 cd 20 00 cd 10 00 03 00 c2 00 c0 00 c0",
     "MAPPINGS: field 'vmas[0].end': [0x2000, 0x1000) is not a page-aligned range"},
    {"92 03 91 98 00 00 00 00 c2 00 c0 00", "MAPPINGS: field 'vmas[0]': 8 fields, expected 9"},
    {"92 03 91 99 cd 10 00 cd 20 00 c3 00 c2 00 c0 00 c0",
     "MAPPINGS: field 'vmas[0].prot': expected an unsigned integer, got a boolean"},
    {"92 03 91 99 cd 10 00 cd 20 00 03 09 c2 00 c0 00 c0",
     "MAPPINGS: field 'vmas[0].kind': 9 is not a mapping kind"},
    {"92 03 91 99 cd 10 00 cd 20 00 03 00 c2 00 c0 00 c4 01 00",
     "MAPPINGS: field 'vmas[0].sha256': 1 bytes, expected 32"},
    {"92 03 91 91 00", "MAPPINGS: field 'vmas[0]': 1 fields, expected 9"},
    {"92 03 a1 78", "MAPPINGS: field 'vmas': expected an array, got a string"},
    {"94 02 05 05 00", "EPOCH_BEGIN: field 'base_epoch': 5 is not before epoch 5"},
    {"94 02 00 00 00", "EPOCH_BEGIN: field 'epoch': epochs are numbered from 1"},
    {"93 02 05 04", "EPOCH_BEGIN: 2 fields, expected 3"},
    {"93 0a cd 01 00 a0", "ERROR: field 'code': 256 is more than 255"},
    {"92 0a a1 78", "ERROR: 1 fields, expected 2"},
    {"92 0b 00", "HANDOVER: field 'epoch': epochs are numbered from 1"},
    {"92 0c 00", "STAND_DOWN: 1 fields, expected 0"},
    {"96 09 00 00 00 00 a1 78", "HEARTBEAT: field 'echo_age_us': expected an unsigned integer, got a string"},
    {"99 01 02 00 a1 6b a0 00 00 04 00", "HELLO: field 'flags': 0x4 has unknown bits"},
    {"99 01 02 00 a1 6b a0 00 00 01 00",
     "HELLO: field 'incarnation': 0 with the fresh flag: a new run needs an id"},
    {"81 01 02", "message: msgpack type byte 0x81 is never sent"},
    {"05", "message: a message must be an array [type, fields...], got byte 0x05"},
    {"91 c1", "message: msgpack type byte 0xc1 is never sent"},
    {"92 08 ff", "ACK: field 'epoch': msgpack type byte 0xff is never sent"},
    {"94 09 cb 3f f8 00 00 00 00 00 00 00 00",
     "HEARTBEAT: field 'seq': msgpack type byte 0xcb is never sent"},
    {"92 04 91 91 91 01", "THREADS: field 'threads': arrays nested more than 3 deep"},
    {"92 04 91 a1 78", "THREADS: field 'threads[0]': expected binary, got a string"},
    {"92 04 91 c4 00", "THREADS: field 'threads': record 0 is 0 bytes, expected 1 to 65536"},
    {"93 0a 00 db 00 10 00 00", "ERROR: field 'reason': a string of 1048576 bytes, more than 4096"},
    {"94 07 01 c4 00 00", "COMMIT: field 'checksum': 0 bytes, expected 16"},
    /* a good HELLO, then a bad frame: the HELLO still comes out first */
    {"99 01 02 00 a2 6b 76 a1 62 05 00 00 00 91 63", "message: unknown message type 99"},
};

static void test_bad_hex(void)
{
	uint8_t buf[256];

	for (size_t i = 0; i < ARRAY_SIZE(hex_cases); i++)
		expect_bad(hex_cases[i].hex, buf, unhex(hex_cases[i].hex, buf),
			   hex_cases[i].reason);
}

/* Frames too long to write out in hex. */
static void test_bad_built(void)
{
	_cleanup_free_ uint8_t *big = calloc(1, 70000);
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

	msgpack_pack_array(&pk, 9);
	msgpack_pack_uint8(&pk, WIRE_HELLO);
	msgpack_pack_uint8(&pk, 1);
	msgpack_pack_uint8(&pk, 0);
	msgpack_pack_str_with_body(
	    &pk, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", 65);
	msgpack_pack_str_with_body(&pk, "b", 1);
	msgpack_pack_uint8(&pk, 1);
	msgpack_pack_uint8(&pk, 0);
	msgpack_pack_uint8(&pk, 0);
	msgpack_pack_uint8(&pk, 0);
	expect_bad("long service", sb.data, sb.size,
		   "HELLO: field 'service': 65 bytes, more than 64");

	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint8(&pk, WIRE_PAGES);
	msgpack_pack_uint32(&pk, 0x10000);
	msgpack_pack_uint8(&pk, 1);
	msgpack_pack_bin_with_body(&pk, big, 4095);
	expect_bad("short page", sb.data, sb.size,
		   "PAGES: field 'data': 4095 bytes, expected npages * 4096 = 4096");

	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint8(&pk, WIRE_COMMIT);
	msgpack_pack_uint8(&pk, 1);
	msgpack_pack_bin_with_body(&pk, big, 15);
	msgpack_pack_uint8(&pk, 0);
	expect_bad("short sum", sb.data, sb.size, "COMMIT: field 'checksum': 15 bytes, expected 16");

	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint8(&pk, WIRE_COMMIT);
	msgpack_pack_uint8(&pk, 1);
	msgpack_pack_bin_with_body(&pk, big, 33);
	msgpack_pack_uint8(&pk, 0);
	expect_bad("long sum", sb.data, sb.size, "COMMIT: field 'checksum': 33 bytes, more than 32");

	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, WIRE_THREADS);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_bin_with_body(&pk, big, 65537);
	expect_bad("big thread", sb.data, sb.size,
		   "THREADS: field 'threads[0]': 65537 bytes, more than 65536");

	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 3);
	msgpack_pack_uint8(&pk, WIRE_ERROR);
	msgpack_pack_uint8(&pk, WIRE_ERR_PROTOCOL);
	msgpack_pack_str_with_body(&pk, big, 1025);
	expect_bad("long reason", sb.data, sb.size,
		   "ERROR: field 'reason': 1025 bytes, more than 1024");

	/* Every part within bounds, the whole too long. */
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, WIRE_THREADS);
	msgpack_pack_array(&pk, 300);
	for (int i = 0; i < 300; i++)
		msgpack_pack_bin_with_body(&pk, big, 65536);
	expect_bad("long message", sb.data, sb.size,
		   "THREADS: field 'threads': message longer than 16842752 bytes");
	msgpack_sbuffer_destroy(&sb);
}

/* ---------- packing refuses what decoding would ---------- */

static void test_pack_checks(void)
{
	struct wire_msg m;
	msgpack_sbuffer sb, sb2;
	struct wire_vma bad_vma = vmas[1];

	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_init(&sb2);
	CHECK_INT(wire_pack(&sb, &samples[S_HELLO]), 0);
	size_t before = sb.size;

	m = samples[S_PAGES1];
	m.pages.npages = 0;
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	m.pages.npages = WIRE_MAX_PAGES + 1;
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	m = samples[S_PAGES1];
	m.pages.addr = 0x123;
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	m.pages.addr = 0x1000;
	m.pages.data = NULL;
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	m = samples[S_HELLO];
	m.hello.service = "";
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	bad_vma.end = bad_vma.start;
	m = (struct wire_msg){.type = WIRE_MAPPINGS, .mappings = {.vmas = &bad_vma, .n = 1}};
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	m = (struct wire_msg){.type = WIRE_EPOCH_BEGIN,
			      .epoch_begin = {.epoch = 2, .base_epoch = 2}};
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	m = (struct wire_msg){.type = WIRE_ERROR, .error = {.code = 256, .reason = "x"}};
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	m = (struct wire_msg){.type = WIRE_HANDOVER, .handover = {.epoch = 0}};
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	m = samples[S_HELLO];
	m.hello.incarnation = 0; /* fresh needs an id */
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	m.type = 42;
	CHECK_INT(wire_pack(&sb, &m), -EINVAL);
	CHECK_INT(sb.size, before); /* nothing half-written */

	/* PAGES by head + data is byte for byte PAGES in one go. */
	msgpack_sbuffer_clear(&sb);
	CHECK_INT(wire_pack(&sb, &samples[S_PAGES2]), 0);
	CHECK_INT(wire_pack_pages_head(&sb2, samples[S_PAGES2].pages.addr, 2), 0);
	msgpack_sbuffer_write(&sb2, (const char *)page_data, sizeof(page_data));
	CHECK(sb.size == sb2.size && memcmp(sb.data, sb2.data, sb.size) == 0);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&sb2);
}

/* ---------- the epoch checksum ---------- */

/* The backup's side: decode, hash, verify the COMMIT. */
enum outcome { O_BADMSG, O_NEED_MORE, O_PROTO, O_MISMATCH, O_COMMITTED, O_NOMEM };

static enum outcome receive_epoch(const void *p, size_t n, char *err, size_t errlen)
{
	_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();
	struct wire_epoch_hash h;
	enum outcome o = O_NEED_MORE;
	struct wire_msg m;
	int r;

	if (wire_epoch_hash_init(&h) < 0)
		return O_NOMEM;
	wire_decoder_feed(d, p, n);
	while (o == O_NEED_MORE && (r = wire_decoder_next(d, &m, err, errlen)) == 1) {
		if (m.type == WIRE_COMMIT)
			o = wire_epoch_hash_verify(&h, &m.commit, err, errlen) == 0 ? O_COMMITTED
										    : O_MISMATCH;
		else if (wire_epoch_hash_add(&h, &m) == -EPROTO)
			o = O_PROTO;
	}
	if (o == O_NEED_MORE && r < 0)
		o = r == -ENOMEM ? O_NOMEM : O_BADMSG;
	wire_epoch_hash_done(&h);
	return o;
}

static void test_epoch_hash(void)
{
	struct wire_epoch_hash h;
	msgpack_sbuffer sb;
	struct wire_msg m;
	char err[512] = "";

	msgpack_sbuffer_init(&sb);
	pack_range(&sb, S_BEGIN, S_COMMIT + 1, NULL);
	CHECK_INT(receive_epoch(sb.data, sb.size, err, sizeof(err)), O_COMMITTED);

	/* A heartbeat between epoch messages belongs to no epoch. */
	msgpack_sbuffer_clear(&sb);
	pack_range(&sb, S_BEGIN, S_THREADS, NULL);
	pack_range(&sb, S_HEARTBEAT, S_HEARTBEAT + 1, NULL);
	pack_range(&sb, S_THREADS, S_COMMIT + 1, NULL);
	CHECK_INT(receive_epoch(sb.data, sb.size, err, sizeof(err)), O_COMMITTED);

	/* One page byte changed in transit, beyond what the decoder can see. */
	page_data[100] ^= 1;
	msgpack_sbuffer_clear(&sb);
	pack_range(&sb, S_BEGIN, S_COMMIT + 1, NULL);
	page_data[100] ^= 1;
	CHECK_INT(receive_epoch(sb.data, sb.size, err, sizeof(err)), O_MISMATCH);
	CHECK_STR(err, "COMMIT: field 'checksum': does not match the epoch's messages");

	/* A PAGES message lost: the count says so before the hash does. */
	msgpack_sbuffer_clear(&sb);
	pack_range(&sb, S_BEGIN, S_PAGES1, NULL);
	pack_range(&sb, S_COMMIT, S_COMMIT + 1, NULL);
	CHECK_INT(receive_epoch(sb.data, sb.size, err, sizeof(err)), O_MISMATCH);
	CHECK_STR(err, "COMMIT: field 'npages': 3, but the epoch carried 2");

	/* A commit for another epoch. */
	m = samples[S_COMMIT];
	m.commit.epoch = 5;
	msgpack_sbuffer_clear(&sb);
	pack_range(&sb, S_BEGIN, S_COMMIT, NULL);
	CHECK_INT(wire_pack(&sb, &m), 0);
	CHECK_INT(receive_epoch(sb.data, sb.size, err, sizeof(err)), O_MISMATCH);
	CHECK_STR(err, "COMMIT: field 'epoch': 5, but epoch 4 is open");

	/* Epoch messages outside an epoch. */
	CHECK_INT(wire_epoch_hash_init(&h), 0);
	CHECK_INT(wire_epoch_hash_add(&h, &samples[S_PAGES1]), -EPROTO);
	CHECK_INT(wire_epoch_hash_add(&h, &samples[S_HEARTBEAT]), 0);
	CHECK_INT(wire_epoch_hash_verify(&h, &samples[S_COMMIT].commit, err, sizeof(err)), -EPROTO);
	CHECK_STR(err, "COMMIT: epoch 4 was never begun");
	wire_epoch_hash_done(&h);
	msgpack_sbuffer_destroy(&sb);
}

/* One DELTA built from fields, decoded: 1 with *out, or the decoder's error. */
static int decode_delta(const struct wire_delta *in, struct wire_msg *out, char *err, size_t n,
			struct wire_decoder *d)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int r;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 5);
	msgpack_pack_uint8(&pk, WIRE_DELTA);
	msgpack_pack_uint32(&pk, in->codec);
	msgpack_pack_uint32(&pk, in->npages);
	msgpack_pack_uint32(&pk, in->raw_len);
	msgpack_pack_bin(&pk, in->data.len);
	msgpack_pack_bin_body(&pk, in->data.data, in->data.len);
	wire_decoder_feed(d, sb.data, sb.size);
	r = wire_decoder_next(d, out, err, n);
	msgpack_sbuffer_destroy(&sb);
	return r;
}

/* The decoder decompresses and checks every record of a DELTA before anyone sees it. */
static void test_delta(void)
{
	const struct wire_delta good = samples[S_DELTA].delta;
	static uint8_t bad_raw[2 * DELTA_REC_MAX], bad_packed[2 * DELTA_REC_MAX + 512];
	struct wire_delta in;
	struct wire_msg m;
	char err[512];

#define DELTA_CASE(mutation, want)                                                                 \
	do {                                                                                       \
		_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();                \
		in = good;                                                                         \
		mutation;                                                                          \
		err[0] = 0;                                                                        \
		CHECK_INT(decode_delta(&in, &m, err, sizeof(err), d), -EBADMSG);                   \
		CHECK_STR(err, want);                                                              \
	} while (0)

	{
		_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();
		in = good;
		CHECK_INT(decode_delta(&in, &m, err, sizeof(err), d), 1);
		CHECK(msg_eq(&m, &samples[S_DELTA]));
	}
	DELTA_CASE(in.codec = 3, "DELTA: field 'codec': 3 is not 0 (none), 1 (lz4) or 2 (zstd)");
	DELTA_CASE(in.npages = 0, "DELTA: field 'npages': 0, expected 1 to 256");
	DELTA_CASE(in.npages = 3, "DELTA: field 'npages': 3, but the payload holds 2 page records");
	DELTA_CASE(in.raw_len = good.raw_len - 1,
		   "DELTA: field 'data': does not decompress (zstd) to raw_len 4124 bytes");
	DELTA_CASE(in.raw_len = 10, "DELTA: field 'raw_len': 10 bytes cannot hold 2 page records");
	DELTA_CASE(in.codec = DELTA_CODEC_LZ4,
		   "DELTA: field 'data': does not decompress (lz4) to raw_len 4125 bytes");
	/* Records that decompress fine but do not hold together. */
	enum delta_kind kinds[2];
	size_t raw = make_payload(bad_raw, kinds);
	bad_raw[0] ^= 0x01; /* the first address, no longer page aligned */
	size_t packed = delta_compress(DELTA_CODEC_NONE, bad_raw, raw, bad_packed, sizeof(bad_packed));
	DELTA_CASE((in.codec = DELTA_CODEC_NONE, in.data = (struct wire_blob){bad_packed, packed}),
		   "DELTA: field 'data': page record 0 (at byte 0) is malformed");
	bad_raw[0] ^= 0x01;
	bad_raw[8] = DELTA_KINDS; /* a kind no version knows */
	packed = delta_compress(DELTA_CODEC_NONE, bad_raw, raw, bad_packed, sizeof(bad_packed));
	DELTA_CASE((in.codec = DELTA_CODEC_NONE, in.data = (struct wire_blob){bad_packed, packed}),
		   "DELTA: field 'data': page record 0 (at byte 0) is malformed");
	bad_raw[8] = kinds[0];
	bad_raw[DELTA_REC_HEAD] = 0xff; /* a run past the page's end */
	bad_raw[DELTA_REC_HEAD + 1] = 0xff;
	packed = delta_compress(DELTA_CODEC_NONE, bad_raw, raw, bad_packed, sizeof(bad_packed));
	DELTA_CASE((in.codec = DELTA_CODEC_NONE, in.data = (struct wire_blob){bad_packed, packed}),
		   "DELTA: field 'data': page record 0 (at byte 0) is malformed");
	/* The epoch hash takes a DELTA's pages one by one, never the message. */
	struct wire_epoch_hash h;
	CHECK_INT(wire_epoch_hash_init(&h), 0);
	CHECK_INT(wire_epoch_hash_add(&h, &samples[S_BEGIN]), 0);
	CHECK_INT(wire_epoch_hash_add(&h, &samples[S_DELTA]), -EINVAL);
	CHECK_INT(wire_epoch_hash_add_page(&h, 0xc000001000, page_data), 0);
	wire_epoch_hash_done(&h);
#undef DELTA_CASE
}

/* Every single-byte corruption of an epoch is refused, torn or unverified: never applied. */
static void test_flips(void)
{
	static const uint8_t masks[] = {0x01, 0x10, 0x80, 0xff};
	unsigned counts[O_NOMEM + 1] = {0};
	msgpack_sbuffer sb;
	char err[512];

	msgpack_sbuffer_init(&sb);
	pack_range(&sb, S_BEGIN, S_COMMIT + 1, NULL);
	for (size_t i = 0; i < sb.size; i++)
		for (size_t k = 0; k < ARRAY_SIZE(masks); k++) {
			sb.data[i] ^= masks[k];
			enum outcome o = receive_epoch(sb.data, sb.size, err, sizeof(err));
			sb.data[i] ^= masks[k];
			counts[o]++;
			if (o == O_COMMITTED || o == O_NOMEM) {
				fprintf(stderr, "byte %zu ^ %#x: outcome %d\n", i, masks[k], o);
				unit_failures++;
			}
		}
	printf("flips over %zu bytes: %u refused by the decoder, %u waiting for more, "
	       "%u out of order, %u failed the commit check, %u committed\n",
	       sb.size, counts[O_BADMSG], counts[O_NEED_MORE], counts[O_PROTO], counts[O_MISMATCH],
	       counts[O_COMMITTED]);
	msgpack_sbuffer_destroy(&sb);
}

/* ---------- fuzzing ---------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: fixed seed, same run every time */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t rnd_below(size_t n) { return n ? rnd() % n : 0; }

static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0,
				      0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xcc, 0xcd, 0xce, 0xcf,
				      0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};

/* One random change to buf (of *n bytes, room for cap). */
static void mutate(uint8_t *buf, size_t *n, size_t cap)
{
	size_t at = rnd_below(*n), len;

	switch (rnd_below(8)) {
	case 0: /* flip a bit */
		if (*n)
			buf[at] ^= 1u << rnd_below(8);
		break;
	case 1: /* any byte */
		if (*n)
			buf[at] = rnd();
		break;
	case 2: /* a byte msgpack gives meaning to */
		if (*n)
			buf[at] = interesting[rnd_below(ARRAY_SIZE(interesting))];
		break;
	case 3: /* a huge length */
		for (size_t i = at; i < *n && i < at + 4; i++)
			buf[i] = 0xff;
		break;
	case 4: /* insert random bytes */
		len = 1 + rnd_below(16);
		if (*n + len <= cap) {
			memmove(buf + at + len, buf + at, *n - at);
			for (size_t i = 0; i < len; i++)
				buf[at + i] = rnd();
			*n += len;
		}
		break;
	case 5: /* delete a range */
		len = min_sz(1 + rnd_below(64), *n - at);
		memmove(buf + at, buf + at + len, *n - at - len);
		*n -= len;
		break;
	case 6: /* repeat a range */
		len = min_sz(1 + rnd_below(256), *n - at);
		if (*n + len <= cap) {
			memmove(buf + at + len, buf + at, *n - at);
			*n += len;
		}
		break;
	case 7: /* cut short */
		*n = at;
		break;
	}
}

/* Anything the decoder accepts must survive being packed and decoded again, unchanged. */
static void check_reencode(const struct wire_msg *m)
{
	_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();
	msgpack_sbuffer sb;
	struct wire_msg again;
	char err[512];

	msgpack_sbuffer_init(&sb);
	CHECK_INT(wire_pack(&sb, m), 0);
	wire_decoder_feed(d, sb.data, sb.size);
	CHECK_INT(wire_decoder_next(d, &again, err, sizeof(err)), 1);
	CHECK(msg_eq(m, &again));
	msgpack_sbuffer_destroy(&sb);
}

static void fuzz_one(const uint8_t *p, size_t n, unsigned *msgs, unsigned *errors)
{
	_cleanup_wire_decoder_ struct wire_decoder *d = wire_decoder_new();
	struct wire_epoch_hash h;
	struct wire_msg m;
	char err[512];
	int r = 0;

	wire_epoch_hash_init(&h);
	for (size_t off = 0; off < n && r >= 0;) {
		size_t chunk = min_sz(1 + rnd_below(4096), n - off);
		wire_decoder_feed(d, p + off, chunk);
		off += chunk;
		while ((r = wire_decoder_next(d, &m, err, sizeof(err))) == 1) {
			(*msgs)++;
			check_reencode(&m);
			if (m.type == WIRE_COMMIT)
				wire_epoch_hash_verify(&h, &m.commit, err, sizeof(err));
			else
				wire_epoch_hash_add(&h, &m);
		}
	}
	if (r < 0) {
		(*errors)++;
		CHECK(r == -EBADMSG);
		CHECK(err[0] && !strchr(err, '\n'));
	}
	wire_epoch_hash_done(&h);
}

static unsigned long env_or(const char *name, unsigned long dflt)
{
	const char *v = getenv(name);
	return v && *v ? strtoul(v, NULL, 0) : dflt;
}

static void test_fuzz(void)
{
	unsigned long seed = env_or("CHECKSYNC_FUZZ_SEED", FUZZ_SEED);
	unsigned long iterations = env_or("CHECKSYNC_FUZZ_ITERATIONS", FUZZ_ITERATIONS);
	unsigned msgs = 0, errors = 0;
	msgpack_sbuffer sb;
	size_t cap;
	uint8_t *buf;

	msgpack_sbuffer_init(&sb);
	pack_range(&sb, 0, S_COUNT, NULL);
	cap = sb.size + 4096;
	buf = malloc(cap);
	rng_state = seed ? seed : 1; /* xorshift never leaves 0 */
	for (unsigned long it = 0; it < iterations; it++) {
		size_t n = sb.size;
		memcpy(buf, sb.data, n);
		if (it % 16 == 0) { /* now and then, pure noise */
			n = rnd_below(2048);
			for (size_t i = 0; i < n; i++)
				buf[i] = rnd();
		}
		for (size_t k = 1 + rnd_below(4); k > 0; k--)
			mutate(buf, &n, cap);
		fuzz_one(buf, n, &msgs, &errors);
	}
	printf("fuzz: %lu inputs (seed %#lx), %u messages decoded, %u inputs refused\n", iterations,
	       seed, msgs, errors);
	free(buf);
	msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
	make_samples();
	test_roundtrip_whole();
	test_roundtrip_bytewise();
	test_roundtrip_max_pages();
	test_truncations();
	test_bad_hex();
	test_bad_built();
	test_pack_checks();
	test_epoch_hash();
	test_delta();
	test_flips();
	test_fuzz();
	UNIT_EXIT();
}
