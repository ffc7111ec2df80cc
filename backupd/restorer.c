/*
 * restorer.c - see restorer.h.
 *
 * The child tells us two things through a pipe, one line each: "husk PID"
 * as soon as the husk is forked, and "pid PID" once the restored process
 * runs on its own. The first lets us reap a husk that died with a restorer
 * killed at its deadline (as subreaper we inherit it); the second is the
 * answer.
 */
#include "restorer.h"

#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "child.h"
#include "log.h"
#include "restore/restore.h"
#include "util.h"

struct restorer {
	struct child *child;
	struct event *deadline_ev;
	int report_fd; /* read end */
	unsigned deadline_ms;
	bool timed_out;
	restorer_done_fn done;
	void *arg;
};

struct child_job {
	const struct image *img;
	int report_fd; /* write end, in the child */
};

static int run_restore(void *p)
{
	struct child_job *job = p;
	pid_t pid;
	int r = restore_image_mem_report(job->img, job->report_fd, &pid);

	if (r >= 0) {
		char line[32];
		int n = snprintf(line, sizeof(line), "pid %d\n", pid);
		r = write_all(job->report_fd, line, n);
	}
	return r;
}

static void release(struct restorer *rs)
{
	if (rs->deadline_ev)
		event_free(rs->deadline_ev);
	if (rs->report_fd >= 0)
		close(rs->report_fd);
	free(rs);
}

/* The husk's and the service's pids as the child reported them (0: not reported). */
static void read_report(int fd, pid_t *husk, pid_t *pid)
{
	char buf[128];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);

	*husk = *pid = 0;
	if (n <= 0)
		return;
	buf[n] = 0;
	for (char *l = buf; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		int v;
		if (sscanf(l, "husk %d", &v) == 1)
			*husk = v;
		else if (sscanf(l, "pid %d", &v) == 1)
			*pid = v;
	}
}

static void on_child_exit(pid_t cpid, int status, void *arg)
{
	struct restorer *rs = arg;
	restorer_done_fn done = rs->done;
	void *done_arg = rs->arg;
	char why[192], how[128];
	pid_t husk, pid;
	int err = 0;

	rs->child = NULL;
	read_report(rs->report_fd, &husk, &pid);
	if (status == 0 && pid > 0) {
		why[0] = 0;
	} else {
		err = rs->timed_out ? -ETIMEDOUT : -EIO;
		if (rs->timed_out)
			snprintf(why, sizeof(why), "the restore did not finish within %u ms and was "
				 "killed", rs->deadline_ms);
		else
			snprintf(why, sizeof(why), "the restorer (pid %d) %s", cpid,
				 child_describe(status, how, sizeof(how)));
		/* Killed half way, its husk died with it and came to us (subreaper): reap it. */
		if (husk > 0) {
			kill(husk, SIGKILL);
			while (waitpid(husk, NULL, __WALL) < 0 && errno == EINTR)
				;
		}
		pid = 0;
	}
	release(rs);
	done(pid, err, why, done_arg);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct restorer *rs = arg;

	(void)fd, (void)what;
	rs->timed_out = true;
	if (rs->child)
		kill(child_pid(rs->child), SIGKILL); /* reported by on_child_exit */
}

int restorer_start(struct event_base *base, const struct image *img, unsigned deadline_ms,
		   restorer_done_fn done, void *arg, struct restorer **out)
{
	int p[2];

	/* Idempotent; the restored service, our grandchild, is reparented to us. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		return -errno;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	_cleanup_close_ int wr = p[1];
	struct restorer *rs = calloc(1, sizeof(*rs));
	if (!rs) {
		close(p[0]);
		return -ENOMEM;
	}
	*rs = (struct restorer){.report_fd = p[0], .deadline_ms = deadline_ms, .done = done,
				.arg = arg};
	rs->deadline_ev = evtimer_new(base, on_deadline, rs);
	if (!rs->deadline_ev) {
		release(rs);
		return -ENOMEM;
	}
	struct child_job job = {.img = img, .report_fd = wr};
	int r = child_fork(base, run_restore, &job, on_child_exit, rs, &rs->child);
	if (r < 0) {
		release(rs);
		return r;
	}
	struct timeval tv = {.tv_sec = deadline_ms / 1000, .tv_usec = deadline_ms % 1000 * 1000};
	evtimer_add(rs->deadline_ev, &tv);
	*out = rs;
	return 0;
}

void restorer_cancel(struct restorer *rs)
{
	pid_t husk, pid;

	if (!rs)
		return;
	child_free(rs->child, true);
	read_report(rs->report_fd, &husk, &pid);
	if (husk > 0 && !pid) {
		kill(husk, SIGKILL);
		while (waitpid(husk, NULL, __WALL) < 0 && errno == EINTR)
			;
	}
	release(rs);
}
