/*
 * test_threads_cache.c - a thread's credentials read through the thread
 * cache (capture/threads.c) are the ones it has now, after the main
 * thread changed them between two stops.
 *
 * A real child under ptrace: stopped and captured once with the inject
 * cache valid (its entries are filled), let run, told over a pipe to set
 * PR_SET_NO_NEW_PRIVS (which an unprivileged process may: a change of the
 * credentials /proc/PID/status shows), stopped and captured again with the
 * cache still valid. The second capture must see NoNewPrivs set; a third,
 * with nothing changed, must take the thread from the cache.
 */
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capture/capture.h"
#include "unit.h"
#include "util.h"

static int cmd[2], ack[2];

static void child(void)
{
	char k;
	(void)!write(ack[1], "r", 1);
	while (read(cmd[0], &k, 1) == 1) {
		if (k == 'n' && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			_exit(3);
		(void)!write(ack[1], "k", 1);
	}
	_exit(0);
}

/* One stop and capture of the threads; returns the main thread's no_new_privs, or -1. */
static int capture_once(struct capture *c, uint64_t *kept)
{
	int nnp = -1;

	c->img = image_new();
	CHECK(c->img != NULL);
	CHECK_INT(capture_stop_all(c), 0);
	memset(&c->stats, 0, sizeof(c->stats));
	c->cache_ok = true;
	/* Cached signal stacks and securebits: no injected calls, which need a vDSO scan. */
	for (size_t i = 0; i < c->n_threads; i++) {
		bool have = false;
		for (size_t j = 0; j < c->cache->n_threads; j++)
			have |= c->cache->threads[j].tid == c->threads[i].tid;
		if (!have) {
			struct thread_cache *tc = array_push(&c->cache->threads, &c->cache->n_threads,
							     &c->cache->cap_threads, sizeof(*tc));
			CHECK(tc != NULL);
			*tc = (struct thread_cache){.tid = c->threads[i].tid};
		}
	}
	CHECK_INT(capture_threads(c), 0);
	for (size_t i = 0; i < c->img->n_threads; i++)
		if (c->img->threads[i].tid == c->pid)
			nnp = c->img->threads[i].creds.no_new_privs;
	*kept = c->stats.threads_kept;
	CHECK_INT(capture_resume_all(c), 0);
	image_free(c->img);
	c->img = NULL;
	return nnp;
}

int main(void)
{
	struct inject_cache k = {.valid = true};
	uint64_t kept;
	char r;

	if (pipe(cmd) < 0 || pipe(ack) < 0)
		return 1;
	pid_t pid = fork();
	if (pid == 0)
		child();
	if (read(ack[0], &r, 1) != 1)
		return 1;
	struct capture c = {.pid = pid, .memfd = -1, .cache = &k};

	CHECK_INT(capture_once(&c, &kept), 0);
	CHECK_INT(capture_once(&c, &kept), 0);
	CHECK(kept > 0); /* nothing changed: from the cache */

	CHECK_INT(write(cmd[1], "n", 1), 1);
	CHECK_INT(read(ack[0], &r, 1), 1);
	CHECK_INT(capture_once(&c, &kept), 1); /* the change is seen, cache or not */
	CHECK_INT(kept, 0);
	CHECK_INT(capture_once(&c, &kept), 1);
	CHECK(kept > 0);

	capture_release_all(&c);
	close(cmd[1]);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	free(c.threads);
	free(k.threads);
	UNIT_EXIT();
}
