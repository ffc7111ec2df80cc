/*
 * wire.c - encoding and decoding of the replication messages (see wire.h).
 *
 * Decoding happens in two passes over bytes from a peer we authenticated
 * but still do not trust:
 *
 *  1. A scanner walks the msgpack headers of every byte as it is fed, before
 *     msgpack-c sees it. msgpack-c allocates an array's element table from
 *     its header alone, so five bytes claiming 2^32 elements would cost a
 *     huge allocation before any element arrived. The scanner bounds each
 *     message's size, nesting, element count and every str/bin length, and
 *     refuses types we never send (maps, ext, floats, negative integers).
 *  2. msgpack_unpacker then builds the object, and a decoder per message type
 *     checks each field's type and length and copies it into struct
 *     wire_msg, after which the same semantic checks that guard packing
 *     (wire_check) run on the result.
 *
 * The epoch checksum is computed over decoded fields, not over bytes, for
 * the reasons given in wire.h.
 */
#include "wire.h"

#include <endian.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
/*
 * The same XXH3 at the widest vector unit the CPU has (AVX2, AVX-512),
 * picked at run time: Debian's libxxhash is built for baseline x86-64
 * (SSE2), where hashing every shipped page took about as much CPU as
 * encoding it (bench/ship_micro.c). The value is the same on every path.
 */
#define h_xxh3_update XXH3_128bits_update_dispatch
#else
#define h_xxh3_update XXH3_128bits_update
#endif

#include "delta.h"
#include "image/image.h"
#include "util.h"

#define MAX_FIELDS 8	       /* the most any message has, type excluded */
#define MAX_DEPTH 3	       /* message, list, record */
#define MAX_OBJECTS (1u << 20) /* elements per message: bounds msgpack's tables to 24 MiB */
#define MAX_STR WIRE_MAX_PATH

/* ---------- message table ---------- */

struct ctx;
typedef int (*decode_fn)(struct ctx *c, const msgpack_object *f, struct wire_msg *m);

struct msg_desc {
	const char *name;
	uint32_t nfields;
	const char *fields[MAX_FIELDS];
	decode_fn decode;
};

