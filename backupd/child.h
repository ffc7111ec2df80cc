/*
 * child.h - processes the daemon starts or watches without blocking its
 * event loop: the fence and takeover hooks, the journal's compaction
 * writer, and the restored service itself.
 *
 * Each is watched through a pidfd on the event loop and reaped by its own
 * pid. Never waitpid(-1), and no SIGCHLD handler: restore forks a husk and
 * waits for it by pid, and nothing here may reap it from under it. SIGCHLD
 * keeps its default disposition, which the restored service would inherit.
 *
 * A hook is run without a shell, stdin on /dev/null, stdout and stderr
 * shared with the daemon (so its words land in the daemon's log), every
 * other descriptor closed, signals at their defaults, and our environment
 * plus the variables given.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct event_base;
struct child;

/*
 * Called once when the child ends. status is as waitpid() reports it, or
 * -1 when it could not be had (a process that is not our child: watched,
 * not reaped). The child has been freed by then.
 */
typedef void (*child_exit_fn)(pid_t pid, int status, void *arg);

/*
 * Run argv (argv[0] an absolute path) with env_add ("NAME=value", NULL
 * terminated, may be NULL) added to our environment. After timeout_ms (0:
 * none) it is killed with SIGKILL. Returns 0 or -errno.
 */
int child_spawn(struct event_base *base, char *const argv[], char *const env_add[],
		unsigned timeout_ms, child_exit_fn fn, void *arg, struct child **out);

/*
 * Fork and run fn(fn_arg) in the child, which exits with fn's return
 * value; it is killed if the daemon dies first (PR_SET_PDEATHSIG), so it
 * must never outlive the state it was forked from. The child may use only
 * what fork() carries over safely: memory, files, no event loop.
 */
int child_fork(struct event_base *base, int (*fn)(void *), void *fn_arg, child_exit_fn fn_exit,
	       void *arg, struct child **out);

/* Watch a process that is already running (our child or not) until it ends. */
int child_watch(struct event_base *base, pid_t pid, child_exit_fn fn, void *arg,
		struct child **out);

pid_t child_pid(const struct child *c);

/* Stop watching without a callback: SIGKILL and reap it if kill_it, else leave it running. */
void child_free(struct child *c, bool kill_it);

/* "exited with status 1", "killed by signal 9", "ended" (status -1). */
const char *child_describe(int status, char *buf, size_t len);
