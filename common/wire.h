/*
 * wire.h - the replication protocol between checksync-primaryd and
 * checksync-backupd: message types, their encoding, and a streaming decoder.
 *
 * Encoding. Each message is one msgpack array, [type, field, field, ...],
 * with exactly the fields listed below in that order; messages follow each
 * other on the TLS stream with no other framing. Arrays rather than maps: the
 * fields are few and fixed, and a positional record is smaller and has no
 * "which keys are missing" case to validate. Integers are unsigned; strings
 * are msgpack str; blobs are msgpack bin. Maps, ext, floats and negative
 * integers never appear and are refused.
 *
 *   1 HELLO       [1, proto_version, role, service, boot_id, pid, incarnation, flags]
 *   2 EPOCH_BEGIN [2, epoch, base_epoch, incarnation]  base_epoch < epoch; 0 = full image
 *   3 MAPPINGS    [3, [[start, end, prot, kind, shared, pgoff, path|nil, file_size,
 *                       sha256(bin 32)|nil], ...]]
 *   4 THREADS     [4, [bin, ...]]                  one opaque record per thread
 *   5 FDS         [5, bin]                         the fd table, opaque
 *   6 PAGES       [6, addr, npages, bin]           bin is npages * 4096 bytes
 *   7 COMMIT      [7, epoch, checksum(bin 16), npages]  checksum: XXH3-128 (wire_epoch_hash)
 *   8 ACK         [8, epoch]
 *   9 HEARTBEAT   [9, seq, time_us, epoch, echo_us, echo_age_us]
 *                                                  sender's CLOCK_MONOTONIC; its last
 *                                                  committed (primary) or applied (backup) epoch;
 *                                                  the peer's newest time_us and how long ago
 *                                                  (sender's clock) it arrived, 0 0 if none
 *  10 ERROR       [10, code, reason]               code: enum wire_error_code
 *  11 HANDOVER    [11, epoch]                      primary: frozen, epoch is final, restore now
 *  12 STAND_DOWN  [12]                             primary: stopped everywhere, do not take over
 *
 * Page deltas (common/delta.h), numbered apart from the types above:
 *  16 DELTA       [16, codec, npages, raw_len, bin]  bin is the payload of npages
 *                                                  page records (delta.h), compressed
 *                                                  with codec (0 none, 1 lz4, 2 zstd)
 *                                                  to raw_len bytes when decompressed
 *
 * One epoch is EPOCH_BEGIN, then any number of MAPPINGS, THREADS, FDS,
 * PAGES and DELTA, then COMMIT. A DELTA record other than a whole page
 * applies to the page as the base epoch left it; a page appears at most
 * once per epoch. HEARTBEAT may come between any two messages and belongs
 * to no epoch. COMMIT carries a checksum over the epoch's messages as decoded
 * (see wire_epoch_hash_*), so the backup checks what it is about to apply,
 * independently of how it was encoded; it applies nothing before that check.
 *
 * Versions. Protocol version 3 made that checksum XXH3-128 (version 2 had
 * SHA-256, 32 bytes): peers of different versions refuse each other at
 * HELLO, each naming the other and both versions. Only a journal file
 * written by version 2 (backupd/journal.h) still holds a SHA-256 COMMIT,
 * which the decoder takes (32 bytes) for wire_epoch_hash_init_sha256().
 * Protocol version 4 added the DELTA record kind DELTA_ON_ZERO (delta.h);
 * journal files of version 3 hold only the older kinds, which still decode,
 * so they load unchanged (their magic stays CSEPOCH2).
 *
 * Incarnations. Each run of a service is an incarnation, named by a
 * 64-bit id (never 0). The primary's HELLO names the incarnation it guards,
 * with WIRE_HELLO_FRESH when it has not started it yet (it asks first);
 * the backup's HELLO names the incarnation of the image it holds (0: none).
 * Every EPOCH_BEGIN carries the incarnation again, so the image on disk
 * (whose files are wire messages, journal.h) knows whose state it is.
 *
 * Silence. A HEARTBEAT echoes the newest time_us it had from the peer and
 * how long it had held it, so the peer learns, in its own clock, a time
 * before which this heartbeat cannot have been sent (echo_us +
 * echo_age_us): the two hosts' clocks are never compared, only durations.
 *
 * Authentication order. In TLS 1.3 a client finishes its handshake before
 * the server has checked the client's certificate, so the primary (client)
 * must send nothing but HELLO until it has received the backup's HELLO:
 * that is its proof that the backup accepted it.
 *
 * Robustness. The decoder is fed bytes as they arrive and is safe against any
 * input: every length and count is bounded (WIRE_MAX_*) before msgpack
 * allocates anything for it, and every field's type and range is checked.
 * The first bad byte makes the stream bad for good: the caller closes the
 * connection and logs the reason, which names the message and the field.
 */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 4: DELTA records of kind DELTA_ON_ZERO; 3: the epoch checksum is XXH3-128 (2: SHA-256) */