static int dec_hello(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_epoch_begin(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_mappings(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_threads(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_fds(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_pages(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_commit(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_ack(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_heartbeat(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_error(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_handover(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_stand_down(struct ctx *c, const msgpack_object *f, struct wire_msg *m);
static int dec_delta(struct ctx *c, const msgpack_object *f, struct wire_msg *m);

static const struct msg_desc descs[WIRE_TYPE_MAX + 1] = {
    [WIRE_HELLO] = {"HELLO",
		    8,
		    {"proto_version", "role", "service", "boot_id", "pid", "incarnation", "flags",
		     "epoch"},
		    dec_hello},
    [WIRE_EPOCH_BEGIN] = {"EPOCH_BEGIN", 3, {"epoch", "base_epoch", "incarnation"},
			  dec_epoch_begin},
    [WIRE_MAPPINGS] = {"MAPPINGS", 1, {"vmas"}, dec_mappings},
    [WIRE_THREADS] = {"THREADS", 1, {"threads"}, dec_threads},
    [WIRE_FDS] = {"FDS", 1, {"table"}, dec_fds},
    [WIRE_PAGES] = {"PAGES", 3, {"addr", "npages", "data"}, dec_pages},
    [WIRE_COMMIT] = {"COMMIT", 3, {"epoch", "checksum", "npages"}, dec_commit},
    [WIRE_ACK] = {"ACK", 1, {"epoch"}, dec_ack},
    [WIRE_HEARTBEAT] = {"HEARTBEAT", 5, {"seq", "time_us", "epoch", "echo_us", "echo_age_us"},
			dec_heartbeat},
    [WIRE_ERROR] = {"ERROR", 2, {"code", "reason"}, dec_error},
    [WIRE_HANDOVER] = {"HANDOVER", 1, {"epoch"}, dec_handover},
    [WIRE_STAND_DOWN] = {"STAND_DOWN", 0, {0}, dec_stand_down},
    [WIRE_DELTA] = {"DELTA", 4, {"codec", "npages", "raw_len", "data"}, dec_delta},
};

static const char *const error_code_names[WIRE_ERR_LAST + 1] = {
    [WIRE_ERR_OTHER] = "OTHER",
    [WIRE_ERR_PROTOCOL] = "PROTOCOL",
    [WIRE_ERR_TAKEN_OVER] = "TAKEN_OVER",
    [WIRE_ERR_WRONG_SERVICE] = "WRONG_SERVICE",
    [WIRE_ERR_IDENTITY] = "IDENTITY",
    [WIRE_ERR_INCARNATION_REFUSED] = "INCARNATION_REFUSED",
    [WIRE_ERR_STORAGE] = "STORAGE",
    [WIRE_ERR_REPLACED] = "REPLACED",
    [WIRE_ERR_HANDOVER_FAILED] = "HANDOVER_FAILED",
    [WIRE_ERR_STOOD_DOWN] = "STOOD_DOWN",
};

const char *wire_error_code_name(unsigned code)
{
	return code <= WIRE_ERR_LAST ? error_code_names[code] : "OTHER";
}

/* start, end, prot, kind, shared, pgoff, path, file_size, sha256 */
#define VMA_FIELDS 9u

static const struct msg_desc *desc_of(uint64_t type)
{
	return type >= 1 && type <= WIRE_TYPE_MAX && descs[type].name ? &descs[type] : NULL;
}

const char *wire_type_name(unsigned type)
{
	const struct msg_desc *d = desc_of(type);
	return d ? d->name : "unknown";
}

/* ---------- errors ---------- */

/* Where a check is: "PAGES: field 'data'" or "MAPPINGS: field 'vmas[3].end'". */
struct ctx {
	const char *type;
	char prefix[32]; /* "vmas[3]." while inside a record */
	char *err;
	size_t errlen;
	msgpack_zone *z; /* decoded strings and tables live here */
};

static int bad(struct ctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(struct ctx *c, const char *field, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (field)
		snprintf(c->err, c->errlen, "%s: field '%s%s': %s", c->type, c->prefix, field, why);
	else
		snprintf(c->err, c->errlen, "%s: %s", c->type, why);
	return -EBADMSG;
}

/* ---------- semantic checks, shared by packing and decoding ---------- */

static int check_name(struct ctx *c, const char *field, const char *s, size_t min, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	if (n < min || n > max)
		return bad(c, field, "%zu bytes, expected %zu to %zu", n, min, max);
	return 0;
}

static int check_hello(struct ctx *c, const struct wire_hello *m)
{
	int r;

	if (m->role > 1)
		return bad(c, "role", "%u is neither primary (0) nor backup (1)", m->role);
	if (m->flags & ~WIRE_HELLO_FLAGS)
		return bad(c, "flags", "0x%x has unknown bits", m->flags);
	if ((m->flags & WIRE_HELLO_FRESH) && !m->incarnation)
		return bad(c, "incarnation", "0 with the fresh flag: a new run needs an id");
	if ((r = check_name(c, "service", m->service, 1, WIRE_MAX_NAME)) < 0 ||
	    (r = check_name(c, "boot_id", m->boot_id, 0, WIRE_MAX_NAME)) < 0)
		return r;
	return 0;
}

static int check_epoch_begin(struct ctx *c, const struct wire_epoch_begin *m)
{
	if (m->epoch == 0)
		return bad(c, "epoch", "epochs are numbered from 1");
	if (m->base_epoch >= m->epoch)
		return bad(c, "base_epoch", "%" PRIu64 " is not before epoch %" PRIu64,
			   m->base_epoch, m->epoch);
	return 0;
}

static int check_vma(struct ctx *c, const struct wire_vma *v)
{
	if (v->start % WIRE_PAGE_SIZE || v->end % WIRE_PAGE_SIZE || v->start >= v->end)
		return bad(c, "end", "[%#" PRIx64 ", %#" PRIx64 ") is not a page-aligned range",
			   v->start, v->end);
	if (v->prot > 7)
		return bad(c, "prot", "%#x has bits other than PROT_READ|WRITE|EXEC", v->prot);
	if (v->kind > VMA_VSYSCALL)
		return bad(c, "kind", "%u is not a mapping kind", v->kind);
	if (v->pgoff % WIRE_PAGE_SIZE)
		return bad(c, "pgoff", "%#" PRIx64 " is not page aligned", v->pgoff);
	if (v->path && strlen(v->path) > WIRE_MAX_PATH)
		return bad(c, "path", "longer than %u bytes", WIRE_MAX_PATH);
	return 0;
}

static int check_mappings(struct ctx *c, const struct wire_mappings *m)
{
	int r = 0;

	if (m->n > WIRE_MAX_VMAS)
		return bad(c, "vmas", "%u mappings, more than %u", m->n, WIRE_MAX_VMAS);
	for (uint32_t i = 0; r >= 0 && i < m->n; i++) {
		snprintf(c->prefix, sizeof(c->prefix), "vmas[%u].", i);
		r = check_vma(c, &m->vmas[i]);
	}
	c->prefix[0] = 0;
	return r;
}

static int check_threads(struct ctx *c, const struct wire_threads *m)
{
	if (m->n > WIRE_MAX_THREADS)
		return bad(c, "threads", "%u threads, more than %u", m->n, WIRE_MAX_THREADS);
	for (uint32_t i = 0; i < m->n; i++)
		if (m->threads[i].len < 1 || m->threads[i].len > WIRE_MAX_THREAD_BLOB)
			return bad(c, "threads", "record %u is %u bytes, expected 1 to %u", i,
				   m->threads[i].len, WIRE_MAX_THREAD_BLOB);
	return 0;
}

static int check_fds(struct ctx *c, const struct wire_fds *m)
{
	if (m->table.len > WIRE_MAX_FDS_BLOB)
		return bad(c, "table", "%u bytes, more than %u", m->table.len, WIRE_MAX_FDS_BLOB);
	return 0;
}

static int check_pages(struct ctx *c, const struct wire_pages *m)
{
	if (m->addr % WIRE_PAGE_SIZE)
		return bad(c, "addr", "%#" PRIx64 " is not page aligned", m->addr);
	if (m->npages < 1 || m->npages > WIRE_MAX_PAGES)
		return bad(c, "npages", "%u, expected 1 to %u", m->npages, WIRE_MAX_PAGES);
	if (m->addr + (uint64_t)m->npages * WIRE_PAGE_SIZE < m->addr)
		return bad(c, "addr", "%#" PRIx64 " + %u pages wraps around", m->addr, m->npages);
	return 0;
}

static int check_delta(struct ctx *c, const struct wire_delta *m)
{
	if (m->codec > DELTA_CODEC_ZSTD)
		return bad(c, "codec", "%u is not 0 (none), 1 (lz4) or 2 (zstd)", m->codec);
	if (m->npages < 1 || m->npages > WIRE_MAX_DELTA_PAGES)
		return bad(c, "npages", "%u, expected 1 to %u", m->npages, WIRE_MAX_DELTA_PAGES);
	if (m->raw_len < m->npages * DELTA_REC_HEAD || m->raw_len > m->npages * DELTA_REC_MAX)
		return bad(c, "raw_len", "%u bytes cannot hold %u page records", m->raw_len,
			   m->npages);
	if (m->data.len > delta_bound(m->codec, m->raw_len))
		return bad(c, "data", "%u bytes, more than %s can make of %u", m->data.len,
			   delta_codec_name(m->codec), m->raw_len);
	return 0;
}

static int check_commit(struct ctx *c, const struct wire_commit *m)
{
	if (!m->epoch)
		return bad(c, "epoch", "epochs are numbered from 1");
	/* 32 bytes only from a journal file of protocol version 2: _verify() tells them apart */
	if (m->sum_len != WIRE_SUM_XXH128 && m->sum_len != WIRE_SUM_SHA256)
		return bad(c, "checksum", "%u bytes, expected %u", m->sum_len, WIRE_SUM_XXH128);
	return 0;
}

static int check_error(struct ctx *c, const struct wire_error *m)
{
	if (m->code > WIRE_MAX_ERROR_CODE)
		return bad(c, "code", "%u, more than %u", m->code, WIRE_MAX_ERROR_CODE);
	return check_name(c, "reason", m->reason, 0, WIRE_MAX_REASON);
}

static int check_handover(struct ctx *c, const struct wire_handover *m)
{
	return m->epoch ? 0 : bad(c, "epoch", "epochs are numbered from 1");
}

static int check_msg(struct ctx *c, const struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_HELLO:
		return check_hello(c, &m->hello);
	case WIRE_EPOCH_BEGIN:
		return check_epoch_begin(c, &m->epoch_begin);
	case WIRE_MAPPINGS:
		return check_mappings(c, &m->mappings);
	case WIRE_THREADS:
		return check_threads(c, &m->threads);
	case WIRE_FDS:
		return check_fds(c, &m->fds);
	case WIRE_PAGES:
		return check_pages(c, &m->pages);
	case WIRE_COMMIT:
		return check_commit(c, &m->commit);
	case WIRE_ERROR:
		return check_error(c, &m->error);
	case WIRE_HANDOVER:
		return check_handover(c, &m->handover);
	case WIRE_DELTA:
		return check_delta(c, &m->delta);
	case WIRE_ACK:
	case WIRE_HEARTBEAT:
	case WIRE_STAND_DOWN:
		return 0;
	}
	return bad(c, NULL, "unknown message type %u", m->type);
}

/* ---------- packing ---------- */

struct pk {
	msgpack_packer pk;
	msgpack_sbuffer *sb;
	size_t mark; /* sb->size before this message, to take a half-written one back */
	int r;
};

static void pk_begin(struct pk *p, msgpack_sbuffer *sb, enum wire_type type)
{
	*p = (struct pk){.sb = sb, .mark = sb->size};
	msgpack_packer_init(&p->pk, sb, msgpack_sbuffer_write);
	if (msgpack_pack_array(&p->pk, 1 + descs[type].nfields) < 0 ||
	    msgpack_pack_uint8(&p->pk, type) < 0)
		p->r = -ENOMEM;
}

static int pk_end(struct pk *p)
{
	if (p->r < 0)
		p->sb->size = p->mark;
	return p->r;
}

/* msgpack_pack_* fail only when the sbuffer cannot grow. */
static void pk_ok(struct pk *p, int x)
{
	if (x < 0 && p->r == 0)
		p->r = -ENOMEM;
}

static void pk_u64(struct pk *p, uint64_t v) { pk_ok(p, msgpack_pack_uint64(&p->pk, v)); }

static void pk_bool(struct pk *p, bool v)
{
	pk_ok(p, v ? msgpack_pack_true(&p->pk) : msgpack_pack_false(&p->pk));
}

static void pk_array(struct pk *p, uint32_t n) { pk_ok(p, msgpack_pack_array(&p->pk, n)); }

static void pk_str(struct pk *p, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (!s) {
		pk_ok(p, msgpack_pack_nil(&p->pk));
		return;
	}
	pk_ok(p, msgpack_pack_str(&p->pk, n));
	pk_ok(p, msgpack_pack_str_body(&p->pk, s, n));
}

static void pk_bin(struct pk *p, const void *data, size_t n)
{
	pk_ok(p, msgpack_pack_bin(&p->pk, n));
	if (n)
		pk_ok(p, msgpack_pack_bin_body(&p->pk, data, n));
}

/* Refuse what the peer's decoder would refuse, before writing a byte of it. */
static int pk_check(const struct wire_msg *m)
{
	char err[256];
	struct ctx c = {.type = wire_type_name(m->type), .err = err, .errlen = sizeof(err)};

	return check_msg(&c, m) < 0 ? -EINVAL : 0;
}

int wire_pack_hello(msgpack_sbuffer *sb, const struct wire_hello *m)
{
	struct wire_msg w = {.type = WIRE_HELLO, .hello = *m};
	struct pk p;

	if (pk_check(&w) < 0)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_HELLO);
	pk_u64(&p, m->proto_version);
	pk_u64(&p, m->role);
	pk_str(&p, m->service);
	pk_str(&p, m->boot_id ? m->boot_id : "");
	pk_u64(&p, m->pid);
	pk_u64(&p, m->incarnation);
	pk_u64(&p, m->flags);
	pk_u64(&p, m->epoch);
	return pk_end(&p);
}

int wire_pack_epoch_begin(msgpack_sbuffer *sb, const struct wire_epoch_begin *m)
{
	struct wire_msg w = {.type = WIRE_EPOCH_BEGIN, .epoch_begin = *m};
	struct pk p;

	if (pk_check(&w) < 0)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_EPOCH_BEGIN);
	pk_u64(&p, m->epoch);
	pk_u64(&p, m->base_epoch);
	pk_u64(&p, m->incarnation);
	return pk_end(&p);
}

static void pk_vma(struct pk *p, const struct wire_vma *v)
{
	pk_array(p, VMA_FIELDS);
	pk_u64(p, v->start);
	pk_u64(p, v->end);
	pk_u64(p, v->prot);
	pk_u64(p, v->kind);
	pk_bool(p, v->shared);
	pk_u64(p, v->pgoff);
	pk_str(p, v->path);
	pk_u64(p, v->file_size);
	if (v->sha256)
		pk_bin(p, v->sha256, 32);
	else
		pk_ok(p, msgpack_pack_nil(&p->pk));
}

int wire_pack_mappings(msgpack_sbuffer *sb, const struct wire_mappings *m)
{
	struct wire_msg w = {.type = WIRE_MAPPINGS, .mappings = *m};
	struct pk p;

	if (pk_check(&w) < 0)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_MAPPINGS);
	pk_array(&p, m->n);
	for (uint32_t i = 0; i < m->n; i++)
		pk_vma(&p, &m->vmas[i]);
	return pk_end(&p);
}

int wire_pack_threads(msgpack_sbuffer *sb, const struct wire_threads *m)
{
	struct wire_msg w = {.type = WIRE_THREADS, .threads = *m};
	struct pk p;

	if (pk_check(&w) < 0)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_THREADS);
	pk_array(&p, m->n);
	for (uint32_t i = 0; i < m->n; i++)
		pk_bin(&p, m->threads[i].data, m->threads[i].len);
	return pk_end(&p);
}

int wire_pack_fds(msgpack_sbuffer *sb, const struct wire_fds *m)
{
	struct wire_msg w = {.type = WIRE_FDS, .fds = *m};
	struct pk p;

	if (pk_check(&w) < 0)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_FDS);
	pk_bin(&p, m->table.data, m->table.len);
	return pk_end(&p);
}

int wire_pack_pages_head(msgpack_sbuffer *sb, uint64_t addr, uint32_t npages)
{
	struct wire_msg w = {.type = WIRE_PAGES, .pages = {.addr = addr, .npages = npages}};
	struct pk p;

	if (pk_check(&w) < 0)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_PAGES);
	pk_u64(&p, addr);
	pk_u64(&p, npages);
	pk_ok(&p, msgpack_pack_bin(&p.pk, (size_t)npages * WIRE_PAGE_SIZE));
	return pk_end(&p);
}

int wire_pack_pages(msgpack_sbuffer *sb, const struct wire_pages *m)
{
	size_t mark = sb->size;
	int r;

	if (!m->data)
		return -EINVAL;
	r = wire_pack_pages_head(sb, m->addr, m->npages);
	if (r >= 0 && msgpack_sbuffer_write(sb, (const char *)m->data,
					    (size_t)m->npages * WIRE_PAGE_SIZE) < 0) {
		sb->size = mark;
		r = -ENOMEM;
	}
	return r;
}

int wire_pack_commit(msgpack_sbuffer *sb, const struct wire_commit *m)
{
	struct wire_msg w = {.type = WIRE_COMMIT, .commit = *m};
	struct pk p;

	if (pk_check(&w) < 0)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_COMMIT);
	pk_u64(&p, m->epoch);
	pk_bin(&p, m->sum, m->sum_len);
	pk_u64(&p, m->npages);
	return pk_end(&p);
}

int wire_pack_ack(msgpack_sbuffer *sb, const struct wire_ack *m)
{
	struct pk p;

	pk_begin(&p, sb, WIRE_ACK);
	pk_u64(&p, m->epoch);
	return pk_end(&p);
}

int wire_pack_heartbeat(msgpack_sbuffer *sb, const struct wire_heartbeat *m)
{
	struct pk p;

	pk_begin(&p, sb, WIRE_HEARTBEAT);
	pk_u64(&p, m->seq);
	pk_u64(&p, m->time_us);
	pk_u64(&p, m->epoch);
	pk_u64(&p, m->echo_us);
	pk_u64(&p, m->echo_age_us);
	return pk_end(&p);
}

int wire_pack_error(msgpack_sbuffer *sb, const struct wire_error *m)
{
	struct wire_msg w = {.type = WIRE_ERROR, .error = *m};
	struct pk p;

	if (pk_check(&w) < 0)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_ERROR);
	pk_u64(&p, m->code);
	pk_str(&p, m->reason ? m->reason : "");
	return pk_end(&p);
}

int wire_pack_delta(msgpack_sbuffer *sb, const struct wire_delta *m)
{
	struct wire_msg w = {.type = WIRE_DELTA, .delta = *m};
	struct pk p;

	if (pk_check(&w) < 0 || !m->data.data)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_DELTA);
	pk_u64(&p, m->codec);
	pk_u64(&p, m->npages);
	pk_u64(&p, m->raw_len);
	pk_bin(&p, m->data.data, m->data.len);
	return pk_end(&p);
}

int wire_pack_handover(msgpack_sbuffer *sb, const struct wire_handover *m)
{
	struct wire_msg w = {.type = WIRE_HANDOVER, .handover = *m};
	struct pk p;

	if (pk_check(&w) < 0)
		return -EINVAL;
	pk_begin(&p, sb, WIRE_HANDOVER);
	pk_u64(&p, m->epoch);
	return pk_end(&p);
}

int wire_pack_stand_down(msgpack_sbuffer *sb)
{
	struct pk p;

	pk_begin(&p, sb, WIRE_STAND_DOWN);
	return pk_end(&p);
}

int wire_pack(msgpack_sbuffer *sb, const struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_HELLO:
		return wire_pack_hello(sb, &m->hello);
	case WIRE_EPOCH_BEGIN:
		return wire_pack_epoch_begin(sb, &m->epoch_begin);
	case WIRE_MAPPINGS:
		return wire_pack_mappings(sb, &m->mappings);
	case WIRE_THREADS:
		return wire_pack_threads(sb, &m->threads);
	case WIRE_FDS:
		return wire_pack_fds(sb, &m->fds);
	case WIRE_PAGES:
		return wire_pack_pages(sb, &m->pages);
	case WIRE_COMMIT:
		return wire_pack_commit(sb, &m->commit);
	case WIRE_ACK:
		return wire_pack_ack(sb, &m->ack);
	case WIRE_HEARTBEAT:
		return wire_pack_heartbeat(sb, &m->heartbeat);
	case WIRE_ERROR:
		return wire_pack_error(sb, &m->error);
	case WIRE_HANDOVER:
		return wire_pack_handover(sb, &m->handover);
	case WIRE_STAND_DOWN:
		return wire_pack_stand_down(sb);
	case WIRE_DELTA:
		return wire_pack_delta(sb, &m->delta);
	}
	return -EINVAL;
}

/* ---------- pass 1: the scanner ---------- */

struct scan {
	uint8_t head;	  /* first byte of the header being read */
	uint8_t extra[8]; /* the header's length or value bytes */
	uint8_t nextra, need;
	uint64_t skip;		  /* str/bin payload bytes still to pass over */
	uint32_t left[MAX_DEPTH]; /* elements still due in each open array */
	uint32_t depth;
	uint32_t fields; /* elements of the message's top array */
	uint64_t msg_bytes, msg_objects;
	uint64_t type; /* the message's type once read, else 0 */
};

/* Bytes that follow a msgpack header's first byte, or -1 for what we never send. */
static int head_extra(uint8_t b)
{
	if (b <= 0x7f || (b >= 0x90 && b <= 0xc0) || b == 0xc2 || b == 0xc3)
		return 0; /* fixint, fixarray, fixstr, nil, false, true */
	switch (b) {
	case 0xc4:
	case 0xcc:
	case 0xd9:
		return 1; /* bin8, uint8, str8 */
	case 0xc5:
	case 0xcd:
	case 0xda:
	case 0xdc:
		return 2; /* bin16, uint16, str16, array16 */
	case 0xc6:
	case 0xce:
	case 0xdb:
	case 0xdd:
		return 4; /* bin32, uint32, str32, array32 */
	case 0xcf:
		return 8; /* uint64 */
	}
	return -1; /* maps, ext, floats, negative integers, 0xc1 */
}

static uint64_t be_value(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static int scan_fail(struct scan *s, struct ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int scan_fail(struct scan *s, struct ctx *c, const char *fmt, ...)
{
	const struct msg_desc *d = desc_of(s->type);
	uint32_t index = s->fields - (s->depth ? s->left[0] : 0) - 1; /* of the field we are in */
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	c->type = d ? d->name : "message";
	return bad(c, d && index < d->nfields ? d->fields[index] : NULL, "%s", why);
}

/* A value ended: count it against the arrays it closes, and the message it may end. */
static void scan_value_done(struct scan *s)
{
	while (s->depth > 0) {
		if (--s->left[s->depth - 1] > 0)
			return;
		s->depth--;
	}
	*s = (struct scan){0}; /* the message is whole */
}

static int scan_array(struct scan *s, struct ctx *c, uint64_t n)
{
	if (s->depth == 0 && (n < 1 || n > 1 + MAX_FIELDS))
		return scan_fail(s, c, "an array of %" PRIu64 " elements, expected 1 to %u", n,
				 1 + MAX_FIELDS);
	if (s->depth == MAX_DEPTH)
		return scan_fail(s, c, "arrays nested more than %u deep", MAX_DEPTH);
	s->msg_objects += n;
	if (s->msg_objects > MAX_OBJECTS)
		return scan_fail(s, c, "more than %u elements in one message", MAX_OBJECTS);
	if (s->depth == 0)
		s->fields = n;
	if (n == 0) {
		scan_value_done(s);
		return 0;
	}
	s->left[s->depth++] = n;
	return 0;
}

static int scan_blob(struct scan *s, struct ctx *c, uint64_t n, bool is_str)
{
	uint64_t max = is_str ? MAX_STR : WIRE_MAX_BIN;

	if (n > max)
		return scan_fail(s, c, "a %s of %" PRIu64 " bytes, more than %" PRIu64,
				 is_str ? "string" : "binary", n, max);
	if (n == 0)
		scan_value_done(s);
	s->skip = n;
	return 0;
}

static void scan_scalar(struct scan *s, uint64_t v, bool is_uint)
{
	bool is_type = s->depth == 1 && s->left[0] == s->fields;

	if (is_type)
		s->type = is_uint ? v : 0;
	scan_value_done(s);
}

/* A whole header has been read: head, then need bytes in extra. */
static int scan_header(struct scan *s, struct ctx *c)
{
	uint8_t b = s->head;
	uint64_t v = be_value(s->extra, s->need);

	if (s->depth == 0 && !((b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd))
		return scan_fail(s, c,
				 "a message must be an array [type, fields...], got byte %#04x", b);
	if (b >= 0x90 && b <= 0x9f)
		return scan_array(s, c, b & 0x0f);
	if (b == 0xdc || b == 0xdd)
		return scan_array(s, c, v);
	if (b >= 0xa0 && b <= 0xbf)
		return scan_blob(s, c, b & 0x1f, true);
	if (b == 0xd9 || b == 0xda || b == 0xdb)
		return scan_blob(s, c, v, true);
	if (b == 0xc4 || b == 0xc5 || b == 0xc6)
		return scan_blob(s, c, v, false);
	if (b <= 0x7f)
		scan_scalar(s, b, true);
	else
		scan_scalar(s, v, b >= 0xcc && b <= 0xcf);
	return 0;
}

static int scan_byte(struct scan *s, struct ctx *c, uint8_t b)
{
	int need;

	if (s->nextra == 0 && s->need == 0) {
		need = head_extra(b);
		if (need < 0)
			return scan_fail(s, c, "msgpack type byte %#04x is never sent", b);
		s->head = b;
		s->need = need;
	} else {
		s->extra[s->nextra++] = b;
	}
	if (s->nextra < s->need)
		return 0;
	int r = scan_header(s, c);
	s->nextra = s->need = 0;
	return r;
}

/* Scan p[0..n); on a bad byte return -EBADMSG with *ok the bytes before it. */
static int scan_feed(struct scan *s, struct ctx *c, const uint8_t *p, size_t n, size_t *ok)
{
	size_t i = 0;
	int r = 0;

	while (i < n) {
		/* Payload bytes go by in one step; header bytes one at a time. */
		size_t take = s->skip ? (s->skip < n - i ? s->skip : n - i) : 1;
		if (s->msg_bytes + take > WIRE_MAX_MSG) {
			r = scan_fail(s, c, "message longer than %u bytes", WIRE_MAX_MSG);
			break;
		}
		s->msg_bytes += take;
		if (s->skip) {
			s->skip -= take;
			if (s->skip == 0)
				scan_value_done(s);
		} else if ((r = scan_byte(s, c, p[i])) < 0) {
			break;
		}
		i += take;
	}
	*ok = i;
	return r;
}

/* ---------- pass 2: field decoders ---------- */

static const char *obj_type_name(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return "nil";
	case MSGPACK_OBJECT_BOOLEAN:
		return "a boolean";
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return "an unsigned integer";
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return "a negative integer";
	case MSGPACK_OBJECT_STR:
		return "a string";
	case MSGPACK_OBJECT_BIN:
		return "binary";
	case MSGPACK_OBJECT_ARRAY:
		return "an array";
	case MSGPACK_OBJECT_MAP:
		return "a map";
	default:
		return "another type";
	}
}

static int get_uint(struct ctx *c, const msgpack_object *o, const char *field, uint64_t max,
		    uint64_t *out)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return bad(c, field, "expected an unsigned integer, got %s", obj_type_name(o));
	if (o->via.u64 > max)
		return bad(c, field, "%" PRIu64 " is more than %" PRIu64, o->via.u64, max);
	*out = o->via.u64;
	return 0;
}

static int get_u32(struct ctx *c, const msgpack_object *o, const char *field, uint32_t *out)
{
	uint64_t v = 0;
	int r = get_uint(c, o, field, UINT32_MAX, &v);

	if (r >= 0)
		*out = v;
	return r;
}

static int get_bool(struct ctx *c, const msgpack_object *o, const char *field, bool *out)
{
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return bad(c, field, "expected a boolean, got %s", obj_type_name(o));
	*out = o->via.boolean;
	return 0;
}

/* A NUL-terminated copy in the message's zone; nil gives NULL when nullable. */
static int get_str(struct ctx *c, const msgpack_object *o, const char *field, uint32_t max,
		   bool nullable, const char **out)
{
	char *s;

	*out = NULL;
	if (nullable && o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type != MSGPACK_OBJECT_STR)
		return bad(c, field, "expected a string, got %s", obj_type_name(o));
	if (o->via.str.size > max)
		return bad(c, field, "%u bytes, more than %u", o->via.str.size, max);
	if (o->via.str.size && memchr(o->via.str.ptr, 0, o->via.str.size))
		return bad(c, field, "contains a NUL byte");
	s = msgpack_zone_malloc(c->z, o->via.str.size + 1);
	if (!s)
		return -ENOMEM;
	if (o->via.str.size) /* an empty str may have no pointer at all */
		memcpy(s, o->via.str.ptr, o->via.str.size);
	s[o->via.str.size] = 0;
	*out = s;
	return 0;
}

/* Blobs are not copied: they point into the unpacker's buffer, which the zone keeps alive. */
static int get_bin(struct ctx *c, const msgpack_object *o, const char *field, uint32_t max,
		   struct wire_blob *out)
{
	if (o->type != MSGPACK_OBJECT_BIN)
		return bad(c, field, "expected binary, got %s", obj_type_name(o));
	if (o->via.bin.size > max)
		return bad(c, field, "%u bytes, more than %u", o->via.bin.size, max);
	out->data = (const uint8_t *)o->via.bin.ptr;
	out->len = o->via.bin.size;
	return 0;
}

static int get_sha256(struct ctx *c, const msgpack_object *o, const char *field,
		      const uint8_t **out)
{
	struct wire_blob b = {0};
	int r = get_bin(c, o, field, 32, &b);

	if (r >= 0 && b.len != 32)
		r = bad(c, field, "%u bytes, expected 32", b.len);
	*out = r >= 0 ? b.data : NULL;
	return r;
}

static int get_array(struct ctx *c, const msgpack_object *o, const char *field, uint32_t max,
		     const msgpack_object **items, uint32_t *n)
{
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return bad(c, field, "expected an array, got %s", obj_type_name(o));
	if (o->via.array.size > max)
		return bad(c, field, "%u elements, more than %u", o->via.array.size, max);
	*items = o->via.array.ptr;
	*n = o->via.array.size;
	return 0;
}

static void *zone_table(struct ctx *c, uint32_t n, size_t elem)
{
	return msgpack_zone_malloc(c->z, (n ? n : 1) * elem);
}

static int dec_hello(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	struct wire_hello *h = &m->hello;
	int r;

	if ((r = get_u32(c, &f[0], "proto_version", &h->proto_version)) < 0 ||
	    (r = get_u32(c, &f[1], "role", &h->role)) < 0 ||
	    (r = get_str(c, &f[2], "service", WIRE_MAX_NAME, false, &h->service)) < 0 ||
	    (r = get_str(c, &f[3], "boot_id", WIRE_MAX_NAME, false, &h->boot_id)) < 0 ||
	    (r = get_u32(c, &f[4], "pid", &h->pid)) < 0 ||
	    (r = get_uint(c, &f[5], "incarnation", UINT64_MAX, &h->incarnation)) < 0 ||
	    (r = get_u32(c, &f[6], "flags", &h->flags)) < 0 ||
	    (r = get_uint(c, &f[7], "epoch", UINT64_MAX, &h->epoch)) < 0)
		return r;
	return check_hello(c, h);
}

static int dec_epoch_begin(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	struct wire_epoch_begin *e = &m->epoch_begin;
	int r;

	if ((r = get_uint(c, &f[0], "epoch", UINT64_MAX, &e->epoch)) < 0 ||
	    (r = get_uint(c, &f[1], "base_epoch", UINT64_MAX, &e->base_epoch)) < 0 ||
	    (r = get_uint(c, &f[2], "incarnation", UINT64_MAX, &e->incarnation)) < 0)
		return r;
	return check_epoch_begin(c, e);
}

static int dec_vma(struct ctx *c, const msgpack_object *f, struct wire_vma *v)
{
	int r;

	if ((r = get_uint(c, &f[0], "start", UINT64_MAX, &v->start)) < 0 ||
	    (r = get_uint(c, &f[1], "end", UINT64_MAX, &v->end)) < 0 ||
	    (r = get_u32(c, &f[2], "prot", &v->prot)) < 0 ||
	    (r = get_u32(c, &f[3], "kind", &v->kind)) < 0 ||
	    (r = get_bool(c, &f[4], "shared", &v->shared)) < 0 ||
	    (r = get_uint(c, &f[5], "pgoff", UINT64_MAX, &v->pgoff)) < 0 ||
	    (r = get_str(c, &f[6], "path", WIRE_MAX_PATH, true, &v->path)) < 0 ||
	    (r = get_uint(c, &f[7], "file_size", UINT64_MAX, &v->file_size)) < 0)
		return r;
	if (f[8].type == MSGPACK_OBJECT_NIL)
		return 0;
	return get_sha256(c, &f[8], "sha256", &v->sha256);
}

/* One record of a list: an array of exactly n, named "list[i]" in errors. */
static int get_record(struct ctx *c, const msgpack_object *o, const char *list, uint32_t i,
		      uint32_t n, const msgpack_object **f)
{
	char name[32];
	uint32_t got = 0;
	int r;

	snprintf(name, sizeof(name), "%s[%u]", list, i);
	if ((r = get_array(c, o, name, n, f, &got)) < 0)
		return r;
	if (got != n)
		return bad(c, name, "%u fields, expected %u", got, n);
	return 0;
}

static int dec_mappings(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	const msgpack_object *items = NULL, *rec = NULL;
	struct wire_vma *vmas;
	uint32_t n = 0;
	int r;

	if ((r = get_array(c, &f[0], "vmas", WIRE_MAX_VMAS, &items, &n)) < 0)
		return r;
	if (!(vmas = zone_table(c, n, sizeof(*vmas))))
		return -ENOMEM;
	memset(vmas, 0, n * sizeof(*vmas));
	for (uint32_t i = 0; i < n; i++) {
		if ((r = get_record(c, &items[i], "vmas", i, VMA_FIELDS, &rec)) < 0)
			return r;
		snprintf(c->prefix, sizeof(c->prefix), "vmas[%u].", i);
		if ((r = dec_vma(c, rec, &vmas[i])) < 0)
			return r;
	}
	c->prefix[0] = 0;
	m->mappings = (struct wire_mappings){.vmas = vmas, .n = n};
	return check_mappings(c, &m->mappings);
}

static int dec_threads(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	const msgpack_object *items = NULL;
	struct wire_blob *t;
	uint32_t n = 0;
	int r;

	if ((r = get_array(c, &f[0], "threads", WIRE_MAX_THREADS, &items, &n)) < 0)
		return r;
	if (!(t = zone_table(c, n, sizeof(*t))))
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "threads[%u]", i);
		if ((r = get_bin(c, &items[i], name, WIRE_MAX_THREAD_BLOB, &t[i])) < 0)
			return r;
	}
	m->threads = (struct wire_threads){.threads = t, .n = n};
	return check_threads(c, &m->threads);
}

