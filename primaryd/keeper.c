/*
 * keeper.c - see keeper.h.
 *
 * The keeper polls rather than waits on anything primaryd must do: its
 * whole point is to act when primaryd does nothing. While the lease runs
 * it sleeps until the deadline (a renewal only moves the deadline later,
 * so waking at the old one and sleeping again is enough); while it holds
 * the service it looks every KEEPER_POLL_MS for a renewal, and stops any
 * thread the service started meanwhile.
 */
#include "keeper.h"

#include <dirent.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define KEEPER_POLL_MS 5

struct keeper_page {
	_Atomic uint64_t deadline_us; /* written by primaryd */
	_Atomic bool stopped;         /* written by the keeper */
};

static void stop_threads(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	struct dirent *e;
	if (!d) {
		kill(pid, SIGSTOP);
		return;
	}
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			syscall(SYS_tgkill, pid, atoi(e->d_name), SIGSTOP);
	closedir(d);
}

/* primaryd is gone: an adopted service goes with it (keeper.h); a started one already has. */
static void __attribute__((noreturn)) parent_gone(pid_t service, bool kill_with_us)
{
	if (kill_with_us)
		kill(service, SIGKILL);
	_exit(0);
}

/* Sleep until us (CLOCK_MONOTONIC, like now_us()), or until SIGHUP, blocked, says primaryd died. */
static void sleep_until(uint64_t us, pid_t service, bool kill_with_us)
{
	uint64_t now = now_us(), left = us > now ? us - now : 0;
	struct timespec ts = {.tv_sec = left / 1000000, .tv_nsec = left % 1000000 * 1000};
	sigset_t hup;

	sigemptyset(&hup);
	sigaddset(&hup, SIGHUP);
	if (sigtimedwait(&hup, NULL, &ts) == SIGHUP)
		parent_gone(service, kill_with_us);
}

static void __attribute__((noreturn)) keeper_main(struct keeper_page *pg, pid_t service, pid_t parent,
						  bool kill_with_us)
{
	for (;;) {
		if (getppid() != parent)
			parent_gone(service, kill_with_us);
		if (kill(service, 0) < 0)
			_exit(0);
		uint64_t now = now_us(), deadline = atomic_load(&pg->deadline_us);
		if (now < deadline) {
			if (atomic_load(&pg->stopped)) {
				kill(service, SIGCONT);
				atomic_store(&pg->stopped, false);
			}
			sleep_until(deadline, service, kill_with_us);
			continue;
		}
		stop_threads(service); /* again each round: threads started since */
		atomic_store(&pg->stopped, true);
		sleep_until(now + KEEPER_POLL_MS * 1000, service, kill_with_us);
	}
}

int keeper_start(struct keeper *k, pid_t service, uint64_t deadline_us, bool kill_with_us)
{
	pid_t parent = getpid();
	struct keeper_page *pg = mmap(NULL, sizeof(*pg), PROT_READ | PROT_WRITE,
				      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (pg == MAP_FAILED)
		return -errno;
	atomic_store(&pg->deadline_us, deadline_us);
	atomic_store(&pg->stopped, false);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		int r = -errno;
		munmap(pg, sizeof(*pg));
		return r;
	}
	if (pid == 0) {
		sigset_t mask;
		sigemptyset(&mask);
		if (kill_with_us)
			sigaddset(&mask, SIGHUP); /* taken by sigtimedwait(), never delivered */
		for (int sig = 1; sig < NSIG; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				signal(sig, SIG_DFL);
		sigprocmask(SIG_SETMASK, &mask, NULL);
		/* Never outlive primaryd: the service dies with it, and nobody would renew. */
		if (prctl(PR_SET_PDEATHSIG, kill_with_us ? SIGHUP : SIGKILL) < 0 ||
		    getppid() != parent)
			parent_gone(service, kill_with_us);
		close_range(3, ~0U, 0);
		prctl(PR_SET_NAME, "cs-lease-keeper");
		keeper_main(pg, service, parent, kill_with_us);
	}
	*k = (struct keeper){.pid = pid, .service = service, .page = pg};
	return 0;
}

void keeper_renew(struct keeper *k, uint64_t deadline_us)
{
	if (k->page)
		atomic_store(&k->page->deadline_us, deadline_us);
}

bool keeper_holds(const struct keeper *k)
{
	return k->page && atomic_load(&k->page->stopped);
}

void keeper_reaped(struct keeper *k) { k->pid = 0; }

void keeper_stop(struct keeper *k)
{
	if (k->pid > 0) {
		kill(k->pid, SIGKILL);
		waitpid(k->pid, NULL, __WALL);
	}
	if (k->page && atomic_load(&k->page->stopped))
		kill(k->service, SIGCONT);
	if (k->page)
		munmap(k->page, sizeof(*k->page));
	*k = (struct keeper){0};
}
