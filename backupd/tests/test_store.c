/*
 * test_store.c - the warm image and its journal, in process: epochs are
 * fed to store.c as a primary would make them (tclient.c), and the journal
 * writes them with its real thread and compaction child into a temporary
 * directory, which is then read back.
 *
 * What must hold: a full epoch replaces, a delta overwrites by address;
 * pages no private mapping covers are dropped; an epoch whose base is not
 * ours, whose checksum differs or that lacks a section changes nothing; a
 * torn epoch changes nothing; what the journal wrote loads back the same,
 * a torn last file is dropped, a corrupt middle one is set aside with
 * those after it, and compaction leaves one .full that loads the same.
 */
#include <dirent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "journal.h"
#include "log.h"
#include "store.h"
#include "tclient.h"
#include "unit.h"
#include "util.h"

#define ANON 0x10000000ull   /* the synthetic image's private mapping, 64 pages */
#define SHARED 0x20000000ull /* its shared one */
#define NOWHERE 0x30000000ull

static struct image *img;

/* ---------- pages ---------- */

struct pages {
	struct tc_run runs[8];
	size_t n;
	uint8_t *bufs[8];
};

/* npages pages at addr, each filled with a byte that says its page and tag. */
static void add_run(struct pages *p, uint64_t addr, uint64_t npages, uint8_t tag)
{
	uint8_t *b = malloc(npages * PAGE_SIZE);

	for (uint64_t i = 0; i < npages; i++)
		memset(b + i * PAGE_SIZE, (uint8_t)(((addr >> 12) + i) ^ tag), PAGE_SIZE);
	p->bufs[p->n] = b;
	p->runs[p->n++] = (struct tc_run){addr, npages, b};
}

static void pages_free(struct pages *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->bufs[i]);
	p->n = 0;
}

static uint8_t expect_byte(uint64_t addr, uint8_t tag) { return (uint8_t)((addr >> 12) ^ tag); }

/* The first byte of the page at addr in the store, or -1 if it holds none. */
static int byte_at(struct store *s, uint64_t addr)
{
	struct image view;
	int b = -1;

	if (store_build_image(s, &view) < 0)
		return -2;
	for (size_t i = 0; i < view.n_runs; i++)
		if (addr >= view.runs[i].addr &&
		    addr < view.runs[i].addr + view.runs[i].npages * PAGE_SIZE)
			b = view.pages[view.runs[i].offset + (addr - view.runs[i].addr)];
	store_release_image(&view);
	return b;
}

/* ---------- feeding epochs into a store ---------- */

struct feeder {
	struct store *s;
	struct store_epoch *e;
	struct wire_epoch_hash own; /* COMMIT's checksum over what was really fed */
	msgpack_sbuffer *record;
	bool skip_threads, bad_checksum, stop_before_commit;
	bool sha256; /* COMMIT as protocol version 2 made it */
	bool stepped; /* COMMIT through store_commit_begin(), the merge left to the caller */
	char err[512];
};

static int feed_one(const struct wire_msg *m, void *arg)
{
	struct feeder *f = arg;
	struct wire_commit c;
	int r;

	if (f->skip_threads && m->type == WIRE_THREADS)
		return 0;
	if (m->type == WIRE_COMMIT && f->stop_before_commit)
		return 1;
	if (m->type != WIRE_COMMIT)
		wire_epoch_hash_add(&f->own, m);
	if (f->record && m->type != WIRE_COMMIT)
		wire_pack(f->record, m);
	switch (m->type) {
	case WIRE_EPOCH_BEGIN:
		r = store_epoch_begin(f->s, &m->epoch_begin, &f->e, f->err, sizeof(f->err));
		return r == 0 && f->sha256 ? store_epoch_hash_sha256(f->e) : r;
	case WIRE_COMMIT:
		wire_epoch_hash_final(&f->own, &c);
		if (f->bad_checksum)
			c.sum[5] ^= 1;
		if (f->record)
			wire_pack(f->record, &(struct wire_msg){.type = WIRE_COMMIT, .commit = c});
		if (f->stepped) {
			r = store_commit_begin(f->s, f->e, &c, f->err, sizeof(f->err));
			if (r >= 0)
				f->e = NULL; /* the store's now */
			return r;
		}
		r = store_epoch_commit(f->s, f->e, &c, f->err, sizeof(f->err));
		store_epoch_free(f->e);
		f->e = NULL;
		return r;
	default:
		return store_epoch_add(f->e, m, f->err, sizeof(f->err));
	}
}

