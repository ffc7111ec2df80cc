/*
 * child.c - see child.h.
 *
 * The environment of a hook is built before fork(): the daemon has a
 * writer thread (journal.c), so between fork() and execve() the child
 * calls only async-signal-safe functions.
 */
#include "child.h"

#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "util.h"

extern char **environ;

struct child {
	pid_t pid;
	int pidfd;
	bool ours; /* our child: reaped here */
	struct event *exit_ev, *timeout_ev;
	child_exit_fn fn;
	void *arg;
};

pid_t child_pid(const struct child *c) { return c->pid; }

static void release(struct child *c)
{
	if (c->exit_ev)
		event_free(c->exit_ev);
	if (c->timeout_ev)
		event_free(c->timeout_ev);
	if (c->pidfd >= 0)
		close(c->pidfd);
	free(c);
}

static int reap(pid_t pid)
{
	int status;
	pid_t r;

	do
		r = waitpid(pid, &status, 0);
	while (r < 0 && errno == EINTR);
	return r == pid ? status : -1;
}

static void on_exit_ev(evutil_socket_t fd, short what, void *arg)
{
	struct child *c = arg;
	child_exit_fn fn = c->fn;
	void *fn_arg = c->arg;
	pid_t pid = c->pid;
	int status = c->ours ? reap(pid) : -1; /* the pidfd is readable: it has ended */

	(void)fd, (void)what;
	release(c);
	if (fn)
		fn(pid, status, fn_arg);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct child *c = arg;

	(void)fd, (void)what;
	kill(c->pid, SIGKILL); /* its exit is reported as usual, "killed by signal 9" */
}

static int watch(struct event_base *base, pid_t pid, bool ours, unsigned timeout_ms,
		 child_exit_fn fn, void *arg, struct child **out)
{
	struct child *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	*c = (struct child){.pid = pid, .ours = ours, .fn = fn, .arg = arg};
	c->pidfd = syscall(SYS_pidfd_open, pid, 0);
	if (c->pidfd < 0) {
		int r = -errno;
		free(c);
		return r;
	}
	c->exit_ev = event_new(base, c->pidfd, EV_READ, on_exit_ev, c);
	if (timeout_ms)
		c->timeout_ev = evtimer_new(base, on_timeout, c);
	if (!c->exit_ev || (timeout_ms && !c->timeout_ev)) {
		release(c);
		return -ENOMEM;
	}
	event_add(c->exit_ev, NULL);
	if (timeout_ms) {
		struct timeval tv = {.tv_sec = timeout_ms / 1000,
				     .tv_usec = timeout_ms % 1000 * 1000};
		evtimer_add(c->timeout_ev, &tv);
	}
	*out = c;
	return 0;
}

/* environ with env_add laid over it; the strings are borrowed, the array is malloc'd. */
static char **build_env(char *const env_add[])
{
	size_t n_env = 0, n_add = 0, k = 0;
	char **envp;

	while (environ && environ[n_env])
		n_env++;
	while (env_add && env_add[n_add])
		n_add++;
	envp = calloc(n_env + n_add + 1, sizeof(*envp));
	if (!envp)
		return NULL;
	for (size_t i = 0; i < n_env; i++) {
		const char *eq = strchr(environ[i], '=');
		size_t len = eq ? (size_t)(eq - environ[i]) + 1 : strlen(environ[i]);
		bool replaced = false;

		for (size_t a = 0; a < n_add && !replaced; a++)
			replaced = strncmp(env_add[a], environ[i], len) == 0;
		if (!replaced)
			envp[k++] = environ[i];
	}
	for (size_t a = 0; a < n_add; a++)
		envp[k++] = env_add[a];
	return envp;
}

/* In the child, between fork() and execve(): async-signal-safe calls only. */
static void __attribute__((noreturn)) exec_child(char *const argv[], char **envp, int devnull)
{
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL); /* SIGPIPE is ignored in the daemon, not in a hook */
	if (dup2(devnull, STDIN_FILENO) < 0)
		_exit(127);
	close_range(3, ~0U, 0);
	execve(argv[0], argv, envp);
	_exit(127);
}

int child_spawn(struct event_base *base, char *const argv[], char *const env_add[],
		unsigned timeout_ms, child_exit_fn fn, void *arg, struct child **out)
{
	_cleanup_free_ char **envp = NULL;
	_cleanup_close_ int devnull = -1;
	pid_t pid;
	int r;

	if (!argv || !argv[0] || argv[0][0] != '/')
		return -EINVAL;
	if (access(argv[0], X_OK) < 0)
		return -errno;
	envp = build_env(env_add);
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (!envp || devnull < 0)
		return envp ? -errno : -ENOMEM;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0)
		exec_child(argv, envp, devnull);
	r = watch(base, pid, true, timeout_ms, fn, arg, out);
	if (r < 0) {
		kill(pid, SIGKILL);
		reap(pid);
	}
	return r;
}

int child_fork(struct event_base *base, int (*fn)(void *), void *fn_arg, child_exit_fn fn_exit,
	       void *arg, struct child **out)
{
	pid_t parent = getpid(), pid;
	int r;

	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* Never outlive the daemon: a second instance must not find our files appearing. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(1);
		_exit(fn(fn_arg) < 0 ? 1 : 0);
	}
	r = watch(base, pid, true, 0, fn_exit, arg, out);
	if (r < 0) {
		kill(pid, SIGKILL);
		reap(pid);
	}
	return r;
}

int child_watch(struct event_base *base, pid_t pid, child_exit_fn fn, void *arg, struct child **out)
{
	siginfo_t si = {0};
	/* Ours if waitid knows it; WNOWAIT leaves a finished one for on_exit_ev to reap. */
	bool ours = waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0;

	return watch(base, pid, ours, 0, fn, arg, out);
}

void child_free(struct child *c, bool kill_it)
{
	if (!c)
		return;
	if (kill_it) {
		kill(c->pid, SIGKILL);
		if (c->ours)
			reap(c->pid);
	}
	release(c);
}

const char *child_describe(int status, char *buf, size_t len)
{
	if (status == -1)
		snprintf(buf, len, "ended");
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		snprintf(buf, len, "exited with status 127 (could not be run?)");
	else if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "ended with wait status %#x", status);
	return buf;
}
