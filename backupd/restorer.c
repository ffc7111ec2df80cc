/*
 * restorer.c - see restorer.h.
 *
 * The child reports through a pipe, one line each: "husk PID" as soon as
 * the husk is forked (so that we can reap a husk that died with a restorer
 * killed at its deadline: as subreaper we inherit it), "ready PID" when
 * the process is rebuilt but still held, and "pid PID" once it runs on its
 * own. On "ready" the caller records the pid (takeover.c: the serving
 * marker) and only then do we send the one byte that lets the child
 * release the threads: no restored process ever runs without the daemon
 * having recorded it first.
 */
#include "restorer.h"

#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <syslog.h>
#include <systemd/sd-journal.h>

#include "cgroup.h"
#include "child.h"
#include "log.h"
#include "restore/restore.h"
#include "scope.h"
#include "util.h"

struct restorer {
	struct child *child;
	struct event *deadline_ev, *report_ev;
	int report_fd, go_fd; /* our ends: read the reports, write the go-ahead */
	char buf[256];
	size_t len;
	pid_t husk, pid;
	unsigned deadline_ms;
	bool timed_out, refused;
	restorer_ready_fn ready;
	restorer_done_fn done;
	void *arg;
};

struct child_job {
	const struct image *img;
	struct restore_opts opts;
	int report_fd, go_fd;		/* the child's ends */
	int parent_report, parent_go; /* the daemon's ends, closed in the child */
};

/*
 * A takeover is the service's unavailability: the restorer and the husk
 * it forks run RESTORE_NICE steps ahead of the host's other work, so a busy
 * backup host does not stretch it. The restored threads get the daemon's
 * own priority back before they may run (on_line, "ready").
 */
#define RESTORE_NICE 10

/*
 * The restored service's place on a systemd host, set up before it runs
 * anything of its own: its scope (scope.h), then its lost stdout/stderr as
 * a journal stream that the husk connects itself, from inside the scope,
 * before exec, as systemd connects a unit's. journald (246 and later)
 * files what it reads from a stream under the unit of the pid that wrote
 * it (SCM_CREDENTIALS), looked up as it reads: so the service must be in
 * its scope before its first line, which it is, since it runs only after
 * the restore. Connecting from the husk also makes the stream's peer the
 * service rather than a restorer that exits, as older journalds require.
 */
/*
 * Without systemd (or when the scope fails) the husk gets a cgroup of its
 * own instead, checksync-NAME-PID beside ours, as primaryd gives a service
 * it starts: output commit holds a service by its cgroup, and a socket is
 * of the cgroup of the process that made it, for good (a connection
 * accepted on it is of the listener's). The husk makes every socket of the
 * restored service, so it must be there before it makes any: moved later
 * (by an adopting primaryd), its restored listener's replies would leave
 * unheld. Left in ours, which holds the daemons, primaryd says output
 * commit is not in force.
 */
static void husk_into_cgroup(const char *service, pid_t husk)
{
	struct service_cgroup cg;
	char err[512];
	int r = service_cgroup_make(service, &cg, err, sizeof(err));

	if (r >= 0 && (r = service_cgroup_enter(&cg, husk)) < 0) {
		snprintf(err, sizeof(err), "cannot move pid %d into cgroup %.300s: %s", (int)husk,
			 cg.dir, strerror(-r));
		service_cgroup_remove(&cg);
	}
	if (r < 0)
		log_warn("%s: %s; the restored service stays in the daemon's cgroup", service, err);
	else
		log_info("%s: restoring into cgroup %s, its own", service, cg.path);
}

static void husk_into_scope(pid_t husk, void *arg)
{
	const char *service = arg;
	char unit[256], err[512];
	int r = scope_adopt(service, husk, unit, sizeof(unit), err, sizeof(err));

	if (r < 0 && r != -ENOMEDIUM)
		log_warn("%s: %s; it gets a cgroup of its own instead", service, err);
	if (r < 0)
		husk_into_cgroup(service, husk);
}

/* In the husk: the service's name is its identifier (SYSLOG_IDENTIFIER), as a unit's would be. */
static int husk_journal_stream(void *arg) { return sd_journal_stream_fd(arg, LOG_INFO, 1); }

static int run_restore(void *p)
{
	struct child_job *job = p;
	struct restore_hooks hooks = {.husk_forked = husk_into_scope,
				      .open_output = husk_journal_stream,
				      .output_name = "the journal (sd_journal_stream_fd)",
				      .arg = (void *)job->opts.service};
	pid_t pid;

	close(job->parent_report);
	close(job->parent_go);
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, 0);
	if (errno == 0)
		(void)setpriority(PRIO_PROCESS, 0, nice - RESTORE_NICE); /* needs CAP_SYS_NICE */
	if (job->opts.service)
		job->opts.hooks = &hooks;
	int r = restore_image_mem_report(job->img, &job->opts, job->report_fd, job->go_fd, &pid);
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
	if (rs->report_ev)
		event_free(rs->report_ev);
	if (rs->report_fd >= 0)
		close(rs->report_fd);
	if (rs->go_fd >= 0)
		close(rs->go_fd);
	free(rs);
}

/* Every thread of pid, all stopped under the restorer: our own priority, not the restore's. */
static void give_back_priority(pid_t pid)
{
	char dir[64];
	struct dirent *de;

	errno = 0;
	int nice = getpriority(PRIO_PROCESS, 0);
	if (errno)
		return;
	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
	DIR *d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			(void)setpriority(PRIO_PROCESS, atoi(de->d_name), nice);
	closedir(d);
}

