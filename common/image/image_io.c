/*
 * image_io.c - the on-disk form of an image, in msgpack.
 *
 * core.img is   magic[8] | u32 version | u32 0 | u64 body_len | body | sha256(all before)
 * and the body is one msgpack map. Reading checks every length and both
 * checksums before it believes a single field, because an image may come
 * from a disk or a peer we do not trust.
 */
#include <endian.h>
#include <fcntl.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "../util.h"
#include "image.h"

#define HDR_LEN 24

/* ---------- writing ---------- */

static void pk_str(msgpack_packer *pk, const char *s)
{
	if (!s) {
		msgpack_pack_nil(pk);
		return;
	}
	size_t n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pk_bin(msgpack_packer *pk, const void *p, size_t n)
{
	msgpack_pack_bin(pk, n);
	msgpack_pack_bin_body(pk, p, n);
}

#define PK_KEY(pk, k) pk_str(pk, k)
#define PK_U64(pk, k, v) (PK_KEY(pk, k), msgpack_pack_uint64(pk, (v)))
#define PK_I64(pk, k, v) (PK_KEY(pk, k), msgpack_pack_int64(pk, (v)))
#define PK_BOOL(pk, k, v) (PK_KEY(pk, k), (v) ? msgpack_pack_true(pk) : msgpack_pack_false(pk))
#define PK_STR(pk, k, v) (PK_KEY(pk, k), pk_str(pk, v))
#define PK_BIN(pk, k, p, n) (PK_KEY(pk, k), pk_bin(pk, p, n))

static void pack_mm(msgpack_packer *pk, const struct image_mm *mm)
{
	msgpack_pack_map(pk, 12);
	PK_U64(pk, "start_code", mm->start_code);
	PK_U64(pk, "end_code", mm->end_code);
	PK_U64(pk, "start_data", mm->start_data);
	PK_U64(pk, "end_data", mm->end_data);
	PK_U64(pk, "start_brk", mm->start_brk);
	PK_U64(pk, "brk", mm->brk);
	PK_U64(pk, "start_stack", mm->start_stack);
	PK_U64(pk, "arg_start", mm->arg_start);
	PK_U64(pk, "arg_end", mm->arg_end);
	PK_U64(pk, "env_start", mm->env_start);
	PK_U64(pk, "env_end", mm->env_end);
	PK_BIN(pk, "auxv", mm->auxv, mm->auxv_len);
}

static void pack_creds(msgpack_packer *pk, const struct image_creds *cr)
{
	msgpack_pack_map(pk, 7);
	PK_KEY(pk, "uids");
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint32(pk, cr->uid);
	msgpack_pack_uint32(pk, cr->euid);
	msgpack_pack_uint32(pk, cr->suid);
	msgpack_pack_uint32(pk, cr->fsuid);
	PK_KEY(pk, "gids");
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint32(pk, cr->gid);
	msgpack_pack_uint32(pk, cr->egid);
	msgpack_pack_uint32(pk, cr->sgid);
	msgpack_pack_uint32(pk, cr->fsgid);
	PK_KEY(pk, "groups");
	msgpack_pack_array(pk, cr->n_groups);
	for (uint32_t i = 0; i < cr->n_groups; i++)
		msgpack_pack_uint32(pk, cr->groups[i]);
	PK_KEY(pk, "caps");
	msgpack_pack_array(pk, 5);
	msgpack_pack_uint64(pk, cr->cap_inh);
	msgpack_pack_uint64(pk, cr->cap_prm);
	msgpack_pack_uint64(pk, cr->cap_eff);
	msgpack_pack_uint64(pk, cr->cap_bnd);
	msgpack_pack_uint64(pk, cr->cap_amb);
	PK_U64(pk, "securebits", cr->securebits);
	PK_BOOL(pk, "no_new_privs", cr->no_new_privs);
	PK_KEY(pk, "seccomp");
	msgpack_pack_array(pk, cr->n_filters);
	for (uint32_t i = 0; i < cr->n_filters; i++) {
		msgpack_pack_array(pk, 2);
		msgpack_pack_uint32(pk, cr->filters[i].flags);
		pk_bin(pk, cr->filters[i].insns, cr->filters[i].len * 8);
	}
}

/* Length of XSTATE without its trailing zero bytes, never inside the 576-byte
 * legacy area and XSAVE header (read_image checks a state is at least 512). */
static uint32_t xstate_used_len(const uint8_t *xstate, uint32_t len)
{
	uint32_t n = len;

	while (n > 576 && xstate[n - 1] == 0)
		n--;
	return n;
}

static void pack_thread(msgpack_packer *pk, const struct image_thread *t)
{
	const uint64_t *regs = (const uint64_t *)&t->regs;
	size_t nregs = sizeof(t->regs) / sizeof(uint64_t);

	msgpack_pack_map(pk, 15);
	PK_I64(pk, "tid", t->tid);
	PK_KEY(pk, "regs");
	msgpack_pack_array(pk, nregs);
	for (size_t i = 0; i < nregs; i++)
		msgpack_pack_uint64(pk, regs[i]);
	/*
	 * The kernel hands out (and takes back, PTRACE_SETREGSET) the whole
	 * standard-format XSAVE area, components in their init state included:
	 * on a CPU with AMX that is ~11 KB per thread, the last 8 KB of it the
	 * tile data, zero unless the thread used AMX. Threads ship every epoch,
	 * so only the bytes up to the last non-zero one are packed; the reader
	 * pads with zeros to xstate_size, which restores the same bytes.
	 */
	PK_BIN(pk, "xstate", t->xstate, xstate_used_len(t->xstate, t->xstate_len));
	PK_U64(pk, "xstate_size", t->xstate_len);
	PK_U64(pk, "sigmask", t->sigmask);
	PK_U64(pk, "ss_sp", t->ss_sp);
	PK_U64(pk, "ss_size", t->ss_size);
	PK_I64(pk, "ss_flags", t->ss_flags);
	PK_U64(pk, "clear_tid", t->clear_tid_addr);
	PK_U64(pk, "robust_head", t->robust_head);
	PK_U64(pk, "robust_len", t->robust_len);
	PK_U64(pk, "rseq_addr", t->rseq_addr);
	PK_KEY(pk, "rseq");
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint32(pk, t->rseq_len);
	msgpack_pack_uint32(pk, t->rseq_sig);
	PK_STR(pk, "comm", t->comm);
	PK_KEY(pk, "creds");
	pack_creds(pk, &t->creds);
}

static void pack_fd(msgpack_packer *pk, const struct image_fd *f)
{
	msgpack_pack_map(pk, 17);
	PK_I64(pk, "fd", f->fd);
	PK_U64(pk, "kind", f->kind);
	PK_BOOL(pk, "cloexec", f->cloexec);
	PK_U64(pk, "flags", f->flags);
	PK_STR(pk, "path", f->path);
	PK_U64(pk, "pos", f->pos);
	PK_U64(pk, "ino", f->ino);
	PK_BOOL(pk, "pipe_write", f->pipe_write);
	PK_BIN(pk, "data", f->data, f->data_len);
	PK_U64(pk, "count", f->count);
	PK_I64(pk, "sk_family", f->sk_family);
	PK_I64(pk, "sk_type", f->sk_type);
	PK_I64(pk, "sk_proto", f->sk_proto);
	PK_BOOL(pk, "sk_reuseaddr", f->sk_reuseaddr);
	PK_BOOL(pk, "sk_v6only", f->sk_v6only);
	PK_KEY(pk, "tfds");
	msgpack_pack_array(pk, f->n_tfds);
	for (uint32_t i = 0; i < f->n_tfds; i++) {
		msgpack_pack_array(pk, 3);
		msgpack_pack_int32(pk, f->tfds[i].fd);
		msgpack_pack_uint32(pk, f->tfds[i].events);
		msgpack_pack_uint64(pk, f->tfds[i].data);
	}
	PK_KEY(pk, "reserved");
	msgpack_pack_nil(pk);
}

static void pack_sigactions(msgpack_packer *pk, const struct image *img)
{
	msgpack_pack_array(pk, IMAGE_NSIG);
	for (int i = 0; i < IMAGE_NSIG; i++) {
		const struct image_sigaction *sa = &img->sigactions[i];
		msgpack_pack_array(pk, 4);
		msgpack_pack_uint64(pk, sa->handler);
		msgpack_pack_uint64(pk, sa->flags);
		msgpack_pack_uint64(pk, sa->restorer);
		msgpack_pack_uint64(pk, sa->mask);
	}
}

static void pack_rlimits(msgpack_packer *pk, const struct image *img)
{
	msgpack_pack_array(pk, RLIM_NLIMITS);
	for (int i = 0; i < RLIM_NLIMITS; i++) {
		msgpack_pack_array(pk, 2);
		msgpack_pack_uint64(pk, img->rlimits[i].rlim_cur);
		msgpack_pack_uint64(pk, img->rlimits[i].rlim_max);
	}
}

/* The process-wide record an epoch carries: everything but mappings, threads, fds and pages. */
static void pack_process(msgpack_packer *pk, const struct image *img)
{
	msgpack_pack_map(pk, 11);
	PK_U64(pk, "version", img->version);
	PK_I64(pk, "pid", img->pid);
	PK_STR(pk, "exe", img->exe);
	PK_STR(pk, "cwd", img->cwd);
	PK_U64(pk, "umask", img->umask);
	PK_U64(pk, "personality", img->personality);
	PK_KEY(pk, "rlimits");
	pack_rlimits(pk, img);
	PK_KEY(pk, "mm");
	pack_mm(pk, &img->mm);
	PK_KEY(pk, "sigactions");
	pack_sigactions(pk, img);
	PK_I64(pk, "dumpable", img->dumpable);
	PK_KEY(pk, "clocks");
	msgpack_pack_array(pk, 3);
	msgpack_pack_int64(pk, img->clocks.monotonic);
	msgpack_pack_int64(pk, img->clocks.boottime);
	msgpack_pack_int64(pk, img->clocks.realtime);
}

/* A whole image: the process record an epoch carries, plus everything else. */
static void pack_core(msgpack_packer *pk, const struct image *img)
{
	msgpack_pack_map(pk, 9);
	PK_KEY(pk, "process");
	pack_process(pk, img);
	PK_I64(pk, "exe_file", img->exe_file);

	PK_KEY(pk, "files");
	msgpack_pack_array(pk, img->n_files);
	for (size_t i = 0; i < img->n_files; i++) {
		msgpack_pack_array(pk, 3);
		pk_str(pk, img->files[i].path);
		msgpack_pack_uint64(pk, img->files[i].size);
		pk_bin(pk, img->files[i].sha256, 32);
	}

	PK_KEY(pk, "vmas");
	msgpack_pack_array(pk, img->n_vmas);
	for (size_t i = 0; i < img->n_vmas; i++) {
		const struct image_vma *v = &img->vmas[i];
		msgpack_pack_array(pk, 7);
		msgpack_pack_uint64(pk, v->start);
		msgpack_pack_uint64(pk, v->end);
		msgpack_pack_uint32(pk, v->prot);
		msgpack_pack_uint32(pk, v->kind);
		v->shared ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
		msgpack_pack_uint64(pk, v->pgoff);
		msgpack_pack_int32(pk, v->file);
	}

	PK_KEY(pk, "runs");
	msgpack_pack_array(pk, img->n_runs);
	for (size_t i = 0; i < img->n_runs; i++) {
		msgpack_pack_array(pk, 3);
		msgpack_pack_uint64(pk, img->runs[i].addr);
		msgpack_pack_uint64(pk, img->runs[i].npages);
		msgpack_pack_uint64(pk, img->runs[i].offset);
	}

	PK_KEY(pk, "threads");
	msgpack_pack_array(pk, img->n_threads);
	for (size_t i = 0; i < img->n_threads; i++)
		pack_thread(pk, &img->threads[i]);

	PK_KEY(pk, "fds");
	msgpack_pack_array(pk, img->n_fds);
	for (size_t i = 0; i < img->n_fds; i++)
		pack_fd(pk, &img->fds[i]);

	PK_U64(pk, "pages_len", img->pages_len);
	PK_BIN(pk, "pages_sha256", img->pages_sha256, 32);
}

static void sha256(const void *p, size_t n, uint8_t out[32])
{
	unsigned int len = 32;
	EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

/* Write a file under a temporary name, fsync it and rename it into place. */
static int write_file_atomic(int dirfd, const char *name, const void *a, size_t alen,
			     const void *b, size_t blen)
{
	char tmp[64];
	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	_cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int r;

	if (fd < 0)
		return -errno;
	r = write_all(fd, a, alen);
	if (r == 0 && b)
		r = write_all(fd, b, blen);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	return r;
}

int image_write(const struct image *img, const char *dir, const char **what)
{
	msgpack_sbuffer sbuf;
	msgpack_packer pk;
	struct image *mut = (struct image *)img;
	int r;

	*what = "create image directory";
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	_cleanup_close_ int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;

	sha256(img->pages, img->pages_len, mut->pages_sha256);
	*what = "write " IMAGE_PAGES_FILE;
	r = write_file_atomic(dirfd, IMAGE_PAGES_FILE, img->pages, img->pages_len, NULL, 0);
	if (r < 0)
		return r;

	msgpack_sbuffer_init(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	pack_core(&pk, img);

	size_t total = HDR_LEN + sbuf.size + 32;
	_cleanup_free_ uint8_t *buf = malloc(total);
	if (!buf) {
		msgpack_sbuffer_destroy(&sbuf);
		return -ENOMEM;
	}
	memcpy(buf, IMAGE_MAGIC, 8);
	uint32_t v = htole32(IMAGE_VERSION), z = 0;
	uint64_t blen = htole64(sbuf.size);
	memcpy(buf + 8, &v, 4);
	memcpy(buf + 12, &z, 4);
	memcpy(buf + 16, &blen, 8);
	memcpy(buf + HDR_LEN, sbuf.data, sbuf.size);
	sha256(buf, HDR_LEN + sbuf.size, buf + HDR_LEN + sbuf.size);
	msgpack_sbuffer_destroy(&sbuf);

	*what = "write " IMAGE_CORE_FILE;
	r = write_file_atomic(dirfd, IMAGE_CORE_FILE, buf, total, NULL, 0);
	if (r < 0)
		return r;
	*what = "sync image directory";
	if (fsync(dirfd) < 0)
		return -errno;
	return 0;
}

/* ---------- reading ---------- */

struct rd {
	char *err;
	size_t errlen;
	bool failed;
};

static void rd_fail(struct rd *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rd_fail(struct rd *rd, const char *fmt, ...)
{
	va_list ap;
	if (rd->failed)
		return;
	rd->failed = true;
	va_start(ap, fmt);
	vsnprintf(rd->err, rd->errlen, fmt, ap);
	va_end(ap);
}

/* The value of KEY in MAP, or NULL: for fields older images lack. */
static const msgpack_object *mp_find(const msgpack_object *map, const char *key)
{
	if (map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	size_t klen = strlen(key);
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];
		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == klen &&
		    memcmp(kv->key.via.str.ptr, key, klen) == 0)
			return &kv->val;
	}
	return NULL;
}

static const msgpack_object *mp_get(struct rd *rd, const msgpack_object *map, const char *key)
{
	if (rd->failed)
		return NULL;
	if (map->type != MSGPACK_OBJECT_MAP) {
		rd_fail(rd, "%s: expected a map holding '%s'", IMAGE_CORE_FILE, key);
		return NULL;
	}
	const msgpack_object *v = mp_find(map, key);
	if (!v)
		rd_fail(rd, "%s: field '%s' is missing", IMAGE_CORE_FILE, key);
	return v;
}

static uint64_t obj_u64(struct rd *rd, const msgpack_object *o, const char *what)
{
	if (!o)
		return 0;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return o->via.u64;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return (uint64_t)o->via.i64;
	rd_fail(rd, "%s: field '%s' is not an integer", IMAGE_CORE_FILE, what);
	return 0;
}

static bool obj_bool(struct rd *rd, const msgpack_object *o, const char *what)
{
	if (!o)
		return false;
	if (o->type == MSGPACK_OBJECT_BOOLEAN)
		return o->via.boolean;
	rd_fail(rd, "%s: field '%s' is not a boolean", IMAGE_CORE_FILE, what);
	return false;
}

static char *obj_str(struct rd *rd, const msgpack_object *o, const char *what)
{
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return NULL;
	if (o->type != MSGPACK_OBJECT_STR) {
		rd_fail(rd, "%s: field '%s' is not a string", IMAGE_CORE_FILE, what);
		return NULL;
	}
	return strndup(o->via.str.ptr, o->via.str.size);
}

/* Copy a bin field; max bounds what an untrusted image may make us allocate. */
static uint8_t *obj_bin(struct rd *rd, const msgpack_object *o, const char *what, uint32_t *len,
			uint32_t max)
{
	*len = 0;
	if (!o)
		return NULL;
	if (o->type != MSGPACK_OBJECT_BIN) {
		rd_fail(rd, "%s: field '%s' is not binary", IMAGE_CORE_FILE, what);
		return NULL;
	}
	if (o->via.bin.size > max) {
		rd_fail(rd, "%s: field '%s' is %u bytes, more than %u", IMAGE_CORE_FILE, what,
			o->via.bin.size, max);
		return NULL;
	}
	if (o->via.bin.size == 0)
		return NULL;
	uint8_t *p = malloc(o->via.bin.size);
	if (p) {
		memcpy(p, o->via.bin.ptr, o->via.bin.size);
		*len = o->via.bin.size;
	}
	return p;
}

static const msgpack_object *obj_array(struct rd *rd, const msgpack_object *o, const char *what,
				       uint32_t want)
{
	if (!o)
		return NULL;
	if (o->type != MSGPACK_OBJECT_ARRAY || (want && o->via.array.size != want)) {
		rd_fail(rd, "%s: field '%s' is not an array of %u", IMAGE_CORE_FILE, what, want);
		return NULL;
	}
	return o;
}

#define GET_U64(rd, m, k) obj_u64(rd, mp_get(rd, m, k), k)
#define GET_BOOL(rd, m, k) obj_bool(rd, mp_get(rd, m, k), k)
#define GET_STR(rd, m, k) obj_str(rd, mp_get(rd, m, k), k)

static void read_mm(struct rd *rd, const msgpack_object *m, struct image_mm *mm)
{
	mm->start_code = GET_U64(rd, m, "start_code");
	mm->end_code = GET_U64(rd, m, "end_code");
	mm->start_data = GET_U64(rd, m, "start_data");
	mm->end_data = GET_U64(rd, m, "end_data");
	mm->start_brk = GET_U64(rd, m, "start_brk");
	mm->brk = GET_U64(rd, m, "brk");
	mm->start_stack = GET_U64(rd, m, "start_stack");
	mm->arg_start = GET_U64(rd, m, "arg_start");
	mm->arg_end = GET_U64(rd, m, "arg_end");
	mm->env_start = GET_U64(rd, m, "env_start");
	mm->env_end = GET_U64(rd, m, "env_end");
	mm->auxv = obj_bin(rd, mp_get(rd, m, "auxv"), "auxv", &mm->auxv_len, 4096);
}

/* Four ids (real, effective, saved, fs) into out[0..3]. */
static void read_ids(struct rd *rd, const msgpack_object *m, const char *key, uint32_t *out[4])
{
	const msgpack_object *a = obj_array(rd, mp_get(rd, m, key), key, 4);
	for (int i = 0; a && i < 4; i++) {
		uint64_t v = obj_u64(rd, &a->via.array.ptr[i], key);
		if (v > UINT32_MAX)
			rd_fail(rd, "%s: field '%s' holds %lu, not an id", IMAGE_CORE_FILE, key,
				(unsigned long)v);
		*out[i] = v;
	}
}

static void read_seccomp(struct rd *rd, const msgpack_object *o, struct image_creds *cr)
{
	const msgpack_object *a = obj_array(rd, o, "seccomp", 0);
	if (!a || rd->failed || !a->via.array.size)
		return;
	if (a->via.array.size > IMAGE_SECCOMP_FILTERS_MAX) {
		rd_fail(rd, "%s: %u seccomp filters, more than %u", IMAGE_CORE_FILE,
			a->via.array.size, IMAGE_SECCOMP_FILTERS_MAX);
		return;
	}
	cr->filters = calloc(a->via.array.size, sizeof(*cr->filters));
	if (!cr->filters) {
		rd_fail(rd, "out of memory");
		return;
	}
	cr->n_filters = a->via.array.size;
	for (uint32_t i = 0; i < cr->n_filters && !rd->failed; i++) {
		struct image_seccomp_filter *f = &cr->filters[i];
		const msgpack_object *e = obj_array(rd, &a->via.array.ptr[i], "seccomp[]", 2);
		if (!e)
			return;
		uint32_t bytes;
		f->flags = obj_u64(rd, &e->via.array.ptr[0], "seccomp flags");
		f->insns = (uint64_t *)obj_bin(rd, &e->via.array.ptr[1], "seccomp filter", &bytes,
					       IMAGE_SECCOMP_INSNS_MAX * 8);
		f->len = bytes / 8;
		if (!rd->failed && (bytes % 8 || !bytes))
			rd_fail(rd, "%s: seccomp filter %u is %u bytes, not whole instructions",
				IMAGE_CORE_FILE, i, bytes);
	}
}

static void read_creds(struct rd *rd, const msgpack_object *m, struct image_creds *cr)
{
	read_ids(rd, m, "uids", (uint32_t *[4]){&cr->uid, &cr->euid, &cr->suid, &cr->fsuid});
	read_ids(rd, m, "gids", (uint32_t *[4]){&cr->gid, &cr->egid, &cr->sgid, &cr->fsgid});
	const msgpack_object *a = obj_array(rd, mp_get(rd, m, "groups"), "groups", 0);
	if (a && a->via.array.size > IMAGE_GROUPS_MAX)
		rd_fail(rd, "%s: %u supplementary groups, more than %u", IMAGE_CORE_FILE,
			a->via.array.size, IMAGE_GROUPS_MAX);
	if (a && !rd->failed && a->via.array.size) {
		cr->groups = calloc(a->via.array.size, sizeof(*cr->groups));
		if (!cr->groups)
			rd_fail(rd, "out of memory");
		for (uint32_t i = 0; cr->groups && i < a->via.array.size; i++)
			cr->groups[i] = obj_u64(rd, &a->via.array.ptr[i], "groups");
		if (cr->groups)
			cr->n_groups = a->via.array.size;
	}
	a = obj_array(rd, mp_get(rd, m, "caps"), "caps", 5);
	uint64_t *caps[] = {&cr->cap_inh, &cr->cap_prm, &cr->cap_eff, &cr->cap_bnd, &cr->cap_amb};
	for (int i = 0; a && i < 5; i++)
		*caps[i] = obj_u64(rd, &a->via.array.ptr[i], "caps");
	cr->securebits = GET_U64(rd, m, "securebits");
	cr->no_new_privs = GET_BOOL(rd, m, "no_new_privs");
	read_seccomp(rd, mp_get(rd, m, "seccomp"), cr);
}

/* Pads the packed XSTATE with the zeros pack_thread left off, back to the
 * size the kernel gave (images written before xstate_size hold it whole). */
static void read_xstate_size(struct rd *rd, const msgpack_object *m, struct image_thread *t)
{
	const msgpack_object *o = mp_find(m, "xstate_size");
	uint64_t size = o ? obj_u64(rd, o, "xstate_size") : t->xstate_len;

	if (rd->failed || size == t->xstate_len)
		return;
	if (size < t->xstate_len || size > IMAGE_XSTATE_MAX) {
		rd_fail(rd, "%s: thread %d: field 'xstate_size' is %" PRIu64
			    ", not between the %u bytes of 'xstate' and %u",
			IMAGE_CORE_FILE, t->tid, size, t->xstate_len, IMAGE_XSTATE_MAX);
		return;
	}
	uint8_t *p = calloc(1, size);
	if (!p) {
		rd_fail(rd, "%s: out of memory for a thread's FPU state", IMAGE_CORE_FILE);
		return;
	}
	if (t->xstate_len)
		memcpy(p, t->xstate, t->xstate_len);
	free(t->xstate);
	t->xstate = p;
	t->xstate_len = size;
}

static void read_thread(struct rd *rd, const msgpack_object *m, struct image_thread *t)
{
	size_t nregs = sizeof(t->regs) / sizeof(uint64_t);
	uint64_t *regs = (uint64_t *)&t->regs;

	t->tid = GET_U64(rd, m, "tid");
	const msgpack_object *a = obj_array(rd, mp_get(rd, m, "regs"), "regs", nregs);
	for (size_t i = 0; a && i < nregs; i++)
		regs[i] = obj_u64(rd, &a->via.array.ptr[i], "regs");
	t->xstate = obj_bin(rd, mp_get(rd, m, "xstate"), "xstate", &t->xstate_len,
			    IMAGE_XSTATE_MAX);
	read_xstate_size(rd, m, t);
	t->sigmask = GET_U64(rd, m, "sigmask");
	t->ss_sp = GET_U64(rd, m, "ss_sp");
	t->ss_size = GET_U64(rd, m, "ss_size");
	t->ss_flags = GET_U64(rd, m, "ss_flags");
	t->clear_tid_addr = GET_U64(rd, m, "clear_tid");
	t->robust_head = GET_U64(rd, m, "robust_head");
	t->robust_len = GET_U64(rd, m, "robust_len");
	t->rseq_addr = GET_U64(rd, m, "rseq_addr");
	a = obj_array(rd, mp_get(rd, m, "rseq"), "rseq", 2);
	if (a) {
		t->rseq_len = obj_u64(rd, &a->via.array.ptr[0], "rseq");
		t->rseq_sig = obj_u64(rd, &a->via.array.ptr[1], "rseq");
	}
	_cleanup_free_ char *comm = GET_STR(rd, m, "comm");
	if (comm)
		snprintf(t->comm, sizeof(t->comm), "%s", comm);
	const msgpack_object *cr = mp_get(rd, m, "creds");
	if (cr)
		read_creds(rd, cr, &t->creds);
}

static void read_fd(struct rd *rd, const msgpack_object *m, struct image_fd *f)
{
	f->fd = GET_U64(rd, m, "fd");
	f->kind = GET_U64(rd, m, "kind");
	f->cloexec = GET_BOOL(rd, m, "cloexec");
	f->flags = GET_U64(rd, m, "flags");
	f->path = GET_STR(rd, m, "path");
	f->pos = GET_U64(rd, m, "pos");
	f->ino = GET_U64(rd, m, "ino");
	f->pipe_write = GET_BOOL(rd, m, "pipe_write");
	f->data = obj_bin(rd, mp_get(rd, m, "data"), "data", &f->data_len, 1 << 20);
	f->count = GET_U64(rd, m, "count");
	f->sk_family = GET_U64(rd, m, "sk_family");
	f->sk_type = GET_U64(rd, m, "sk_type");
	f->sk_proto = GET_U64(rd, m, "sk_proto");
	f->sk_reuseaddr = GET_BOOL(rd, m, "sk_reuseaddr");
	f->sk_v6only = GET_BOOL(rd, m, "sk_v6only");
	const msgpack_object *a = obj_array(rd, mp_get(rd, m, "tfds"), "tfds", 0);
	if (!a || a->via.array.size == 0)
		return;
	f->tfds = calloc(a->via.array.size, sizeof(*f->tfds));
	if (!f->tfds) {
		rd_fail(rd, "out of memory");
		return;
	}
	f->n_tfds = a->via.array.size;
	for (uint32_t i = 0; i < f->n_tfds; i++) {
		const msgpack_object *e = obj_array(rd, &a->via.array.ptr[i], "tfds[]", 3);
		if (!e)
			return;
		f->tfds[i].fd = obj_u64(rd, &e->via.array.ptr[0], "tfd");
		f->tfds[i].events = obj_u64(rd, &e->via.array.ptr[1], "tfd events");
		f->tfds[i].data = obj_u64(rd, &e->via.array.ptr[2], "tfd data");
	}
}

/* Allocate n elements for a table read from the image, bounded by what a process can have. */
static void *rd_table(struct rd *rd, const msgpack_object *a, size_t elem, size_t *n, size_t *cap)
{
	if (!a)
		return NULL;
	*n = *cap = a->via.array.size;
	if (*n == 0)
		return NULL;
	void *p = calloc(*n, elem);
	if (!p)
		rd_fail(rd, "out of memory");
	return p;
}

static void read_sigactions(struct rd *rd, const msgpack_object *root, struct image *img)
{
	const msgpack_object *a = obj_array(rd, mp_get(rd, root, "sigactions"), "sigactions",
					    IMAGE_NSIG);
	for (int i = 0; a && i < IMAGE_NSIG && !rd->failed; i++) {
		const msgpack_object *e = obj_array(rd, &a->via.array.ptr[i], "sigactions[]", 4);
		if (!e)
			break;
		img->sigactions[i].handler = obj_u64(rd, &e->via.array.ptr[0], "sa_handler");
		img->sigactions[i].flags = obj_u64(rd, &e->via.array.ptr[1], "sa_flags");
		img->sigactions[i].restorer = obj_u64(rd, &e->via.array.ptr[2], "sa_restorer");
		img->sigactions[i].mask = obj_u64(rd, &e->via.array.ptr[3], "sa_mask");
	}
}

static void read_process(struct rd *rd, const msgpack_object *root, struct image *img)
{
	const msgpack_object *a;

	img->version = GET_U64(rd, root, "version");
	if (!rd->failed && img->version != IMAGE_VERSION) {
		rd_fail(rd, "process record: unsupported image version %u (this build reads version %u)",
			img->version, IMAGE_VERSION);
		return;
	}
	img->pid = GET_U64(rd, root, "pid");
	img->exe = GET_STR(rd, root, "exe");
	img->cwd = GET_STR(rd, root, "cwd");
	img->umask = GET_U64(rd, root, "umask");
	img->personality = GET_U64(rd, root, "personality");
	a = obj_array(rd, mp_get(rd, root, "rlimits"), "rlimits", RLIM_NLIMITS);
	for (int i = 0; a && i < RLIM_NLIMITS; i++) {
		const msgpack_object *e = obj_array(rd, &a->via.array.ptr[i], "rlimits[]", 2);
		if (!e)
			break;
		img->rlimits[i].rlim_cur = obj_u64(rd, &e->via.array.ptr[0], "rlim_cur");
		img->rlimits[i].rlim_max = obj_u64(rd, &e->via.array.ptr[1], "rlim_max");
	}
	const msgpack_object *mm = mp_get(rd, root, "mm");
	if (mm)
		read_mm(rd, mm, &img->mm);
	read_sigactions(rd, root, img);
	img->dumpable = GET_U64(rd, root, "dumpable");
	a = obj_array(rd, mp_get(rd, root, "clocks"), "clocks", 3);
	int64_t *clk[] = {&img->clocks.monotonic, &img->clocks.boottime, &img->clocks.realtime};
	for (int i = 0; a && i < 3; i++)
		*clk[i] = obj_u64(rd, &a->via.array.ptr[i], "clocks");
}

static void read_core(struct rd *rd, const msgpack_object *root, struct image *img)
{
	const msgpack_object *a;

	const msgpack_object *proc = mp_get(rd, root, "process");
	if (proc)
		read_process(rd, proc, img);
	img->exe_file = GET_U64(rd, root, "exe_file");

	a = obj_array(rd, mp_get(rd, root, "files"), "files", 0);
	img->files = rd_table(rd, a, sizeof(*img->files), &img->n_files, &img->cap_files);
	for (size_t i = 0; img->files && i < img->n_files && !rd->failed; i++) {
		const msgpack_object *e = obj_array(rd, &a->via.array.ptr[i], "files[]", 3);
		if (!e)
			break;
		uint32_t hl;
		_cleanup_free_ uint8_t *h = NULL;
		img->files[i].path = obj_str(rd, &e->via.array.ptr[0], "file path");
		img->files[i].size = obj_u64(rd, &e->via.array.ptr[1], "file size");
		h = obj_bin(rd, &e->via.array.ptr[2], "file sha256", &hl, 32);
		if (!rd->failed && (hl != 32 || !img->files[i].path))
			rd_fail(rd, "%s: file entry %zu is malformed", IMAGE_CORE_FILE, i);
		else if (h)
			memcpy(img->files[i].sha256, h, 32);
	}

	a = obj_array(rd, mp_get(rd, root, "vmas"), "vmas", 0);
	img->vmas = rd_table(rd, a, sizeof(*img->vmas), &img->n_vmas, &img->cap_vmas);
	for (size_t i = 0; img->vmas && i < img->n_vmas && !rd->failed; i++) {
		const msgpack_object *e = obj_array(rd, &a->via.array.ptr[i], "vmas[]", 7);
		if (!e)
			break;
		struct image_vma *v = &img->vmas[i];
		v->start = obj_u64(rd, &e->via.array.ptr[0], "vma start");
		v->end = obj_u64(rd, &e->via.array.ptr[1], "vma end");
		v->prot = obj_u64(rd, &e->via.array.ptr[2], "vma prot");
		v->kind = obj_u64(rd, &e->via.array.ptr[3], "vma kind");
		v->shared = obj_bool(rd, &e->via.array.ptr[4], "vma shared");
		v->pgoff = obj_u64(rd, &e->via.array.ptr[5], "vma pgoff");
		v->file = obj_u64(rd, &e->via.array.ptr[6], "vma file");
	}

	a = obj_array(rd, mp_get(rd, root, "runs"), "runs", 0);
	img->runs = rd_table(rd, a, sizeof(*img->runs), &img->n_runs, &img->cap_runs);
	for (size_t i = 0; img->runs && i < img->n_runs && !rd->failed; i++) {
		const msgpack_object *e = obj_array(rd, &a->via.array.ptr[i], "runs[]", 3);
		if (!e)
			break;
		img->runs[i].addr = obj_u64(rd, &e->via.array.ptr[0], "run addr");
		img->runs[i].npages = obj_u64(rd, &e->via.array.ptr[1], "run npages");
		img->runs[i].offset = obj_u64(rd, &e->via.array.ptr[2], "run offset");
	}

	a = obj_array(rd, mp_get(rd, root, "threads"), "threads", 0);
	img->threads = rd_table(rd, a, sizeof(*img->threads), &img->n_threads, &img->cap_threads);
	for (size_t i = 0; img->threads && i < img->n_threads && !rd->failed; i++)
		read_thread(rd, &a->via.array.ptr[i], &img->threads[i]);

	a = obj_array(rd, mp_get(rd, root, "fds"), "fds", 0);
	img->fds = rd_table(rd, a, sizeof(*img->fds), &img->n_fds, &img->cap_fds);
	for (size_t i = 0; img->fds && i < img->n_fds && !rd->failed; i++)
		read_fd(rd, &a->via.array.ptr[i], &img->fds[i]);

	img->pages_len = GET_U64(rd, root, "pages_len");
	uint32_t hl;
	_cleanup_free_ uint8_t *h =
		obj_bin(rd, mp_get(rd, root, "pages_sha256"), "pages_sha256", &hl, 32);
	if (h && hl == 32)
		memcpy(img->pages_sha256, h, 32);
	else
		rd_fail(rd, "%s: pages checksum is missing", IMAGE_CORE_FILE);
}

/* Cross-check references inside the image, so restore can index without bounds worries. */
static void check_core(struct rd *rd, const struct image *img)
{
	for (size_t i = 0; i < img->n_vmas && !rd->failed; i++) {
		const struct image_vma *v = &img->vmas[i];
		if (v->start >= v->end || (v->start | v->end) & (PAGE_SIZE - 1) ||
		    v->end > (1ULL << 47) + PAGE_SIZE * 0x100000ULL)
			rd_fail(rd, "%s: mapping %zu has bad bounds %#lx-%#lx", IMAGE_CORE_FILE, i,
				(unsigned long)v->start, (unsigned long)v->end);
		if (v->file != -1 && (v->file < 0 || (size_t)v->file >= img->n_files))
			rd_fail(rd, "%s: mapping %zu names file %d of %zu", IMAGE_CORE_FILE, i,
				v->file, img->n_files);
	}
	for (size_t i = 0; i < img->n_runs && !rd->failed; i++) {
		const struct image_pagerun *r = &img->runs[i];
		if (r->npages > img->pages_len / PAGE_SIZE ||
		    r->offset > img->pages_len - r->npages * PAGE_SIZE)
			rd_fail(rd, "%s: page run %zu points outside %s", IMAGE_CORE_FILE, i,
				IMAGE_PAGES_FILE);
	}
	if (!rd->failed && (img->exe_file < 0 || (size_t)img->exe_file >= img->n_files || !img->exe))
		rd_fail(rd, "%s: no executable recorded", IMAGE_CORE_FILE);
	if (!rd->failed && img->n_threads == 0)
		rd_fail(rd, "%s: no threads recorded", IMAGE_CORE_FILE);
	for (size_t i = 0; i < img->n_threads && !rd->failed; i++)
		if (img->threads[i].xstate_len && img->threads[i].xstate_len < 512)
			rd_fail(rd, "%s: thread %d has a short FPU state", IMAGE_CORE_FILE,
				img->threads[i].tid);
	if (!rd->failed && (img->dumpable < 0 || img->dumpable > 2))
		rd_fail(rd, "%s: field 'dumpable' is %d, expected 0, 1 or 2", IMAGE_CORE_FILE,
			img->dumpable);
}

/*
 * msgpack-c allocates a container's element table from its header alone, so
 * five bytes claiming 2^32 elements cost a 64 GiB allocation before any
 * element is read (found by fuzz/fuzz_image.c). Every element promised
 * needs at least one byte of its own, so walk the headers first and refuse
 * a body whose promises its remaining bytes cannot keep: msgpack-c then
 * never allocates more than 16 bytes per body byte. NULL if plausible, else
 * what is wrong.
 */
static uint64_t be_n(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static const char *msgpack_implausible(const uint8_t *p, size_t n)
{
	uint64_t owed = 1; /* objects still to come */
	size_t off = 0;

	while (owed) {
		uint8_t b;
		size_t hdr = 1, lenb = 0;
		uint64_t skip = 0, children = 0;

		if (off >= n)
			return "it ends inside an object";
		b = p[off];
		if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
			;
		else if (b >= 0x80 && b <= 0x8f)
			children = 2 * (b & 0x0f);
		else if (b >= 0x90 && b <= 0x9f)
			children = b & 0x0f;
		else if (b >= 0xa0 && b <= 0xbf)
			skip = b & 0x1f;
		else if (b >= 0xc4 && b <= 0xc6) /* bin 8/16/32 */
			lenb = 1u << (b - 0xc4);
		else if (b >= 0xc7 && b <= 0xc9) /* ext 8/16/32 */
			lenb = 1u << (b - 0xc7), skip = 1;
		else if (b == 0xca || b == 0xcb)
			skip = b == 0xca ? 4 : 8;
		else if (b >= 0xcc && b <= 0xd3) /* (u)int 8..64 */
			skip = 1u << ((b - 0xcc) & 3);
		else if (b >= 0xd4 && b <= 0xd8) /* fixext 1..16 */
			skip = 1 + (1u << (b - 0xd4));
		else if (b >= 0xd9 && b <= 0xdb) /* str 8/16/32 */
			lenb = 1u << (b - 0xd9);
		else if (b == 0xdc || b == 0xdd || b == 0xde || b == 0xdf)
			lenb = b & 1 ? 4 : 2;
		else
			return "it holds an invalid byte";
		hdr += lenb;
		if (hdr > n - off)
			return "it ends inside a header";
		if (b >= 0xdc)
			children = be_n(p + off + 1, lenb) * (b >= 0xde ? 2 : 1);
		else if (lenb)
			skip += be_n(p + off + 1, lenb);
		off += hdr;
		if (skip > n - off)
			return "a string or binary is longer than the rest of it";
		off += skip;
		owed = owed - 1 + children;
		if (owed > n - off)
			return "an array or map claims more elements than the rest of it could hold";
	}
	return NULL;
}

static int read_core_file(const char *dir, struct image *img, struct rd *rd)
{
	char path[4096];
	_cleanup_free_ char *buf = NULL;
	uint8_t sum[32];
	ssize_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, IMAGE_CORE_FILE);
	n = read_file(path, &buf);
	if (n < 0) {
		rd_fail(rd, "cannot read %s: %s", path, strerror(-n));
		return n;
	}
	if (n < HDR_LEN + 32 || memcmp(buf, IMAGE_MAGIC, 8) != 0) {
		rd_fail(rd, "%s: not a CheckSync image (bad magic or too short: %zd bytes)", path, n);
		return -EINVAL;
	}
	uint32_t version;
	uint64_t blen;
	memcpy(&version, buf + 8, 4);
	memcpy(&blen, buf + 16, 8);
	version = le32toh(version);
	blen = le64toh(blen);
	if (version != IMAGE_VERSION) {
		rd_fail(rd, "%s: unsupported image version %u (this build reads version %u)", path,
			version, IMAGE_VERSION);
		return -EPROTO;
	}
	if (blen != (uint64_t)n - HDR_LEN - 32) {
		rd_fail(rd, "%s: truncated or padded: header says %lu body bytes, file has %zd", path,
			(unsigned long)blen, n - HDR_LEN - 32);
		return -EBADMSG;
	}
	sha256(buf, HDR_LEN + blen, sum);
	if (memcmp(sum, buf + HDR_LEN + blen, 32) != 0) {
		rd_fail(rd, "%s: checksum mismatch, the image is corrupt", path);
		return -EBADMSG;
	}

	msgpack_unpacked up;
	size_t off = 0;
	const char *bad = msgpack_implausible((const uint8_t *)buf + HDR_LEN, blen);
	if (bad) {
		rd_fail(rd, "%s: the body is not valid msgpack: %s", path, bad);
		return -EBADMSG;
	}
	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, buf + HDR_LEN, blen, &off) != MSGPACK_UNPACK_SUCCESS ||
	    off != blen) {
		msgpack_unpacked_destroy(&up);
		rd_fail(rd, "%s: body does not decode as one msgpack object", path);
		return -EBADMSG;
	}
	read_core(rd, &up.data, img);
	msgpack_unpacked_destroy(&up);
	if (!rd->failed)
		check_core(rd, img);
	return rd->failed ? -EBADMSG : 0;
}