static int dec_fds(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	int r = get_bin(c, &f[0], "table", WIRE_MAX_FDS_BLOB, &m->fds.table);
	return r < 0 ? r : check_fds(c, &m->fds);
}

static int dec_pages(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	struct wire_pages *p = &m->pages;
	struct wire_blob data = {0};
	int r;

	if ((r = get_uint(c, &f[0], "addr", UINT64_MAX, &p->addr)) < 0 ||
	    (r = get_u32(c, &f[1], "npages", &p->npages)) < 0 ||
	    (r = get_bin(c, &f[2], "data", WIRE_MAX_BIN, &data)) < 0)
		return r;
	p->data = data.data;
	if ((r = check_pages(c, p)) < 0)
		return r;
	if (data.len != (uint64_t)p->npages * WIRE_PAGE_SIZE)
		return bad(c, "data", "%u bytes, expected npages * %u = %" PRIu64, data.len,
			   WIRE_PAGE_SIZE, (uint64_t)p->npages * WIRE_PAGE_SIZE);
	return 0;
}

static int dec_commit(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	struct wire_commit *k = &m->commit;
	struct wire_blob sum = {0};
	int r;

	if ((r = get_uint(c, &f[0], "epoch", UINT64_MAX, &k->epoch)) < 0 ||
	    (r = get_bin(c, &f[1], "checksum", WIRE_SUM_SHA256, &sum)) < 0 ||
	    (r = get_uint(c, &f[2], "npages", UINT64_MAX, &k->npages)) < 0)
		return r;
	memcpy(k->sum, sum.data, sum.len < WIRE_SUM_SHA256 ? sum.len : WIRE_SUM_SHA256);
	k->sum_len = sum.len;
	return check_commit(c, k);
}