static int feed_with(struct feeder *f, const struct image *meta, uint64_t epoch, uint64_t base,
		     const struct pages *p)
{
	int r;

	if (f->sha256)
		wire_epoch_hash_init_sha256(&f->own);
	else
		wire_epoch_hash_init(&f->own);
	r = t_epoch_each(meta, epoch, base, p->runs, p->n, feed_one, f);
	if (f->e) /* torn: dropped like a connection that died */
		store_epoch_free(f->e);
	f->e = NULL;
	wire_epoch_hash_done(&f->own);
	return r;
}

static int feed(struct store *s, uint64_t epoch, uint64_t base, const struct pages *p,
		msgpack_sbuffer *record)
{
	struct feeder f = {.s = s, .record = record};
	int r = feed_with(&f, img, epoch, base, p);

	if (r < 0)
		fprintf(stderr, "feed epoch %" PRIu64 ": %s\n", epoch, f.err);
	return r;
}

/* ---------- the store ---------- */

static void test_apply(void)
{
	_cleanup_store_ struct store *s = store_new();
	struct pages p = {0};
	struct image view;

	/* Full epoch: shared and unmapped pages are dropped. */
	add_run(&p, ANON, 8, 1);
	add_run(&p, SHARED, 2, 1);
	add_run(&p, NOWHERE, 1, 1);
	CHECK_INT(feed(s, 1, 0, &p, NULL), 0);
	CHECK_INT(store_epoch(s), 1);
	CHECK_INT(store_npages(s), 8);
	CHECK_INT(byte_at(s, ANON + 3 * PAGE_SIZE), expect_byte(ANON + 3 * PAGE_SIZE, 1));
	CHECK_INT(byte_at(s, SHARED), -1);
	CHECK_INT(byte_at(s, NOWHERE), -1);
	pages_free(&p);

	/* A delta overwrites one page and adds another; the rest stays. */
	add_run(&p, ANON + 2 * PAGE_SIZE, 1, 2);
	add_run(&p, ANON + 20 * PAGE_SIZE, 1, 2);
	CHECK_INT(feed(s, 2, 1, &p, NULL), 0);
	CHECK_INT(store_npages(s), 9);
	CHECK_INT(byte_at(s, ANON + 2 * PAGE_SIZE), expect_byte(ANON + 2 * PAGE_SIZE, 2));
	CHECK_INT(byte_at(s, ANON + 1 * PAGE_SIZE), expect_byte(ANON + 1 * PAGE_SIZE, 1));
	CHECK_INT(byte_at(s, ANON + 20 * PAGE_SIZE), expect_byte(ANON + 20 * PAGE_SIZE, 2));
	pages_free(&p);

	/* Runs for restore: sorted, adjacent pages merged, and the whole passes image_validate. */
	CHECK_INT(store_build_image(s, &view), 0);
	CHECK_INT(view.n_runs, 2);
	CHECK_INT(view.runs[0].addr, ANON);
	CHECK_INT(view.runs[0].npages, 8);
	CHECK_INT(view.runs[1].addr, ANON + 20 * PAGE_SIZE);
	CHECK_INT(view.pages_len, 9 * PAGE_SIZE);
	char err[256];
	CHECK_INT(image_validate(&view, err, sizeof(err)), 0);
	CHECK_STR(view.exe, "/bin/true");
	store_release_image(&view);

	/* The mapping shrinks to 4 pages: pages past its end go. */
	img->vmas[1].end = ANON + 4 * PAGE_SIZE;
	CHECK_INT(feed(s, 3, 2, &p, NULL), 0);
	img->vmas[1].end = ANON + 64 * PAGE_SIZE;
	CHECK_INT(store_npages(s), 4);
	CHECK_INT(byte_at(s, ANON + 20 * PAGE_SIZE), -1);
	CHECK_INT(store_meta(s)->vmas[1].end, ANON + 4 * PAGE_SIZE);

	/* Another full image replaces everything. */
	add_run(&p, ANON + 40 * PAGE_SIZE, 2, 3);
	CHECK_INT(feed(s, 1, 0, &p, NULL), 0);
	CHECK_INT(store_epoch(s), 1);
	CHECK_INT(store_npages(s), 2);
	CHECK_INT(byte_at(s, ANON), -1);
	pages_free(&p);
}