static int read_pages_file(const char *dir, struct image *img, struct rd *rd)
{
	char path[4096];
	struct stat st;
	uint8_t sum[32];

	snprintf(path, sizeof(path), "%s/%s", dir, IMAGE_PAGES_FILE);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rd_fail(rd, "cannot read %s: %m", path);
		return -errno;
	}
	if ((uint64_t)st.st_size != img->pages_len) {
		rd_fail(rd, "%s: has %ld bytes, the image records %lu (truncated?)", path,
			(long)st.st_size, (unsigned long)img->pages_len);
		return -EBADMSG;
	}
	if (img->pages_len) {
		void *p = mmap(NULL, img->pages_len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
		if (p == MAP_FAILED) {
			rd_fail(rd, "cannot map %s: %m", path);
			return -errno;
		}
		img->pages = p;
		img->pages_mapped = true;
	}
	sha256(img->pages, img->pages_len, sum);
	if (memcmp(sum, img->pages_sha256, 32) != 0) {
		rd_fail(rd, "%s: checksum mismatch, the page data is corrupt", path);
		return -EBADMSG;
	}
	return 0;
}

int image_read(const char *dir, struct image **out, char *err, size_t errlen)
{
	struct rd rd = {.err = err, .errlen = errlen};
	_cleanup_image_ struct image *img = image_new();
	int r;

	if (!img)
		return -ENOMEM;
	r = read_core_file(dir, img, &rd);
	if (r < 0)
		return r;
	r = read_pages_file(dir, img, &rd);
	if (r < 0)
		return r;
	*out = TAKE_PTR(img);
	return 0;
}