static int dec_ack(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	return get_uint(c, &f[0], "epoch", UINT64_MAX, &m->ack.epoch);
}

static int dec_heartbeat(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	struct wire_heartbeat *h = &m->heartbeat;
	int r;

	if ((r = get_uint(c, &f[0], "seq", UINT64_MAX, &h->seq)) < 0 ||
	    (r = get_uint(c, &f[1], "time_us", UINT64_MAX, &h->time_us)) < 0 ||
	    (r = get_uint(c, &f[2], "epoch", UINT64_MAX, &h->epoch)) < 0 ||
	    (r = get_uint(c, &f[3], "echo_us", UINT64_MAX, &h->echo_us)) < 0 ||
	    (r = get_uint(c, &f[4], "echo_age_us", UINT64_MAX, &h->echo_age_us)) < 0)
		return r;
	return 0;
}

static int dec_error(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	uint64_t code = 0;
	int r;

	if ((r = get_uint(c, &f[0], "code", WIRE_MAX_ERROR_CODE, &code)) < 0 ||
	    (r = get_str(c, &f[1], "reason", WIRE_MAX_REASON, false, &m->error.reason)) < 0)
		return r;
	m->error.code = code;
	return 0;
}

static int dec_handover(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	int r = get_uint(c, &f[0], "epoch", UINT64_MAX, &m->handover.epoch);

	return r < 0 ? r : check_handover(c, &m->handover);
}