static void on_line(struct restorer *rs, const char *l)
{
	int v;

	if (sscanf(l, "husk %d", &v) == 1) {
		rs->husk = v;
	} else if (sscanf(l, "pid %d", &v) == 1) {
		rs->pid = v;
	} else if (sscanf(l, "ready %d", &v) == 1) {
		give_back_priority(v);
		int r = rs->ready(v, rs->arg);
		if (r >= 0 && write(rs->go_fd, "g", 1) == 1)
			return;
		rs->refused = true; /* the child fails for want of the go-ahead */
		if (rs->child)
			kill(child_pid(rs->child), SIGKILL);
	}
}

/* Whatever the child has written so far, line by line. */
static void read_reports(struct restorer *rs)
{
	for (;;) {
		ssize_t n = read(rs->report_fd, rs->buf + rs->len, sizeof(rs->buf) - 1 - rs->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		rs->len += n;
		rs->buf[rs->len] = 0;
		char *nl;
		while ((nl = strchr(rs->buf, '\n'))) {
			*nl = 0;
			on_line(rs, rs->buf);
			size_t used = nl + 1 - rs->buf;
			memmove(rs->buf, nl + 1, rs->len - used + 1);
			rs->len -= used;
		}
		if (rs->len == sizeof(rs->buf) - 1)
			rs->len = 0; /* not our child's words: drop them */
	}
}

static void on_report(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	read_reports(arg);
}

/* Killed half way, its husk died with it and came to us (subreaper): reap it. */
static void reap_husk(struct restorer *rs)
{
	if (rs->husk <= 0)
		return;
	kill(rs->husk, SIGKILL);
	while (waitpid(rs->husk, NULL, __WALL) < 0 && errno == EINTR)
		;
}

static void on_child_exit(pid_t cpid, int status, void *arg)
{
	struct restorer *rs = arg;
	restorer_done_fn done = rs->done;
	void *done_arg = rs->arg;
	char why[192], how[128];
	pid_t pid = 0;
	int err = 0;

	rs->child = NULL;
	read_reports(rs);
	if (status == 0 && rs->pid > 0) {
		pid = rs->pid;
		why[0] = 0;
	} else {
		err = rs->timed_out ? -ETIMEDOUT : rs->refused ? -ECANCELED : -EIO;
		if (rs->timed_out)
			snprintf(why, sizeof(why), "the restore did not finish within %u ms and was "
				 "killed", rs->deadline_ms);
		else if (rs->refused)
			snprintf(why, sizeof(why), "the restored pid could not be recorded");
		else
			snprintf(why, sizeof(why), "the restorer (pid %d) %s", cpid,
				 child_describe(status, how, sizeof(how)));
		reap_husk(rs);
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

static int open_pipes(struct restorer *rs, struct child_job *job)
{
	int rep[2], go[2];

	if (pipe2(rep, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(go, O_CLOEXEC) < 0) {
		int r = -errno;
		close(rep[0]);
		close(rep[1]);
		return r;
	}
	rs->report_fd = rep[0];
	rs->go_fd = go[1];
	*job = (struct child_job){.report_fd = rep[1], .go_fd = go[0], .parent_report = rep[0],
				  .parent_go = go[1]};
	return fcntl(rs->report_fd, F_SETFL, O_NONBLOCK) < 0 ? -errno : 0;
}

static int start_child(struct event_base *base, struct restorer *rs, struct child_job *job)
{
	rs->deadline_ev = evtimer_new(base, on_deadline, rs);
	rs->report_ev = event_new(base, rs->report_fd, EV_READ | EV_PERSIST, on_report, rs);
	if (!rs->deadline_ev || !rs->report_ev)
		return -ENOMEM;
	int r = child_fork(base, run_restore, job, on_child_exit, rs, &rs->child);
	if (r < 0)
		return r;
	struct timeval tv = {.tv_sec = rs->deadline_ms / 1000,
			     .tv_usec = rs->deadline_ms % 1000 * 1000};
	evtimer_add(rs->deadline_ev, &tv);
	event_add(rs->report_ev, NULL);
	return 0;
}

int restorer_start(struct event_base *base, const struct image *img,
		   const struct restore_opts *opts, unsigned deadline_ms, restorer_ready_fn ready,
		   restorer_done_fn done, void *arg, struct restorer **out)
{
	struct child_job job = {.report_fd = -1, .go_fd = -1};

	/* Idempotent; the restored service, our grandchild, is reparented to us. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		return -errno;
	struct restorer *rs = calloc(1, sizeof(*rs));
	if (!rs)
		return -ENOMEM;
	*rs = (struct restorer){.report_fd = -1, .go_fd = -1, .deadline_ms = deadline_ms,
				.ready = ready, .done = done, .arg = arg};
	int r = open_pipes(rs, &job);
	job.img = img;
	if (opts)
		job.opts = *opts;
	if (r >= 0)
		r = start_child(base, rs, &job);
	if (job.report_fd >= 0)
		close(job.report_fd);
	if (job.go_fd >= 0)
		close(job.go_fd);
	if (r < 0) {
		release(rs);
		return r;
	}
	*out = rs;
	return 0;
}

void restorer_cancel(struct restorer *rs)
{
	if (!rs)
		return;
	child_free(rs->child, true);
	read_reports(rs);
	if (!rs->pid)
		reap_husk(rs);
	release(rs);
}