/*
 * A large epoch merged in steps: until the swap the store is the epoch
 * before, whole (its epoch, its pages); then the same as a commit at once.
 * store_build_image() finishes a merge under way: a takeover restores the
 * verified epoch.
 */
#define BIG 9000u /* pages: more than two merge batches */
static void test_stepped_commit(void)
{
	_cleanup_store_ struct store *s = store_new();
	struct pages p = {0};
	struct feeder f = {.s = s, .stepped = true};
	size_t steps = 0;

	img->vmas[1].end = ANON + (BIG + 64) * PAGE_SIZE;
	add_run(&p, ANON, 4, 1);
	CHECK_INT(feed(s, 1, 0, &p, NULL), 0);
	pages_free(&p);

	add_run(&p, ANON + 2 * PAGE_SIZE, BIG, 2);
	CHECK_INT(feed_with(&f, img, 2, 1, &p), 0);
	CHECK(store_committing(s));
	while (!store_commit_step(s, 0)) {
		/* One epoch or the other, whole; the old pages are freed after the swap. */
		if (store_epoch(s) == 1)
			steps++;
		else
			CHECK_INT(store_npages(s), BIG + 2);
		CHECK_INT(store_npages(s), store_epoch(s) == 1 ? 4 : BIG + 2);
	}
	CHECK(steps >= 2);
	CHECK(!store_committing(s));
	CHECK_INT(store_epoch(s), 2);
	CHECK_INT(store_npages(s), BIG + 2);
	CHECK_INT(byte_at(s, ANON + 1 * PAGE_SIZE), expect_byte(ANON + 1 * PAGE_SIZE, 1));
	CHECK_INT(byte_at(s, ANON + (BIG + 1) * PAGE_SIZE),
		  expect_byte(ANON + (BIG + 1) * PAGE_SIZE, 2));
	pages_free(&p);

	/* A full epoch begun and not stepped: building the image finishes it. */
	add_run(&p, ANON + 7 * PAGE_SIZE, 1, 3);
	CHECK_INT(feed_with(&f, img, 3, 0, &p), 0);
	CHECK(store_committing(s));
	CHECK_INT(byte_at(s, ANON + 7 * PAGE_SIZE), expect_byte(ANON + 7 * PAGE_SIZE, 3));
	CHECK(!store_committing(s));
	CHECK_INT(store_epoch(s), 3);
	CHECK_INT(store_npages(s), 1);
	pages_free(&p);
	img->vmas[1].end = ANON + 64 * PAGE_SIZE;
}

static void test_refusals(void)
{
	_cleanup_store_ struct store *s = store_new();
	struct pages p = {0};
	struct store_epoch *e = NULL;
	char err[256];

	add_run(&p, ANON, 4, 1);
	CHECK_INT(feed(s, 3, 0, &p, NULL), 0);
	pages_free(&p);
	add_run(&p, ANON, 4, 9);

	/* A delta on an epoch we do not have. */
	struct wire_epoch_begin b = {.epoch = 5, .base_epoch = 4};
	CHECK_INT(store_epoch_begin(s, &b, &e, err, sizeof(err)), -ESTALE);
	CHECK_STR(err, "base epoch 4, have 3");

	/* A checksum that differs: nothing applied. */
	struct feeder f = {.s = s, .bad_checksum = true};
	CHECK_INT(feed_with(&f, img, 4, 3, &p), -EBADMSG);
	CHECK_CONTAINS(f.err, "checksum");
	CHECK_INT(store_epoch(s), 3);
	CHECK_INT(byte_at(s, ANON), expect_byte(ANON, 1));

	/* An epoch without THREADS is not a restorable image. */
	f = (struct feeder){.s = s, .skip_threads = true};
	CHECK_INT(feed_with(&f, img, 4, 3, &p), -EBADMSG);
	CHECK_CONTAINS(f.err, "no THREADS");
	CHECK_INT(store_epoch(s), 3);

	/* Torn: everything but the COMMIT arrived. */
	f = (struct feeder){.s = s, .stop_before_commit = true};
	CHECK_INT(feed_with(&f, img, 4, 3, &p), 1);
	CHECK_INT(store_epoch(s), 3);
	CHECK_INT(byte_at(s, ANON), expect_byte(ANON, 1));

	/* And then the same epoch whole goes through. */
	CHECK_INT(feed(s, 4, 3, &p, NULL), 0);
	CHECK_INT(byte_at(s, ANON), expect_byte(ANON, 9));
	pages_free(&p);
}