static int dec_stand_down(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	(void)c, (void)f, (void)m;
	return 0;
}

/*
 * Decompress into the message's zone and check every record, so that what
 * the backup gets is a payload it can walk without further checks on its
 * shape (whether each record has a base is the store's business).
 */
static int dec_delta(struct ctx *c, const msgpack_object *f, struct wire_msg *m)
{
	struct wire_delta *d = &m->delta;
	struct delta_rec rec;
	uint8_t *raw;
	size_t pos = 0;
	uint32_t n = 0;
	int r;

	if ((r = get_u32(c, &f[0], "codec", &d->codec)) < 0 ||
	    (r = get_u32(c, &f[1], "npages", &d->npages)) < 0 ||
	    (r = get_u32(c, &f[2], "raw_len", &d->raw_len)) < 0 ||
	    (r = get_bin(c, &f[3], "data", WIRE_MAX_BIN, &d->data)) < 0 ||
	    (r = check_delta(c, d)) < 0)
		return r;
	if (!(raw = msgpack_zone_malloc(c->z, d->raw_len)))
		return -ENOMEM;
	if (delta_decompress(d->codec, d->data.data, d->data.len, raw, d->raw_len) < 0)
		return bad(c, "data", "does not decompress (%s) to raw_len %u bytes",
			   delta_codec_name(d->codec), d->raw_len);
	while ((r = delta_payload_next(raw, d->raw_len, &pos, &rec)) == 1)
		n++;
	if (r < 0)
		return bad(c, "data", "page record %u (at byte %zu) is malformed", n, pos);
	if (n != d->npages)
		return bad(c, "npages", "%u, but the payload holds %u page records", d->npages, n);
	d->raw = raw;
	return 0;
}

