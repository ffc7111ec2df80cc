/*
 * test_tracer_signals.c - a signal a thread was about to take when we held
 * it reaches the thread after tracer_resume(), whichever stop it was held in.
 *
 * A real child under ptrace: it sleeps in pause() with a SIGUSR1 handler
 * that writes to a pipe. The signal is sent just after PTRACE_SEIZE, so the
 * child sits in a signal-delivery-stop when tracer_interrupt_wait() comes;
 * that turns it into the stop PTRACE_INTERRUPT makes, which (unlike a
 * signal-delivery-stop) delivers no signal named on restart. Go's SIGURG is
 * the case that matters: a lost one leaves a thread unpreemptible for good.
 * Also: a SIGSTOP caught that way still stops the child.
 */
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tracer.h"
#include "unit.h"

static int pipefd[2];

static void on_usr1(int sig)
{
	(void)sig;
	(void)!write(pipefd[1], "h", 1);
}

static pid_t start_child(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		signal(SIGUSR1, on_usr1);
		(void)!write(pipefd[1], "r", 1);
		for (;;)
			pause();
	}
	return pid;
}

/* The next byte from the child within ms, or 0. */
static char child_byte(int ms)
{
	struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
	char c = 0;
	if (poll(&p, 1, ms) == 1 && read(pipefd[0], &c, 1) != 1)
		c = 0;
	return c;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
	nanosleep(&ts, NULL);
}

/* Held in a signal-delivery-stop for sig, then taken by tracer_interrupt_wait(). */
static int hold_with_signal(pid_t pid, struct tracee *t, int sig)
{
	*t = (struct tracee){.tid = pid};
	if (tracer_seize(pid, PTRACE_O_EXITKILL) < 0)
		return -1;
	kill(pid, sig);
	sleep_ms(100);
	return tracer_interrupt_wait(t);
}

static char proc_state(pid_t pid)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, __WALL);
}

int main(void)
{
	struct tracee t;
	pid_t pid;
	int st = 0;

	if (pipe(pipefd) < 0)
		return 1;

	/* Detached after the stop: the handler must run. */
	pid = start_child();
	CHECK(child_byte(5000) == 'r');
	if (hold_with_signal(pid, &t, SIGUSR1) < 0) {
		fprintf(stderr, "cannot trace a child here: skipped\n");
		reap(pid);
		return 77;
	}
	CHECK_INT(t.pending_sig, SIGUSR1);
	CHECK_INT(tracer_resume(&t, 1), 0);
	CHECK(child_byte(2000) == 'h');
	reap(pid);

	/* Still traced after the stop (PTRACE_CONT): it stops for the signal, we pass it on. */
	pid = start_child();
	CHECK(child_byte(5000) == 'r');
	CHECK_INT(hold_with_signal(pid, &t, SIGUSR1), 0);
	CHECK_INT(tracer_resume(&t, 0), 0);
	/* What capture_session_on_wait does: a signal is passed on, any other stop let go. */
	int delivered = 0;
	for (int i = 0; i < 5 && !delivered && tracer_wait(pid, &st) == 0 && WIFSTOPPED(st); i++) {
		int sig = st >> 16 ? 0 : WSTOPSIG(st);
		delivered = sig == SIGUSR1;
		ptrace(PTRACE_CONT, pid, 0, sig);
	}
	CHECK(delivered);
	CHECK(child_byte(2000) == 'h');
	reap(pid);

	/* A SIGSTOP that came as we stopped it: once we let go, the child is stopped. */
	pid = start_child();
	CHECK(child_byte(5000) == 'r');
	CHECK_INT(hold_with_signal(pid, &t, SIGSTOP), 0);
	CHECK_INT(t.pending_sig, SIGSTOP);
	CHECK_INT(tracer_resume(&t, 1), 0);
	char s = 0;
	for (int i = 0; i < 100 && (s = proc_state(pid)) != 'T'; i++)
		sleep_ms(10);
	CHECK(s == 'T');
	reap(pid);

	UNIT_EXIT();
}