/* ---------- store_pack_full ---------- */

static int collect(const void *p, size_t n, void *arg)
{
	msgpack_sbuffer *sb = arg;
	return msgpack_sbuffer_write(sb, p, n) == 0 ? 0 : -ENOMEM;
}

static void test_pack_full(void)
{
	_cleanup_store_ struct store *s = store_new(), *s2 = store_new();
	_cleanup_wire_decoder_ struct wire_decoder *dec = wire_decoder_new();
	struct store_epoch *e = NULL;
	struct pages p = {0};
	msgpack_sbuffer sb;
	struct wire_msg m;
	char err[256];
	int r, n = 0;

	add_run(&p, ANON, 5, 1);
	add_run(&p, ANON + 10 * PAGE_SIZE, 3, 1);
	CHECK_INT(feed(s, 7, 0, &p, NULL), 0);
	pages_free(&p);
	msgpack_sbuffer_init(&sb);
	CHECK_INT(store_pack_full(s, collect, &sb), 0);
	wire_decoder_feed(dec, sb.data, sb.size);
	while ((r = wire_decoder_next(dec, &m, err, sizeof(err))) == 1) {
		n++;
		if (m.type == WIRE_EPOCH_BEGIN)
			r = store_epoch_begin(s2, &m.epoch_begin, &e, err, sizeof(err));
		else if (m.type == WIRE_COMMIT)
			r = store_epoch_commit(s2, e, &m.commit, err, sizeof(err));
		else
			r = store_epoch_add(e, &m, err, sizeof(err));
		CHECK_INT(r, 0);
	}
	CHECK_INT(r, 0);
	CHECK_INT(n, 7); /* BEGIN, MAPPINGS, THREADS, FDS, 2 x PAGES, COMMIT */
	if (e)
		store_epoch_free(e);
	msgpack_sbuffer_destroy(&sb);
	CHECK_INT(store_epoch(s2), 7);
	CHECK_INT(store_npages(s2), 8);
	CHECK_INT(byte_at(s2, ANON + 11 * PAGE_SIZE), expect_byte(ANON + 11 * PAGE_SIZE, 1));
}

/* ---------- the journal ---------- */

static struct event_base *base;
static int done_count, done_fail;

static void on_done(int r, uint64_t epoch, void *arg)
{
	(void)epoch, (void)arg;
	done_count++;
	if (r < 0)
		done_fail++;
}

static void run_loop_until(bool (*cond)(void *), void *arg, int ms)
{
	uint64_t deadline = t_now_ms() + ms;

	while (!cond(arg) && t_now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
}

static bool all_done(void *arg) { return done_count >= *(int *)arg; }

/* Commit an epoch into s and hand its record to the journal. */
static void commit_and_journal(struct journal *j, struct store *s, uint64_t epoch, uint64_t b,
			       const struct pages *p)
{
	msgpack_sbuffer rec;

	msgpack_sbuffer_init(&rec);
	CHECK_INT(feed(s, epoch, b, p, &rec), 0);
	CHECK_INT(journal_append(j, epoch, b, &rec, on_done, NULL), 0);
	msgpack_sbuffer_destroy(&rec);
}

static int count_files(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d))) {
		size_t l = strlen(de->d_name), sl = strlen(suffix);
		if (l > sl && strcmp(de->d_name + l - sl, suffix) == 0)
			n++;
	}
	if (d)
		closedir(d);
	return n;
}

/* The file of sequence number seq. */
static const char *seq_file(const char *dir, uint64_t seq, const char *kind)
{
	char name[64];
	snprintf(name, sizeof(name), "%020" PRIu64 ".%s", seq, kind);
	return t_path(dir, name);
}

static void reopen(struct journal_writer *w, const char *dir, struct journal **j, struct store **s)
{
	if (*j)
		journal_free(*j);
	if (*s)
		store_free(*s);
	*j = NULL;
	*s = NULL;
	CHECK_INT(journal_open(w, dir, "svc", j, s), 0);
}