#define WIRE_PROTO_VERSION 4

#define WIRE_PAGE_SIZE 4096u
#define WIRE_MAX_PAGES 4096u	    /* pages per PAGES message: 16 MiB */
#define WIRE_MAX_VMAS 65536u	    /* per MAPPINGS; vm.max_map_count is 65530 */
#define WIRE_MAX_THREADS 8192u	    /* per THREADS message */
#define WIRE_MAX_THREAD_BLOB 65536u /* registers + XSAVE area + the rest */
#define WIRE_MAX_FDS_BLOB (16u << 20)
#define WIRE_MAX_NAME 64u /* service name, boot id */
#define WIRE_MAX_PATH 4096u
#define WIRE_MAX_REASON 1024u
#define WIRE_MAX_ERROR_CODE 255u
#define WIRE_HELLO_FRESH 1u /* HELLO flags: the incarnation has not started yet */
/* The backup's HELLO: this host has no DWARF for the service's executable (a takeover
 * under new thread ids could not patch the runtime), said while the primary still runs. */
#define WIRE_HELLO_NO_DWARF 2u
#define WIRE_HELLO_FLAGS (WIRE_HELLO_FRESH | WIRE_HELLO_NO_DWARF)
#define WIRE_MAX_BIN (WIRE_MAX_PAGES * WIRE_PAGE_SIZE)
#define WIRE_MAX_MSG (WIRE_MAX_BIN + 65536u) /* a full PAGES message and change */
#define WIRE_MAX_DELTA_PAGES 256u	      /* page records per DELTA message */
#define WIRE_MAX_DELTA_RAW (WIRE_MAX_DELTA_PAGES * (4096u + 11u)) /* decompressed payload */

enum wire_type {
	WIRE_HELLO = 1,
	WIRE_EPOCH_BEGIN,
	WIRE_MAPPINGS,
	WIRE_THREADS,
	WIRE_FDS,
	WIRE_PAGES,
	WIRE_COMMIT,
	WIRE_ACK,
	WIRE_HEARTBEAT,
	WIRE_ERROR,
	WIRE_HANDOVER,
	WIRE_STAND_DOWN,
	/* cost (issue 13): page deltas; a block of their own so other types append above */
	WIRE_DELTA = 16,
};
#define WIRE_TYPE_MAX WIRE_DELTA

/*
 * What an ERROR means, so the peer acts on the code and logs the reason.
 * 0 is "other": close and retry. Codes a peer does not know are "other".
 */
enum wire_error_code {
	WIRE_ERR_OTHER = 0,
	WIRE_ERR_PROTOCOL,	      /* a message we cannot take: bad, unexpected, wrong version */
	WIRE_ERR_TAKEN_OVER,	      /* the backup serves (or is taking over): you are deposed */
	WIRE_ERR_WRONG_SERVICE,	      /* no such service here */
	WIRE_ERR_IDENTITY,	      /* your certificate is not this service's primary's */
	WIRE_ERR_INCARNATION_REFUSED, /* the image is another incarnation's; an operator decides */
	WIRE_ERR_STORAGE,	      /* the backup cannot store epochs */
	WIRE_ERR_REPLACED,	      /* a newer connection from the primary replaced this one */
	WIRE_ERR_HANDOVER_FAILED,     /* HANDOVER refused or its restore failed: carry on */
	WIRE_ERR_STOOD_DOWN,	      /* STAND_DOWN done: the backup will not take over */
};
#define WIRE_ERR_LAST WIRE_ERR_STOOD_DOWN

const char *wire_error_code_name(unsigned code);

const char *wire_type_name(unsigned type);

/*
 * Decoded messages point into the decoder's memory: strings are
 * NUL-terminated, blobs are not copied. They stay valid until the next
 * wire_decoder_next() or wire_decoder_free().
 */
struct wire_hello {
	uint32_t proto_version;
	uint32_t role;	     /* enum role (config.h) */
	const char *service; /* 1..WIRE_MAX_NAME bytes */
	const char *boot_id; /* sender's /proc/sys/kernel/random/boot_id, <= WIRE_MAX_NAME */
	uint32_t pid;	     /* sender's pid: with boot_id, names one daemon run */
	uint64_t incarnation; /* the service's run (primary) or the image's (backup); 0: none */
	uint32_t flags;	      /* WIRE_HELLO_* */
	uint64_t epoch;	      /* backup: the epoch its image holds (0: none); primary: 0 */
};