uint64_t image_size_on_disk(const char *dir)
{
	const char *names[] = {IMAGE_CORE_FILE, IMAGE_PAGES_FILE};
	uint64_t total = 0;
	char path[4096];
	struct stat st;

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0)
			total += st.st_size;
	}
	return total;
}

/* ---------- sections, for replication ---------- */

static int pack_section(msgpack_sbuffer *sb, void (*fn)(msgpack_packer *, const void *),
			const void *arg)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	fn(&pk, arg);
	return 0;
}

static void pack_process_cb(msgpack_packer *pk, const void *img)
{
	pack_process(pk, img);
}

static void pack_thread_cb(msgpack_packer *pk, const void *t)
{
	pack_thread(pk, t);
}

static void pack_fds_cb(msgpack_packer *pk, const void *p)
{
	const struct image *img = p;
	msgpack_pack_array(pk, img->n_fds);
	for (size_t i = 0; i < img->n_fds; i++)
		pack_fd(pk, &img->fds[i]);
}

int image_pack_process(const struct image *img, msgpack_sbuffer *sb)
{
	return pack_section(sb, pack_process_cb, img);
}

int image_pack_thread(const struct image_thread *t, msgpack_sbuffer *sb)
{
	return pack_section(sb, pack_thread_cb, t);
}

