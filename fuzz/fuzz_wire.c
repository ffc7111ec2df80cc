/*
 * fuzz_wire.c - the wire decoder (common/wire.c) against any byte stream,
 * fed in pieces as a socket would deliver them.
 *
 * The first input byte chooses the piece size, so one input is tried with
 * messages split at many places; every message decoded is packed again,
 * which must succeed (what the decoder accepts the encoder can send).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "seeds.h"
#include "wire.h"

static void seed(const char *dir, const char *name, const struct wire_msg *m)
{
	msgpack_sbuffer sb;

	msgpack_sbuffer_init(&sb);
	if (wire_pack(&sb, m) == 0) {
		/* A piece-size byte first, as the target expects. */
		char *buf = malloc(sb.size + 1);
		if (buf) {
			buf[0] = 7;
			memcpy(buf + 1, sb.data, sb.size);
			seeds_write(dir, name, buf, sb.size + 1);
			free(buf);
		}
	}
	msgpack_sbuffer_destroy(&sb);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = seeds_dir_if_empty(*argc, *argv);
	static uint8_t page[4096];
	struct wire_vma vma = {.start = 0x400000, .end = 0x401000, .prot = 5};

	if (!dir)
		return 0;
	seed(dir, "hello", &(struct wire_msg){.type = WIRE_HELLO,
					      .hello = {.proto_version = WIRE_PROTO_VERSION,
							.service = "kvserver",
							.boot_id = "b",
							.pid = 1}});
	seed(dir, "begin", &(struct wire_msg){.type = WIRE_EPOCH_BEGIN, .epoch_begin = {.epoch = 2, .base_epoch = 1}});
	seed(dir, "mappings", &(struct wire_msg){.type = WIRE_MAPPINGS, .mappings = {.vmas = &vma, .n = 1}});
	seed(dir, "pages", &(struct wire_msg){.type = WIRE_PAGES,
					      .pages = {.addr = 0x400000, .npages = 1, .data = page}});
	seed(dir, "ack", &(struct wire_msg){.type = WIRE_ACK, .ack = {.epoch = 3}});
	seed(dir, "heartbeat", &(struct wire_msg){.type = WIRE_HEARTBEAT, .heartbeat = {.seq = 1, .time_us = 2, .epoch = 3}});
	seed(dir, "error", &(struct wire_msg){.type = WIRE_ERROR, .error = {.reason = "taken over"}});
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_decoder *d;
	size_t piece, off = 1;
	char err[512];

	if (size < 1)
		return 0;
	piece = data[0] ? data[0] : 4096;
	d = wire_decoder_new();
	if (!d)
		return 0;
	while (off < size) {
		size_t n = size - off < piece ? size - off : piece;
		struct wire_msg m;
		int r;

		if (wire_decoder_feed(d, data + off, n) == -ENOMEM)
			break;
		off += n;
		while ((r = wire_decoder_next(d, &m, err, sizeof(err))) == 1) {
			msgpack_sbuffer sb;

			msgpack_sbuffer_init(&sb);
			if (wire_pack(&sb, &m) != 0)
				abort(); /* decoded, so it must pack */
			msgpack_sbuffer_destroy(&sb);
		}
		if (r < 0)
			break;
	}
	wire_decoder_free(d);
	return 0;
}