struct wire_epoch_begin {
	uint64_t epoch;	     /* >= 1 */
	uint64_t base_epoch; /* the image this epoch applies to; 0 = none (full image) */
	uint64_t incarnation; /* whose state this is (HELLO); 0: not known */
};

struct wire_vma {
	uint64_t start, end; /* page aligned, start < end */
	uint32_t prot;	     /* PROT_READ | PROT_WRITE | PROT_EXEC */
	uint32_t kind;	     /* enum vma_kind (image/image.h) */
	bool shared;
	uint64_t pgoff;	  /* byte offset into the file */
	const char *path; /* backing file, or NULL */
	uint64_t file_size;
	const uint8_t *sha256; /* 32 bytes of the file's hash, or NULL */
};

struct wire_mappings {
	const struct wire_vma *vmas;
	uint32_t n;
};

struct wire_blob {
	const uint8_t *data;
	uint32_t len;
};

struct wire_threads {
	const struct wire_blob *threads; /* each 1..WIRE_MAX_THREAD_BLOB bytes */
	uint32_t n;
};

struct wire_fds {
	struct wire_blob table; /* <= WIRE_MAX_FDS_BLOB bytes */
};

struct wire_pages {
	uint64_t addr;	     /* page aligned */
	uint32_t npages;     /* 1..WIRE_MAX_PAGES */
	const uint8_t *data; /* npages * WIRE_PAGE_SIZE bytes */
};

struct wire_delta {
	uint32_t codec;	       /* enum delta_codec */
	uint32_t npages;       /* 1..WIRE_MAX_DELTA_PAGES records */
	uint32_t raw_len;      /* decompressed payload, <= WIRE_MAX_DELTA_RAW */
	struct wire_blob data; /* as sent (compressed) */
	const uint8_t *raw;    /* decoded: the payload, every record checked (delta.h) */
};

#define WIRE_SUM_XXH128 16u /* bytes of the epoch checksum (protocol version 3) */
#define WIRE_SUM_SHA256 32u /* ... in a journal file written by protocol version 2 */

struct wire_commit {
	uint64_t epoch;
	uint8_t sum[WIRE_SUM_SHA256]; /* wire_epoch_hash over the epoch's messages: sum_len bytes */
	uint32_t sum_len;	      /* WIRE_SUM_XXH128 (what we send) or WIRE_SUM_SHA256 */
	uint64_t npages;	      /* pages the epoch carried */
};

struct wire_ack {
	uint64_t epoch;
};

struct wire_heartbeat {
	uint64_t seq;
	uint64_t time_us;
	uint64_t epoch;
	uint64_t echo_us;     /* the peer's newest time_us, 0: none yet */
	uint64_t echo_age_us; /* how long before this heartbeat it arrived */
};

struct wire_error {
	uint32_t code;	    /* enum wire_error_code, <= WIRE_MAX_ERROR_CODE */
	const char *reason; /* <= WIRE_MAX_REASON bytes */
};

struct wire_handover {
	uint64_t epoch; /* the final epoch, already sent; >= 1 */
};

struct wire_msg {
	enum wire_type type;
	union {
		struct wire_hello hello;
		struct wire_epoch_begin epoch_begin;
		struct wire_mappings mappings;
		struct wire_threads threads;
		struct wire_fds fds;
		struct wire_pages pages;
		struct wire_delta delta;
		struct wire_commit commit;
		struct wire_ack ack;
		struct wire_heartbeat heartbeat;
		struct wire_error error;
		struct wire_handover handover;
	};
};

/*
 * Encoding: each appends one message to sb and returns 0, -EINVAL or -E2BIG
 * for a message the decoder would refuse (nothing is appended then), or
 * -ENOMEM.
 */
int wire_pack(msgpack_sbuffer *sb, const struct wire_msg *m);
int wire_pack_hello(msgpack_sbuffer *sb, const struct wire_hello *m);
int wire_pack_epoch_begin(msgpack_sbuffer *sb, const struct wire_epoch_begin *m);
int wire_pack_mappings(msgpack_sbuffer *sb, const struct wire_mappings *m);
int wire_pack_threads(msgpack_sbuffer *sb, const struct wire_threads *m);
int wire_pack_fds(msgpack_sbuffer *sb, const struct wire_fds *m);
int wire_pack_pages(msgpack_sbuffer *sb, const struct wire_pages *m);
int wire_pack_commit(msgpack_sbuffer *sb, const struct wire_commit *m);
int wire_pack_ack(msgpack_sbuffer *sb, const struct wire_ack *m);
int wire_pack_heartbeat(msgpack_sbuffer *sb, const struct wire_heartbeat *m);
int wire_pack_error(msgpack_sbuffer *sb, const struct wire_error *m);
int wire_pack_handover(msgpack_sbuffer *sb, const struct wire_handover *m);
int wire_pack_stand_down(msgpack_sbuffer *sb);
/* Packs codec, npages, raw_len and data as given (raw is not looked at). */
int wire_pack_delta(msgpack_sbuffer *sb, const struct wire_delta *m);