static void test_journal(const char *tmp)
{
	const char *dir = t_path(tmp, "svc");
	struct journal_writer *w = NULL;
	struct journal *j = NULL;
	struct store *s = NULL;
	struct pages p = {0};
	int want = 0;

	CHECK_INT(journal_writer_new(base, &w), 0);
	reopen(w, dir, &j, &s);
	CHECK_INT(store_epoch(s), 0);

	/* seq 1: full epoch 1; seq 2..5: deltas 2..5, each rewriting page k with tag k. */
	add_run(&p, ANON, 16, 1);
	commit_and_journal(j, s, 1, 0, &p);
	pages_free(&p);
	for (uint64_t e = 2; e <= 5; e++) {
		add_run(&p, ANON + e * PAGE_SIZE, 1, e);
		commit_and_journal(j, s, e, e - 1, &p);
		pages_free(&p);
	}
	want = 5;
	run_loop_until(all_done, &want, 10000);
	CHECK_INT(done_count, 5);
	CHECK_INT(done_fail, 0);
	CHECK_INT(journal_durable_epoch(j), 5);
	CHECK_INT(count_files(dir, ".full"), 1);
	CHECK_INT(count_files(dir, ".delta"), 4);

	/* What was written loads back the same. */
	reopen(w, dir, &j, &s);
	CHECK_INT(store_epoch(s), 5);
	CHECK_INT(store_npages(s), 16);
	CHECK_INT(byte_at(s, ANON + 4 * PAGE_SIZE), expect_byte(ANON + 4 * PAGE_SIZE, 4));
	CHECK_INT(byte_at(s, ANON + 9 * PAGE_SIZE), expect_byte(ANON + 9 * PAGE_SIZE, 1));

	/* A torn last delta (epoch 5, seq 5) is dropped: back to epoch 4. */
	CHECK_INT(truncate(seq_file(dir, 5, "delta"), 100), 0);
	reopen(w, dir, &j, &s);
	CHECK_INT(store_epoch(s), 4);
	CHECK_INT(byte_at(s, ANON + 5 * PAGE_SIZE), expect_byte(ANON + 5 * PAGE_SIZE, 1));
	CHECK(access(seq_file(dir, 5, "delta"), F_OK) < 0);

	/* A corrupt middle one (epoch 3, seq 3): it and those after it are set aside. */
	int fd = open(seq_file(dir, 3, "delta"), O_RDWR);
	CHECK(fd >= 0);
	CHECK_INT(pwrite(fd, "\xff\xff\xff\xff", 4, 2000), 4);
	close(fd);
	reopen(w, dir, &j, &s);
	CHECK_INT(store_epoch(s), 2);
	CHECK_INT(count_files(dir, ".corrupt"), 2);
	CHECK_INT(count_files(dir, ".delta"), 1);

	/* New epochs go on from there, numbered after the set-aside files. */
	add_run(&p, ANON, 1, 7);
	commit_and_journal(j, s, 3, 2, &p);
	pages_free(&p);
	want = done_count + 1;
	run_loop_until(all_done, &want, 10000);
	CHECK(access(seq_file(dir, 5, "delta"), F_OK) ==
	      0); /* 5 was free again: 3 and 4 are set aside */
	reopen(w, dir, &j, &s);
	CHECK_INT(store_epoch(s), 3);
	CHECK_INT(byte_at(s, ANON), expect_byte(ANON, 7));

	journal_free(j);
	store_free(s);
	journal_writer_free(w);
}

/* A file as protocol version 2 wrote it: magic, then the epoch with a SHA-256 COMMIT. */
static void write_file(const char *path, const char *magic, const msgpack_sbuffer *rec)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK_INT(write(fd, magic, 8), 8);
	CHECK_INT(write(fd, rec->data, rec->size), (long long)rec->size);
	close(fd);
}

