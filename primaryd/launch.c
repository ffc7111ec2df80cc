/*
 * launch.c - getting hold of the protected process from its first instruction.
 *
 * A command is forked, asks for SIGKILL when primaryd dies
 * (PR_SET_PDEATHSIG), stops itself before exec, and is seized with
 * PTRACE_O_EXITKILL while stopped; only then does it exec the service.
 * So there is no instant in which the service could outlive primaryd, held
 * or not, and the backup can take over without two copies serving.
 */
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

#include "guard.h"
#include "log.h"
#include "util.h"

/* Let the seized child run up to its exec (PTRACE_EVENT_EXEC), passing its signals on. */
static int wait_exec(pid_t pid)
{
	int status;
	for (;;) {
		if (waitpid(pid, &status, __WALL) < 0)
			return -errno;
		if (WIFEXITED(status) || WIFSIGNALED(status))
			return -ECHILD;
		if (status >> 8 == (SIGTRAP | (PTRACE_EVENT_EXEC << 8)))
			break;
		int sig = (status >> 16) == 0 ? WSTOPSIG(status) : 0;
		if (sig == SIGSTOP || sig == SIGCONT)
			sig = 0;
		if (ptrace(PTRACE_CONT, pid, 0, sig) < 0)
			return -errno;
	}
	return ptrace(PTRACE_CONT, pid, 0, 0) < 0 ? -errno : 0;
}

int service_spawn(const struct service_config *svc, pid_t *out)
{
	return service_spawn_in(svc, NULL, out);
}

int service_spawn_in(const struct service_config *svc, const struct service_cgroup *cg,
		     pid_t *out)
{
	int status;
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid < 0)
		return log_error_errno(-errno, "%s: cannot fork", svc->name);
	if (pid == 0) {
		/* The service must not outlive primaryd, whether or not we hold it at the moment. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		setsid();
		/*
		 * Nothing of ours goes with it but stdin/out/err: libevent makes our
		 * link's socket without close-on-exec, and a service holding it would
		 * keep the backup's connection open after we are gone (and carry it
		 * in every image).
		 */
		(void)close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
		raise(SIGSTOP);
		execv(svc->command.argv[0], svc->command.argv);
		fprintf(stderr, "checksync-primaryd: error: cannot run %s: %m\n",
			svc->command.argv[0]);
		_exit(127);
	}
	if (waitpid(pid, &status, WUNTRACED) < 0 || !WIFSTOPPED(status))
		return log_error_errno(-ECHILD, "%s: the service did not stop before exec",
				       svc->name);
	/* Before exec: every socket it will ever make is of its cgroup (cgroup.h). */
	int rc = cg ? service_cgroup_enter(cg, pid) : 0;
	if (rc < 0) {
		kill(pid, SIGKILL);
		return log_error_errno(rc, "%s: cannot put the service in cgroup %s", svc->name,
				       cg->dir);
	}
	if (ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_EXITKILL | PTRACE_O_TRACEEXEC) < 0) {
		int r = -errno;
		kill(pid, SIGKILL);
		return log_error_errno(r, "%s: cannot seize the service", svc->name);
	}
	kill(pid, SIGCONT);
	int r = wait_exec(pid);
	if (r < 0) {
		kill(pid, SIGKILL);
		return log_error_errno(r, "%s: %s did not start", svc->name, svc->command.argv[0]);
	}
	*out = pid;
	log_info("%s: started %s as pid %d", svc->name, svc->command.line, pid);
	return 0;
}

int service_attach_pidfile(const struct service_config *svc, pid_t *out)
{
	_cleanup_free_ char *buf = NULL;
	ssize_t n = read_file(svc->pid_file, &buf);
	if (n < 0)
		return log_error_errno(n, "%s: cannot read pid file %s", svc->name, svc->pid_file);
	char *end;
	long pid = strtol(buf, &end, 10);
	if (pid <= 0 || (*end && *end != '\n'))
		return log_error_errno(-EINVAL, "%s: pid file %s holds no pid", svc->name,
				       svc->pid_file);
	if (kill(pid, 0) < 0)
		return log_error_errno(-ESRCH, "%s: no process %ld (from %s)", svc->name, pid,
				       svc->pid_file);
	*out = pid;
	log_info("%s: attached to pid %ld (from %s)", svc->name, pid, svc->pid_file);
	return 0;
}