/*
 * A PAGES message without its page bytes: the caller sends exactly
 * npages * WIRE_PAGE_SIZE bytes of page data right after it (say with
 * evbuffer_add_reference), which saves copying 16 MiB through sb.
 */
int wire_pack_pages_head(msgpack_sbuffer *sb, uint64_t addr, uint32_t npages);

/* Decoding */
struct wire_decoder;

struct wire_decoder *wire_decoder_new(void);
void wire_decoder_free(struct wire_decoder *d);
static inline void wire_decoder_freep(struct wire_decoder **d)
{
	if (*d)
		wire_decoder_free(*d);
}
#define _cleanup_wire_decoder_ __attribute__((cleanup(wire_decoder_freep)))

/*
 * Hand the decoder bytes as they arrive. Returns 0, -ENOMEM, or -EBADMSG
 * once the stream is known to be bad (wire_decoder_next() says why). Call
 * wire_decoder_next() until it returns 0 after each feed: the decoder then
 * holds at most one partial message, of at most WIRE_MAX_MSG bytes.
 */
int wire_decoder_feed(struct wire_decoder *d, const void *p, size_t n);

/*
 * The next whole message: 1 and *out filled, 0 if more bytes are needed, or
 * -EBADMSG (-ENOMEM) with err naming the message type and field at fault.
 * Messages that arrived whole before a bad one are still returned first.
 */
int wire_decoder_next(struct wire_decoder *d, struct wire_msg *out, char *err, size_t errlen);

/* Bytes fed that are not yet a whole message: a peer in the middle of sending one. */
size_t wire_decoder_partial(const struct wire_decoder *d);

/*
 * The epoch checksum that COMMIT carries: XXH3-128 over every EPOCH_BEGIN,
 * MAPPINGS, THREADS, FDS and PAGES message of the epoch, each as a fixed
 * little-endian rendering of its decoded fields (lengths before bytes), so
 * both sides hash the same thing whatever the msgpack encoding. The sender
 * adds each message as it packs it and fills COMMIT with _final(); the
 * receiver adds each as it decodes it and compares with _verify().
 *
 * Why a non-cryptographic hash: it guards against our own bugs (an encoder,
 * a decoder or an apply that rebuilds a page wrong) and against a torn or
 * corrupt journal file, not against an attacker: the stream's integrity
 * and the peer's identity are TLS 1.3's job (an AEAD record layer, mutual
 * certificates), and whoever can write the backup's state_dir can write
 * anything there. 128 bits make an undetected bad epoch as unlikely as
 * SHA-256 would for that purpose, at a small fraction of its CPU: the
 * primary hashes every page it ships, ~30 MB per epoch (issue 13).
 */
struct wire_epoch_hash {
	void *ctx;	   /* XXH3_state_t, or EVP_MD_CTX when sum_len is WIRE_SUM_SHA256 */
	uint32_t sum_len;  /* WIRE_SUM_XXH128 or WIRE_SUM_SHA256 */
	uint64_t epoch;	   /* 0 until EPOCH_BEGIN */
	uint64_t npages;
};

int wire_epoch_hash_init(struct wire_epoch_hash *h);
/* The same with SHA-256: only to replay a journal file written by protocol version 2. */
int wire_epoch_hash_init_sha256(struct wire_epoch_hash *h);
void wire_epoch_hash_done(struct wire_epoch_hash *h);

/* Add one message; EPOCH_BEGIN starts afresh. -EPROTO for an epoch message before any EPOCH_BEGIN.
 */
int wire_epoch_hash_add(struct wire_epoch_hash *h, const struct wire_msg *m);

/*
 * One page of the epoch as the backup will hold it: both sides add every
 * page a DELTA message carries this way, in record order, the sender its
 * new contents and the receiver what it rebuilt from the delta, so COMMIT
 * verifies the decoded result, not the encoding. (wire_epoch_hash_add()
 * refuses DELTA with -EINVAL.) Hashed as a one-page PAGES message.
 */
int wire_epoch_hash_add_page(struct wire_epoch_hash *h, uint64_t addr, const uint8_t *page);

/* Sender: fill a COMMIT for the epoch added so far. */
int wire_epoch_hash_final(struct wire_epoch_hash *h, struct wire_commit *out);

/* Receiver: 0 if c commits the epoch added so far, else -EBADMSG and err says how it differs. */
int wire_epoch_hash_verify(struct wire_epoch_hash *h, const struct wire_commit *c, char *err,
			   size_t errlen);