static int decode(struct ctx *c, const msgpack_object *o, struct wire_msg *out)
{
	const msgpack_object *f = o->via.array.ptr;
	const struct msg_desc *d;

	/* The scanner let through only arrays of 1..7 elements. */
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 1)
		return bad(c, NULL, "expected an array [type, fields...]");
	if (f[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || !(d = desc_of(f[0].via.u64))) {
		if (f[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			return bad(c, NULL, "unknown message type %" PRIu64, f[0].via.u64);
		return bad(c, NULL, "expected a message type, got %s", obj_type_name(&f[0]));
	}
	c->type = d->name;
	if (o->via.array.size != 1 + d->nfields)
		return bad(c, NULL, "%u fields, expected %u", o->via.array.size - 1, d->nfields);
	*out = (struct wire_msg){.type = f[0].via.u64};
	return d->decode(c, f + 1, out);
}

/* ---------- the decoder ---------- */

struct wire_decoder {
	msgpack_unpacker unp;
	msgpack_unpacked result;
	struct scan scan;
	int scan_r; /* the scanner refused a byte: after what came before it, fail */
	int dead;   /* a message failed to decode: fail from now on */
	char reason[512];
};

struct wire_decoder *wire_decoder_new(void)
{
	struct wire_decoder *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	if (!msgpack_unpacker_init(&d->unp, MSGPACK_UNPACKER_INIT_BUFFER_SIZE)) {
		free(d);
		return NULL;
	}
	msgpack_unpacked_init(&d->result);
	return d;
}

void wire_decoder_free(struct wire_decoder *d)
{
	if (!d)
		return;
	msgpack_unpacked_destroy(&d->result);
	msgpack_unpacker_destroy(&d->unp);
	free(d);
}

int wire_decoder_feed(struct wire_decoder *d, const void *p, size_t n)
{
	struct ctx c = {.err = d->reason, .errlen = sizeof(d->reason)};
	size_t ok;

	if (d->scan_r < 0 || d->dead < 0)
		return d->dead < 0 ? d->dead : d->scan_r;
	if (!msgpack_unpacker_reserve_buffer(&d->unp, n))
		return -ENOMEM;
	d->scan_r = scan_feed(&d->scan, &c, p, n, &ok);
	memcpy(msgpack_unpacker_buffer(&d->unp), p, ok);
	msgpack_unpacker_buffer_consumed(&d->unp, ok);
	return d->scan_r;
}

size_t wire_decoder_partial(const struct wire_decoder *d) { return d->scan.msg_bytes; }

static int decoder_fail(struct wire_decoder *d, int r, const char *err)
{
	d->dead = r;
	snprintf(d->reason, sizeof(d->reason), "%s", err);
	return r;
}

int wire_decoder_next(struct wire_decoder *d, struct wire_msg *out, char *err, size_t errlen)
{
	struct ctx c = {.type = "message", .err = err, .errlen = errlen};
	int r;

	if (d->dead < 0) {
		snprintf(err, errlen, "%s", d->reason);
		return d->dead;
	}
	switch (msgpack_unpacker_next(&d->unp, &d->result)) {
	case MSGPACK_UNPACK_SUCCESS:
		c.z = d->result.zone;
		r = c.z ? decode(&c, &d->result.data, out) : -ENOMEM;
		if (r == -ENOMEM)
			snprintf(err, errlen, "out of memory");
		return r < 0 ? decoder_fail(d, r, err) : 1;
	case MSGPACK_UNPACK_CONTINUE:
		if (d->scan_r == 0)
			return 0;
		snprintf(err, errlen, "%s", d->reason);
		return d->scan_r;
	case MSGPACK_UNPACK_NOMEM_ERROR:
		snprintf(err, errlen, "out of memory");
		return decoder_fail(d, -ENOMEM, err);
	default:
		bad(&c, NULL, "not valid msgpack");
		return decoder_fail(d, -EBADMSG, err);
	}
}

/* ---------- the epoch checksum ---------- */

/* One update of the epoch's hash, whichever it is (wire.h says why XXH3-128). */
static void h_update(struct wire_epoch_hash *h, const void *p, size_t n)
{
	if (h->sum_len == WIRE_SUM_SHA256)
		EVP_DigestUpdate(h->ctx, p, n);
	else
		h_xxh3_update(h->ctx, p, n);
}

static void h_u64(struct wire_epoch_hash *x, uint64_t v)
{
	uint64_t le = htole64(v);
	h_update(x, &le, sizeof(le));
}

static void h_bytes(struct wire_epoch_hash *x, const void *p, size_t n)
{
	h_u64(x, n);
	if (n)
		h_update(x, p, n);
}

/* A missing string and an empty one must hash differently. */
static void h_str(struct wire_epoch_hash *x, const char *s)
{
	h_u64(x, s != NULL);
	if (s)
		h_bytes(x, s, strlen(s));
}

static void h_vma(struct wire_epoch_hash *x, const struct wire_vma *v)
{
	h_u64(x, v->start);
	h_u64(x, v->end);
	h_u64(x, v->prot);
	h_u64(x, v->kind);
	h_u64(x, v->shared);
	h_u64(x, v->pgoff);
	h_str(x, v->path);
	h_u64(x, v->file_size);
	h_u64(x, v->sha256 != NULL);
	if (v->sha256)
		h_update(x, v->sha256, 32);
}

static void h_msg(struct wire_epoch_hash *x, const struct wire_msg *m)
{
	h_u64(x, m->type);
	switch (m->type) {
	case WIRE_EPOCH_BEGIN:
		h_u64(x, m->epoch_begin.epoch);
		h_u64(x, m->epoch_begin.base_epoch);
		h_u64(x, m->epoch_begin.incarnation);
		break;
	case WIRE_MAPPINGS:
		h_u64(x, m->mappings.n);
		for (uint32_t i = 0; i < m->mappings.n; i++)
			h_vma(x, &m->mappings.vmas[i]);
		break;
	case WIRE_THREADS:
		h_u64(x, m->threads.n);
		for (uint32_t i = 0; i < m->threads.n; i++)
			h_bytes(x, m->threads.threads[i].data, m->threads.threads[i].len);
		break;
	case WIRE_FDS:
		h_bytes(x, m->fds.table.data, m->fds.table.len);
		break;
	case WIRE_PAGES:
		h_u64(x, m->pages.addr);
		h_bytes(x, m->pages.data, (size_t)m->pages.npages * WIRE_PAGE_SIZE);
		break;
	default:
		break;
	}
}

int wire_epoch_hash_init(struct wire_epoch_hash *h)
{
	*h = (struct wire_epoch_hash){.ctx = XXH3_createState(), .sum_len = WIRE_SUM_XXH128};
	return h->ctx ? 0 : -ENOMEM;
}

int wire_epoch_hash_init_sha256(struct wire_epoch_hash *h)
{
	*h = (struct wire_epoch_hash){.ctx = EVP_MD_CTX_new(), .sum_len = WIRE_SUM_SHA256};
	return h->ctx ? 0 : -ENOMEM;
}

void wire_epoch_hash_done(struct wire_epoch_hash *h)
{
	if (h->sum_len == WIRE_SUM_SHA256)
		EVP_MD_CTX_free(h->ctx);
	else if (h->ctx)
		XXH3_freeState(h->ctx);
	*h = (struct wire_epoch_hash){0};
}

/* A fresh hash for the epoch EPOCH_BEGIN starts. */
static int h_reset(struct wire_epoch_hash *h)
{
	if (h->sum_len == WIRE_SUM_SHA256)
		return EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) ? 0 : -ENOMEM;
	return XXH3_128bits_reset(h->ctx) == XXH_OK ? 0 : -ENOMEM;
}

int wire_epoch_hash_add(struct wire_epoch_hash *h, const struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_EPOCH_BEGIN:
		if (h_reset(h) < 0)
			return -ENOMEM;
		h->epoch = m->epoch_begin.epoch;
		h->npages = 0;
		break;
	case WIRE_DELTA:
		return h->epoch ? -EINVAL : -EPROTO; /* its pages go through _add_page() */
	case WIRE_MAPPINGS:
	case WIRE_THREADS:
	case WIRE_FDS:
	case WIRE_PAGES:
		if (!h->epoch)
			return -EPROTO;
		if (m->type == WIRE_PAGES)
			h->npages += m->pages.npages;
		break;
	default:
		return 0; /* HELLO, COMMIT, ACK, HEARTBEAT, ERROR belong to no epoch */
	}
	h_msg(h, m);
	return 0;
}

