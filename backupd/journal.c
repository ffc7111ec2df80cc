/*
 * journal.c - see journal.h.
 *
 * The journal keeps, in memory, the list of durable files the image is
 * made of: files[0] the .full, then the deltas on top of it, ascending by
 * sequence number. Only the loop thread touches that list; the writer
 * thread sees nothing but its queue of jobs, each of which carries the
 * directory fd, the file name and the bytes to write.
 */
#include "journal.h"

#include <dirent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>

#include "child.h"
#include "hist.h"
#include "log.h"
#include "status.h"
#include "util.h"

#define JOURNAL_NAME_MAX 64
#define JOURNAL_READ_CHUNK (1u << 20)
#define JOURNAL_SERVING_FILE "serving"
#define JOURNAL_STOOD_DOWN_FILE "stood-down"
#define JOURNAL_ACCEPT_NEW_FILE "accept-new-incarnation"

struct jfile {
	uint64_t seq;
	bool full;
	uint64_t bytes;
};

struct job {
	STAILQ_ENTRY(job) link;
	struct journal *j;
	int dirfd;
	char name[JOURNAL_NAME_MAX];
	struct jfile file;
	uint64_t epoch;
	char *data;
	size_t len;
	int r;
	uint64_t queued_us, write_us, sync_us; /* for the cost breakdown */
	journal_done_fn done;
	void *arg;
};

struct journal_writer {
	struct event_base *base;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	STAILQ_HEAD(, job) todo; /* for the thread */
	STAILQ_HEAD(, job) done; /* back to the loop */
	bool stop;
	int efd; /* the thread's "jobs are done" doorbell */
	struct event *ev;
};

struct journal {
	struct journal_writer *w;
	struct event_base *base;
	char *dir, *service;
	int dirfd;
	const struct store *store;

	struct jfile *files; /* the durable chain: a .full, then deltas */
	size_t n_files, cap_files;
	uint64_t next_seq;
	uint64_t durable_epoch;
	uint64_t loaded_age_us; /* how old the newest file was when loaded */
	uint64_t backlog, n_queued;
	bool broken; /* a write failed: deltas wait for a .full */

	struct child *compactor;
	uint64_t compact_seq, compact_epoch;
	size_t compact_retry_at; /* after a failure, wait for this many deltas */

	bool serving;
	pid_t serving_pid;
	uint64_t serving_epoch;
	bool stood_down;
	bool accept_new;
	uint64_t accept_over; /* the incarnation whose image the operator lets be replaced */

	struct hist cost_write, cost_sync, cost_durable;
};

static void file_name(const struct jfile *f, char *buf, size_t len)
{
	snprintf(buf, len, "%020" PRIu64 ".%s", f->seq, f->full ? "full" : "delta");
}

/* ---------- writing one file durably (writer thread and compaction child) ---------- */

struct file_out {
	int fd;
	uint64_t bytes;
};

static int file_begin(int dirfd, const char *name, struct file_out *fo)
{
	char tmp[JOURNAL_NAME_MAX + 8];

	snprintf(tmp, sizeof(tmp), ".tmp-%s", name);
	fo->bytes = 0;
	fo->fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	return fo->fd < 0 ? -errno : 0;
}

static int file_write(const void *p, size_t n, void *arg)
{
	struct file_out *fo = arg;

	fo->bytes += n;
	return write_all(fo->fd, p, n);
}