int image_pack_fds(const struct image *img, msgpack_sbuffer *sb)
{
	return pack_section(sb, pack_fds_cb, img);
}

/* Decode one msgpack object that must fill [p, p+n) exactly, and run fn on it. */
static int unpack_section(const void *p, size_t n, const char *what, char *err, size_t errlen,
			  void (*fn)(struct rd *, const msgpack_object *, void *), void *arg)
{
	struct rd rd = {.err = err, .errlen = errlen};
	msgpack_unpacked up;
	size_t off = 0;

	const char *bad = msgpack_implausible(p, n);

	if (bad) {
		snprintf(err, errlen, "%s record is not valid msgpack: %s", what, bad);
		return -EBADMSG;
	}
	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, p, n, &off) != MSGPACK_UNPACK_SUCCESS || off != n) {
		msgpack_unpacked_destroy(&up);
		snprintf(err, errlen, "%s record does not decode as one msgpack object", what);
		return -EBADMSG;
	}
	fn(&rd, &up.data, arg);
	msgpack_unpacked_destroy(&up);
	return rd.failed ? -EBADMSG : 0;
}

static void unpack_process_cb(struct rd *rd, const msgpack_object *o, void *img)
{
	read_process(rd, o, img);
}

static void unpack_thread_cb(struct rd *rd, const msgpack_object *o, void *t)
{
	read_thread(rd, o, t);
}

static void unpack_fds_cb(struct rd *rd, const msgpack_object *o, void *p)
{
	struct image *img = p;
	const msgpack_object *a = obj_array(rd, o, "fds", 0);
	img->fds = rd_table(rd, a, sizeof(*img->fds), &img->n_fds, &img->cap_fds);
	for (size_t i = 0; img->fds && i < img->n_fds && !rd->failed; i++)
		read_fd(rd, &a->via.array.ptr[i], &img->fds[i]);
}

int image_unpack_process(struct image *img, const void *p, size_t n, char *err, size_t errlen)
{
	return unpack_section(p, n, "process", err, errlen, unpack_process_cb, img);
}

int image_unpack_thread(struct image_thread *t, const void *p, size_t n, char *err,
			size_t errlen)
{
	return unpack_section(p, n, "thread", err, errlen, unpack_thread_cb, t);
}

int image_unpack_fds(struct image *img, const void *p, size_t n, char *err, size_t errlen)
{
	return unpack_section(p, n, "fds", err, errlen, unpack_fds_cb, img);
}

int image_validate(const struct image *img, char *err, size_t errlen)
{
	struct rd rd = {.err = err, .errlen = errlen};
	check_core(&rd, img);
	return rd.failed ? -EBADMSG : 0;
}