int wire_epoch_hash_add_page(struct wire_epoch_hash *h, uint64_t addr, const uint8_t *page)
{
	struct wire_msg m = {.type = WIRE_PAGES, .pages = {.addr = addr, .npages = 1, .data = page}};

	if (!h->epoch)
		return -EPROTO;
	h->npages++;
	h_msg(h, &m);
	return 0;
}

int wire_epoch_hash_final(struct wire_epoch_hash *h, struct wire_commit *out)
{
	if (!h->epoch)
		return -EPROTO;
	memset(out->sum, 0, sizeof(out->sum));
	out->sum_len = h->sum_len;
	if (h->sum_len == WIRE_SUM_SHA256) {
		unsigned len = WIRE_SUM_SHA256;
		if (!EVP_DigestFinal_ex(h->ctx, out->sum, &len))
			return -ENOMEM;
	} else {
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h->ctx));
		memcpy(out->sum, c.digest, WIRE_SUM_XXH128);
	}
	out->epoch = h->epoch;
	out->npages = h->npages;
	h->epoch = 0; /* the next epoch must begin with EPOCH_BEGIN */
	return 0;
}

static const char *sum_name(uint32_t len)
{
	return len == WIRE_SUM_SHA256 ? "SHA-256, protocol version 2" : "XXH3-128";
}