/* Sync the data, then give it its name, then sync the name: after this a crash keeps it whole. */
static int file_finish(int dirfd, const char *name, struct file_out *fo, int r)
{
	char tmp[JOURNAL_NAME_MAX + 8];

	snprintf(tmp, sizeof(tmp), ".tmp-%s", name);
	if (r >= 0 && fsync(fo->fd) < 0)
		r = -errno;
	if (fo->fd >= 0)
		close(fo->fd);
	if (r >= 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r >= 0 && fsync(dirfd) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(dirfd, tmp, 0);
	return r;
}

static int write_job(struct job *job)
{
	struct file_out fo;
	uint64_t t0 = now_us(), t1;
	int r = file_begin(job->dirfd, job->name, &fo);

	if (r >= 0)
		r = file_write(JOURNAL_MAGIC, 8, &fo);
	if (r >= 0)
		r = file_write(job->data, job->len, &fo);
	t1 = now_us();
	r = file_finish(job->dirfd, job->name, &fo, r);
	job->write_us = t1 - t0;
	job->sync_us = now_us() - t1;
	return r;
}

/* ---------- the writer thread ---------- */

static void *writer_main(void *arg)
{
	struct journal_writer *w = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct job *job;

		while (STAILQ_EMPTY(&w->todo) && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		if (STAILQ_EMPTY(&w->todo))
			break;
		job = STAILQ_FIRST(&w->todo);
		STAILQ_REMOVE_HEAD(&w->todo, link);
		pthread_mutex_unlock(&w->lock);

		job->r = write_job(job);

		pthread_mutex_lock(&w->lock);
		STAILQ_INSERT_TAIL(&w->done, job, link);
		(void)!write(w->efd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static void job_finished(struct job *job);

static void run_done_jobs(struct journal_writer *w)
{
	STAILQ_HEAD(, job) list = STAILQ_HEAD_INITIALIZER(list);
	struct job *job;

	pthread_mutex_lock(&w->lock);
	STAILQ_CONCAT(&list, &w->done);
	pthread_mutex_unlock(&w->lock);
	while ((job = STAILQ_FIRST(&list))) {
		STAILQ_REMOVE_HEAD(&list, link);
		job_finished(job);
	}
}

static void on_doorbell(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;

	(void)what;
	(void)!read(fd, &n, sizeof(n));
	run_done_jobs(arg);
}

int journal_writer_new(struct event_base *base, struct journal_writer **out)
{
	struct journal_writer *w = calloc(1, sizeof(*w));
	sigset_t all, old;
	int r;

	if (!w)
		return -ENOMEM;
	w->base = base;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	STAILQ_INIT(&w->todo);
	STAILQ_INIT(&w->done);
	w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	w->ev = w->efd >= 0 ? event_new(base, w->efd, EV_READ | EV_PERSIST, on_doorbell, w) : NULL;
	if (!w->ev) {
		journal_writer_free(w);
		return -ENOMEM;
	}
	event_add(w->ev, NULL);
	/* Signals are the loop's business: the thread blocks them all. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = -pthread_create(&w->thread, NULL, writer_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		journal_writer_free(w);
		return r;
	}
	w->started = true;
	*out = w;
	return 0;
}

void journal_writer_free(struct journal_writer *w)
{
	if (!w)
		return;
	if (w->started) {
		pthread_mutex_lock(&w->lock);
		w->stop = true;
		pthread_cond_signal(&w->cond);
		pthread_mutex_unlock(&w->lock);
		pthread_join(w->thread, NULL);
		run_done_jobs(w);
	}
	if (w->ev)
		event_free(w->ev);
	if (w->efd >= 0)
		close(w->efd);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}

static void writer_queue(struct journal_writer *w, struct job *job)
{
	pthread_mutex_lock(&w->lock);
	STAILQ_INSERT_TAIL(&w->todo, job, link);
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* ---------- the chain of durable files ---------- */

static void unlink_file(struct journal *j, const struct jfile *f)
{
	char name[JOURNAL_NAME_MAX];

	file_name(f, name, sizeof(name));
	if (unlinkat(j->dirfd, name, 0) < 0 && errno != ENOENT)
		log_warn("%s: cannot remove %s/%s: %s", j->service, j->dir, name, strerror(errno));
}

/* A new .full is durable: every file before it is merged into it. */
static int install_full(struct journal *j, const struct jfile *f)
{
	size_t keep = 0;

	if (j->n_files && f->seq < j->files[0].seq) {
		unlink_file(j, f); /* a newer .full got there first */
		return 0;
	}
	for (size_t i = 0; i < j->n_files; i++) {
		if (j->files[i].seq < f->seq)
			unlink_file(j, &j->files[i]);
		else
			j->files[keep++] = j->files[i];
	}
	j->n_files = keep;
	if (!array_push(&j->files, &j->n_files, &j->cap_files, sizeof(*f)))
		return -ENOMEM;
	memmove(j->files + 1, j->files, (j->n_files - 1) * sizeof(*f));
	j->files[0] = *f;
	j->compact_retry_at = 0;
	return 0;
}

static int install_delta(struct journal *j, const struct jfile *f)
{
	struct jfile *slot = array_push(&j->files, &j->n_files, &j->cap_files, sizeof(*slot));

	if (!slot)
		return -ENOMEM;
	*slot = *f;
	return 0;
}

uint64_t journal_backlog(const struct journal *j) { return j->backlog; }

uint64_t journal_durable_epoch(const struct journal *j) { return j->durable_epoch; }

uint64_t journal_loaded_age_us(const struct journal *j) { return j->loaded_age_us; }

uint64_t journal_disk_bytes(const struct journal *j)
{
	uint64_t n = 0;

	for (size_t i = 0; i < j->n_files; i++)
		n += j->files[i].bytes;
	return n;
}

/* ---------- compaction ---------- */

static int compact_child(void *arg)
{
	struct journal *j = arg;
	struct jfile f = {.seq = j->compact_seq, .full = true};
	char name[JOURNAL_NAME_MAX];
	struct file_out fo;
	int r;

	file_name(&f, name, sizeof(name));
	r = file_begin(j->dirfd, name, &fo);
	if (r >= 0)
		r = file_write(JOURNAL_MAGIC, 8, &fo);
	if (r >= 0)
		r = store_pack_full(j->store, file_write, &fo);
	return file_finish(j->dirfd, name, &fo, r);
}

static void compact_done(pid_t pid, int status, void *arg)
{
	struct journal *j = arg;
	struct jfile f = {.seq = j->compact_seq, .full = true};
	char name[JOURNAL_NAME_MAX], how[128];
	struct stat st;

	(void)pid;
	j->compactor = NULL;
	file_name(&f, name, sizeof(name));
	if (status != 0 || fstatat(j->dirfd, name, &st, 0) < 0) {
		log_warn("%s: compacting into %s/%s failed: the child %s; trying again later",
			 j->service, j->dir, name, child_describe(status, how, sizeof(how)));
		j->compact_retry_at = j->n_files + JOURNAL_COMPACT_EPOCHS;
		return;
	}
	f.bytes = st.st_size;
	if (install_full(j, &f) < 0)
		log_error("%s: out of memory", j->service);
	log_debug("%s: compacted the image of epoch %" PRIu64 " into %s (%" PRIu64 " bytes)",
		  j->service, j->compact_epoch, name, f.bytes);
}

static bool compaction_due(const struct journal *j)
{
	uint64_t delta_bytes = journal_disk_bytes(j) - (j->n_files ? j->files[0].bytes : 0);

	if (j->w->stop || j->compactor || j->n_queued || j->broken || j->n_files < 2 ||
	    j->n_files < j->compact_retry_at)
		return false;
	/* The snapshot must be exactly what is on disk, so nothing newer may be in flight. */
	if (store_committing(j->store) || store_epoch(j->store) != j->durable_epoch)
		return false;
	/*
	 * Each compaction forks, and every page the loop then writes is a
	 * copy-on-write fault (~20 us here): at 10 epochs/s of a write-heavy
	 * service, compacting whenever the deltas outweighed the base cost more
	 * CPU than the service had. Let the deltas grow to several bases.
	 */
	return j->n_files - 1 >= JOURNAL_COMPACT_EPOCHS ||
	       delta_bytes > 4 * j->files[0].bytes + JOURNAL_COMPACT_SLACK;
}

static void compact_if_due(struct journal *j)
{
	int r;

	if (!compaction_due(j))
		return;
	j->compact_seq = j->next_seq++;
	j->compact_epoch = store_epoch(j->store);
	r = child_fork(j->base, compact_child, j, compact_done, j, &j->compactor);
	if (r < 0) {
		log_warn("%s: cannot fork to compact the journal: %s", j->service, strerror(-r));
		j->compact_retry_at = j->n_files + JOURNAL_COMPACT_EPOCHS;
	}
}

/* ---------- appending epochs ---------- */

static void job_finished(struct job *job)
{
	struct journal *j = job->j;
	int r = job->r;

	j->backlog -= job->len;
	j->n_queued--;
	if (job->r >= 0) {
		hist_add_us(&j->cost_write, job->write_us);
		hist_add_us(&j->cost_sync, job->sync_us);
		hist_add_us(&j->cost_durable, now_us() - job->queued_us);
	}
	if (r >= 0 && !job->file.full && j->broken) {
		unlinkat(j->dirfd, job->name, 0); /* it builds on a file that never made it */
		r = -EIO;
	}
	if (r >= 0)
		r = job->file.full ? install_full(j, &job->file) : install_delta(j, &job->file);
	if (r >= 0) {
		j->durable_epoch = job->epoch;
		if (job->file.full)
			j->broken = false;
	} else {
		if (job->r < 0)
			log_error("%s: cannot write epoch %" PRIu64 " to %s/%s: %s", j->service,
				  job->epoch, j->dir, job->name, strerror(-r));
		j->broken = true;
	}
	if (job->done)
		job->done(r, job->epoch, job->arg);
	free(job->data);
	free(job);
	if (r >= 0)
		compact_if_due(j);
}

int journal_append(struct journal *j, uint64_t epoch, uint64_t base_epoch, msgpack_sbuffer *record,
		   journal_done_fn done, void *arg)
{
	struct job *job = calloc(1, sizeof(*job));

	if (!job)
		return -ENOMEM;
	*job = (struct job){.j = j,
			    .dirfd = j->dirfd,
			    .file = {.seq = j->next_seq++, .full = base_epoch == 0},
			    .epoch = epoch,
			    .len = record->size,
			    .queued_us = now_us(),
			    .done = done,
			    .arg = arg};
	job->data = msgpack_sbuffer_release(record);
	job->file.bytes = job->len + 8;
	file_name(&job->file, job->name, sizeof(job->name));
	j->backlog += job->len;
	j->n_queued++;
	writer_queue(j->w, job);
	return 0;
}

/* ---------- loading ---------- */

struct replay {
	struct store *s;
	struct store_epoch *e;
	bool want_full, committed;
	bool sha256; /* a file of protocol version 2 (JOURNAL_MAGIC_SHA256) */
	char *err;
	size_t errlen;
};

static int replay_msg(struct replay *rp, const struct wire_msg *m)
{
	if (m->type == WIRE_EPOCH_BEGIN && !rp->e) {
		if ((m->epoch_begin.base_epoch == 0) != rp->want_full) {
			snprintf(rp->err, rp->errlen, "a %s file holds an epoch with base %" PRIu64,
				 rp->want_full ? ".full" : ".delta", m->epoch_begin.base_epoch);
			return -EBADMSG;
		}
		int r = store_epoch_begin(rp->s, &m->epoch_begin, &rp->e, rp->err, rp->errlen);
		if (r == 0 && rp->sha256)
			r = store_epoch_hash_sha256(rp->e);
		return r;
	}
	if (!rp->e) {
		snprintf(rp->err, rp->errlen, "%s before EPOCH_BEGIN", wire_type_name(m->type));
		return -EBADMSG;
	}
	if (m->type != WIRE_COMMIT)
		return store_epoch_add(rp->e, m, rp->err, rp->errlen);
	rp->committed = true;
	return store_epoch_commit(rp->s, rp->e, &m->commit, rp->err, rp->errlen);
}

/* Feed the file through the decoder into the store until its COMMIT has verified. */
static int replay_fd(int fd, struct replay *rp)
{
	_cleanup_wire_decoder_ struct wire_decoder *dec = wire_decoder_new();
	_cleanup_free_ char *buf = malloc(JOURNAL_READ_CHUNK);
	char magic[8];
	int r = 0;

	if (!dec || !buf)
		return -ENOMEM;
	if (read(fd, magic, 8) != 8 ||
	    (memcmp(magic, JOURNAL_MAGIC, 8) != 0 && memcmp(magic, JOURNAL_MAGIC_SHA256, 8) != 0)) {
		snprintf(rp->err, rp->errlen, "not an epoch file (bad magic)");
		return -EBADMSG;
	}
	rp->sha256 = memcmp(magic, JOURNAL_MAGIC_SHA256, 8) == 0;
	while (!rp->committed) {
		ssize_t n = read(fd, buf, JOURNAL_READ_CHUNK);
		struct wire_msg m;

		if (n < 0)
			return -errno;
		if (n == 0) {
			snprintf(rp->err, rp->errlen, "torn: it ends before its COMMIT");
			return -EBADMSG;
		}
		r = wire_decoder_feed(dec, buf, n);
		while (r >= 0 && !rp->committed &&
		       (r = wire_decoder_next(dec, &m, rp->err, rp->errlen)) == 1)
			r = replay_msg(rp, &m);
		if (r < 0 && r != -ENOMEM && rp->err[0] == 0)
			snprintf(rp->err, rp->errlen, "%s", strerror(-r));
		if (r < 0)
			return r;
	}
	return 0;
}

static int replay_file(struct journal *j, struct store *s, const struct jfile *f, char *err,
		       size_t errlen)
{
	struct replay rp = {.s = s, .want_full = f->full, .err = err, .errlen = errlen};
	char name[JOURNAL_NAME_MAX];
	_cleanup_close_ int fd = -1;
	int r;

	err[0] = 0;
	file_name(f, name, sizeof(name));
	fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -errno;
	}
	r = replay_fd(fd, &rp);
	if (rp.e)
		store_epoch_free(rp.e);
	return r;
}

/* Since the file was written, by the wall clock (the only clock that survives a restart). */
static uint64_t file_age_us(struct journal *j, const struct jfile *f)
{
	char name[JOURNAL_NAME_MAX];
	struct timespec now;
	struct stat st;
	int64_t age;

	file_name(f, name, sizeof(name));
	if (fstatat(j->dirfd, name, &st, 0) < 0 || clock_gettime(CLOCK_REALTIME, &now) < 0)
		return 0;
	age = (int64_t)(now.tv_sec - st.st_mtim.tv_sec) * 1000000 +
	      (now.tv_nsec - st.st_mtim.tv_nsec) / 1000;
	return age > 0 ? (uint64_t)age : 0;
}

static int cmp_jfile(const void *a, const void *b)
{
	const struct jfile *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* NNNNNNNNNNNNNNNNNNNN.full or .delta, exactly; *corrupt for one set aside earlier. */
static bool parse_name(const char *name, struct jfile *f, bool *corrupt)
{
	char *end;

	if (strspn(name, "0123456789") != 20)
		return false;
	f->seq = strtoull(name, &end, 10);
	*corrupt = false;
	if (strcmp(end, ".full") == 0 || strcmp(end, ".delta") == 0) {
		f->full = end[1] == 'f';
		return true;
	}
	*corrupt = strcmp(end, ".full.corrupt") == 0 || strcmp(end, ".delta.corrupt") == 0;
	return *corrupt;
}

static int list_files(struct journal *j, struct jfile **out, size_t *n)
{
	_cleanup_free_ struct jfile *v = NULL;
	size_t cap = 0;
	int fd = openat(j->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	*n = 0;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		struct jfile f = {0};
		struct stat st;
		bool corrupt;

		if (strncmp(de->d_name, ".tmp-", 5) == 0) {
			unlinkat(j->dirfd, de->d_name, 0); /* a write the last run did not finish */
			continue;
		}
		if (!parse_name(de->d_name, &f, &corrupt))
			continue;
		if (f.seq >= j->next_seq)
			j->next_seq =
			    f.seq + 1; /* never reuse a number, set-aside files included */
		if (corrupt || fstatat(j->dirfd, de->d_name, &st, 0) < 0)
			continue;
		f.bytes = st.st_size;
		if (!array_push(&v, n, &cap, sizeof(f))) {
			closedir(d);
			return -ENOMEM;
		}
		v[*n - 1] = f;
	}
	closedir(d);
	if (*n)
		qsort(v, *n, sizeof(*v), cmp_jfile);
	*out = TAKE_PTR(v);
	return 0;
}

/*
 * A file that failed, and the n - 1 after it: a lone delta at the end is
 * what a crash mid-write leaves (if anything) and is removed; anything else
 * is set aside as NAME.corrupt for a person to look at.
 */
static void drop_files(struct journal *j, const struct jfile *f, size_t n, const char *why)
{
	for (size_t i = 0; i < n; i++) {
		char name[JOURNAL_NAME_MAX], aside[JOURNAL_NAME_MAX + 8];

		file_name(&f[i], name, sizeof(name));
		if (n == 1 && !f[i].full) {
			log_warn("%s: dropped the last epoch file %s/%s: %s", j->service, j->dir,
				 name, why);
			unlinkat(j->dirfd, name, 0);
			continue;
		}
		snprintf(aside, sizeof(aside), "%s.corrupt", name);
		log_error("%s: set aside epoch file %s/%s as %s: %s", j->service, j->dir, name,
			  aside, i == 0 ? why : "it comes after one that failed");
		renameat(j->dirfd, name, j->dirfd, aside);
	}
}

/* The newest .full that replays into a new *s: its index. Those that fail leave v. */
static size_t load_full(struct journal *j, struct jfile *v, size_t *n, struct store **s)
{
	for (size_t i = *n; i-- > 0;) {
		char err[512];

		if (!v[i].full)
			continue;
		*s = store_new();
		if (!*s)
			return 0;
		if (replay_file(j, *s, &v[i], err, sizeof(err)) >= 0)
			return i;
		store_free(*s);
		*s = NULL;
		drop_files(j, &v[i], 1, err);
		memmove(v + i, v + i + 1, (*n - i - 1) * sizeof(*v));
		(*n)--;
	}
	return 0;
}

static int load(struct journal *j, struct store **out)
{
	_cleanup_free_ struct jfile *v = NULL;
	struct store *s = NULL;
	size_t n, head;
	int r;

	r = list_files(j, &v, &n);
	if (r < 0)
		return log_error_errno(r, "%s: cannot list %s", j->service, j->dir);
	head = load_full(j, v, &n, &s);
	if (!s) {
		if (n)
			drop_files(j, v, n, "there is no full image to apply it to");
		*out = store_new();
		return *out ? 0 : -ENOMEM;
	}
	for (size_t i = 0; i < head; i++)
		unlink_file(j, &v[i]); /* merged into the .full in use, or older still */
	r = install_full(j, &v[head]);
	for (size_t i = head + 1; r >= 0 && i < n; i++) {
		char err[512];

		if (replay_file(j, s, &v[i], err, sizeof(err)) < 0) {
			drop_files(j, &v[i], n - i, err);
			break;
		}
		r = install_delta(j, &v[i]);
	}
	if (r < 0) {
		store_free(s);
		return r;
	}
	j->durable_epoch = store_epoch(s);
	j->loaded_age_us = file_age_us(j, &j->files[j->n_files - 1]);
	*out = s;
	return 0;
}

static void read_serving_marker(struct journal *j)
{
	char path[4200];
	_cleanup_free_ char *text = NULL;
	unsigned long long epoch;
	int pid;

	snprintf(path, sizeof(path), "%s/%s", j->dir, JOURNAL_SERVING_FILE);
	if (read_file(path, &text) < 0)
		return;
	if (sscanf(text, "pid %d epoch %llu", &pid, &epoch) != 2) {
		log_warn("%s: %s is unreadable; taking it as serving all the same", j->service,
			 path);
		pid = 0;
		epoch = 0;
	}
	j->serving = true;
	j->serving_pid = pid;
	j->serving_epoch = epoch;
}

static void read_accept_marker(struct journal *j)
{
	char path[4200];
	_cleanup_free_ char *text = NULL;
	unsigned long long over = 0;

	snprintf(path, sizeof(path), "%s/%s", j->dir, JOURNAL_ACCEPT_NEW_FILE);
	if (read_file(path, &text) < 0)
		return;
	if (sscanf(text, "over incarnation %llx", &over) != 1)
		log_warn("%s: %s is unreadable; taking it as given for any image", j->service, path);
	j->accept_new = true;
	j->accept_over = over;
}

static int make_dir(const char *dir)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int journal_open(struct journal_writer *w, const char *dir, const char *service,
		 struct journal **out, struct store **store_out)
{
	struct journal *j = calloc(1, sizeof(*j));
	struct store *s = NULL;
	int r;

	if (!j)
		return -ENOMEM;
	*j = (struct journal){.w = w, .base = w->base, .dirfd = -1, .next_seq = 1};
	j->dir = strdup(dir);
	j->service = strdup(service);
	if (!j->dir || !j->service) {
		journal_free(j);
		return -ENOMEM;
	}
	r = make_dir(dir);
	if (r >= 0) {
		j->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = j->dirfd < 0 ? -errno : 0;
	}
	if (r < 0) {
		journal_free(j);
		return log_error_errno(r, "%s: cannot open the state directory %s", service, dir);
	}
	r = load(j, &s);
	if (r < 0) {
		journal_free(j);
		return r;
	}
	read_serving_marker(j);
	read_accept_marker(j);
	j->stood_down = faccessat(j->dirfd, JOURNAL_STOOD_DOWN_FILE, F_OK, 0) == 0;
	j->store = s;
	*out = j;
	*store_out = s;
	return 0;
}

void journal_free(struct journal *j)
{
	if (!j)
		return;
	child_free(j->compactor, true);
	if (j->dirfd >= 0)
		close(j->dirfd);
	free(j->files);
	free(j->dir);
	free(j->service);
	free(j);
}

void journal_report(const struct journal *j, struct status_report *r)
{
	status_report_histogram(r, "journal_write", &j->cost_write,
				"writing an epoch's file (writer thread)");
	status_report_histogram(r, "journal_fsync", &j->cost_sync,
				"fsync of the file, rename, fsync of the directory");
	status_report_histogram(r, "journal_durable", &j->cost_durable,
				"epoch committed to durable on disk, so to its ACK (wall)");
}

/* ---------- the takeover marker ---------- */

int journal_mark_serving(struct journal *j, pid_t pid, uint64_t epoch)
{
	char text[96];
	struct file_out fo;
	int r, len = snprintf(text, sizeof(text), "pid %d epoch %" PRIu64 "\n", pid, epoch);

	r = file_begin(j->dirfd, JOURNAL_SERVING_FILE, &fo);
	if (r >= 0)
		r = file_write(text, len, &fo);
	r = file_finish(j->dirfd, JOURNAL_SERVING_FILE, &fo, r);
	if (r < 0)
		return log_error_errno(r, "%s: cannot write %s/%s", j->service, j->dir,
				       JOURNAL_SERVING_FILE);
	j->serving = true;
	j->serving_pid = pid;
	j->serving_epoch = epoch;
	return 0;
}

int journal_clear_serving(struct journal *j)
{
	if (unlinkat(j->dirfd, JOURNAL_SERVING_FILE, 0) < 0 && errno != ENOENT)
		return log_error_errno(-errno, "%s: cannot remove %s/%s", j->service, j->dir,
				       JOURNAL_SERVING_FILE);
	j->serving = false;
	return fsync(j->dirfd) < 0 ? -errno : 0;
}

bool journal_serving(const struct journal *j, pid_t *pid, uint64_t *epoch)
{
	if (j->serving) {
		*pid = j->serving_pid;
		*epoch = j->serving_epoch;
	}
	return j->serving;
}

int journal_mark_stood_down(struct journal *j, bool on)
{
	struct file_out fo;
	int r = 0;

	if (on) {
		r = file_begin(j->dirfd, JOURNAL_STOOD_DOWN_FILE, &fo);
		if (r >= 0)
			r = file_write("stopped everywhere\n", 19, &fo);
		r = file_finish(j->dirfd, JOURNAL_STOOD_DOWN_FILE, &fo, r);
	} else if (unlinkat(j->dirfd, JOURNAL_STOOD_DOWN_FILE, 0) < 0 && errno != ENOENT) {
		r = -errno;
	} else if (fsync(j->dirfd) < 0) {
		r = -errno;
	}
	if (r < 0)
		return log_error_errno(r, "%s: cannot %s %s/%s", j->service, on ? "write" : "remove",
				       j->dir, JOURNAL_STOOD_DOWN_FILE);
	j->stood_down = on;
	return 0;
}

bool journal_stood_down(const struct journal *j) { return j->stood_down; }

int journal_mark_accept_new(struct journal *j, bool on, uint64_t over)
{
	struct file_out fo;
	char line[64];
	int r = 0;

	if (on) {
		int n = snprintf(line, sizeof(line), "over incarnation %016" PRIx64 "\n", over);
		r = file_begin(j->dirfd, JOURNAL_ACCEPT_NEW_FILE, &fo);
		if (r >= 0)
			r = file_write(line, n, &fo);
		r = file_finish(j->dirfd, JOURNAL_ACCEPT_NEW_FILE, &fo, r);
	} else if (unlinkat(j->dirfd, JOURNAL_ACCEPT_NEW_FILE, 0) < 0 && errno != ENOENT) {
		r = -errno;
	} else if (fsync(j->dirfd) < 0) {
		r = -errno;
	}
	if (r < 0)
		return log_error_errno(r, "%s: cannot %s %s/%s", j->service, on ? "write" : "remove",
				       j->dir, JOURNAL_ACCEPT_NEW_FILE);
	j->accept_new = on;
	j->accept_over = on ? over : 0;
	return 0;
}

bool journal_accept_new(const struct journal *j, uint64_t *over)
{
	if (j->accept_new)
		*over = j->accept_over;
	return j->accept_new;
}