/* An upgraded backup keeps the image its old journal holds (issue 13: XXH3-128 COMMIT). */
static void test_journal_v2(const char *tmp)
{
	const char *dir = t_path(tmp, "v2");
	struct journal_writer *w = NULL;
	struct journal *j = NULL;
	struct store *s = NULL, *scratch = store_new();
	struct pages p = {0};
	msgpack_sbuffer rec;

	CHECK_INT(mkdir(dir, 0700), 0);
	msgpack_sbuffer_init(&rec);
	add_run(&p, ANON, 4, 9);
	struct feeder f = {.s = scratch, .record = &rec, .sha256 = true};
	CHECK_INT(feed_with(&f, img, 1, 0, &p), 0);
	pages_free(&p);
	write_file(seq_file(dir, 1, "full"), JOURNAL_MAGIC_SHA256, &rec);

	CHECK_INT(journal_writer_new(base, &w), 0);
	reopen(w, dir, &j, &s);
	CHECK_INT(store_epoch(s), 1);
	CHECK_INT(byte_at(s, ANON + 2 * PAGE_SIZE), expect_byte(ANON + 2 * PAGE_SIZE, 9));

	/* The same messages under the new magic: a SHA-256 COMMIT does not pass for XXH3-128. */
	write_file(seq_file(dir, 1, "full"), JOURNAL_MAGIC, &rec);
	reopen(w, dir, &j, &s);
	CHECK_INT(store_epoch(s), 0);

	msgpack_sbuffer_destroy(&rec);
	journal_free(j);
	store_free(s);
	store_free(scratch);
	journal_writer_free(w);
}

/* The first .full has been merged into a newer one. */
static bool compacted(void *arg) { return access(seq_file(arg, 1, "full"), F_OK) < 0; }

static void test_compaction(const char *tmp)
{
	const char *dir = t_path(tmp, "compact");
	struct journal_writer *w = NULL;
	struct journal *j = NULL;
	struct store *s = NULL;
	struct pages p = {0};
	uint64_t last = JOURNAL_COMPACT_EPOCHS + 1;
	int want;

	done_count = done_fail = 0;
	CHECK_INT(journal_writer_new(base, &w), 0);
	reopen(w, dir, &j, &s);
	add_run(&p, ANON, 64, 1);
	commit_and_journal(j, s, 1, 0, &p);
	pages_free(&p);
	want = 1;
	run_loop_until(all_done, &want, 10000);
	/*
	 * One delta at a time, as a primary waits for each ACK. Compaction comes
	 * when the deltas outweigh the base or at JOURNAL_COMPACT_EPOCHS of them,
	 * whichever is first.
	 */
	for (uint64_t e = 2; e <= last; e++) {
		add_run(&p, ANON + (e % 64) * PAGE_SIZE, 1, e);
		commit_and_journal(j, s, e, e - 1, &p);
		pages_free(&p);
		want = e;
		run_loop_until(all_done, &want, 10000);
	}
	CHECK_INT(done_fail, 0);
	run_loop_until(compacted, (void *)dir, 20000);
	CHECK(compacted((void *)dir));
	CHECK_INT(count_files(dir, ".full"), 1);
	CHECK(count_files(dir, ".delta") < JOURNAL_COMPACT_EPOCHS);

	reopen(w, dir, &j, &s);
	CHECK_INT(store_epoch(s), last);
	CHECK_INT(store_npages(s), 64);
	CHECK_INT(byte_at(s, ANON + (last % 64) * PAGE_SIZE),
		  expect_byte(ANON + (last % 64) * PAGE_SIZE, last));
	/* Page 1 was last written by the largest epoch <= last that is 1 mod 64. */
	uint64_t e1 = last - (last - 1) % 64;
	CHECK_INT(byte_at(s, ANON + 1 * PAGE_SIZE), expect_byte(ANON + 1 * PAGE_SIZE, e1));
	journal_free(j);
	store_free(s);
	journal_writer_free(w);
}

/* A persistent timer, so that EVLOOP_ONCE comes back to us now and then. */
static void on_tick(evutil_socket_t fd, short what, void *arg) { (void)fd, (void)what, (void)arg; }

int main(void)
{
	const char *tmp = t_tmpdir("checksync-unit-store");
	struct timeval tv = {.tv_usec = 20000};
	struct event *tick;

	log_set_program("test_store");
	log_set_verbose(1);
	if (!tmp) {
		perror("mkdtemp");
		return 2;
	}
	img = t_synth_image();
	base = event_base_new();
	tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
	event_add(tick, &tv);

	test_apply();
	test_stepped_commit();
	test_refusals();
	test_pack_full();
	test_journal(tmp);
	test_compaction(tmp);
	test_journal_v2(tmp);

	event_free(tick);
	event_base_free(base);
	image_free(img);
	if (!unit_failures)
		t_rm_rf(tmp);
	else
		fprintf(stderr, "files kept in %s\n", tmp);
	UNIT_EXIT();
}