int wire_epoch_hash_verify(struct wire_epoch_hash *h, const struct wire_commit *c, char *err,
			   size_t errlen)
{
	struct wire_commit mine;
	int r = wire_epoch_hash_final(h, &mine);

	if (r == -EPROTO)
		snprintf(err, errlen, "COMMIT: epoch %" PRIu64 " was never begun", c->epoch);
	else if (r < 0)
		snprintf(err, errlen, "COMMIT: cannot compute the checksum");
	else if (c->epoch != mine.epoch)
		snprintf(err, errlen,
			 "COMMIT: field 'epoch': %" PRIu64 ", but epoch %" PRIu64 " is open",
			 c->epoch, mine.epoch);
	else if (c->npages != mine.npages)
		snprintf(err, errlen,
			 "COMMIT: field 'npages': %" PRIu64 ", but the epoch carried %" PRIu64,
			 c->npages, mine.npages);
	else if (c->sum_len != mine.sum_len)
		snprintf(err, errlen,
			 "COMMIT: field 'checksum': %u bytes (%s), expected a %u-byte %s",
			 c->sum_len, sum_name(c->sum_len), mine.sum_len, sum_name(mine.sum_len));
	else if (memcmp(c->sum, mine.sum, mine.sum_len) != 0)
		snprintf(err, errlen,
			 "COMMIT: field 'checksum': does not match the epoch's messages");
	else
		return 0;
	return r < 0 ? r : -EBADMSG;
}
