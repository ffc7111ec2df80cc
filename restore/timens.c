/*
 * timens.c - the restored process's clocks carry on from where they were.
 *
 * Go measures every timer, ticker and sleep on CLOCK_MONOTONIC. On another
 * host, or after a reboot, that clock reads something else entirely: ahead,
 * and every timer waits for a deadline hours away; behind, and all fire at
 * once. So the husk runs in a new time namespace whose CLOCK_MONOTONIC and
 * CLOCK_BOOTTIME read what the process's read at capture (capture/
 * timens.c), plus the real time that has passed since, measured on
 * CLOCK_REALTIME: timers that fell due while it was away fire, and no
 * timer stops.
 *
 * A time namespace takes its offsets only before any process has entered
 * it, and the kernel moves a task into the namespace it created for its
 * children when it execs. So the forked husk itself unshares
 * CLONE_NEWTIME, writes /proc/self/timens_offsets, and enters the
 * namespace by exec'ing the executable: the restorer (backupd) never
 * changes namespace, and its other children (hooks, later restores) run on
 * the host's clocks. The husk's [vvar] is then the namespace's (the kernel
 * maps the timens page there), and it is that mapping the restore moves to
 * the old address, so the vDSO reads the namespace's clocks.
 *
 * The offsets are relative to the host's clocks, whatever namespace the
 * restorer runs in: our own namespace's offsets are taken off first.
 */
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <time.h>

#include "log.h"
#include "restore.h"
#include "util.h"

#define NSEC 1000000000LL

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * NSEC + ts.tv_nsec;
}

static bool have_cap(unsigned cap)
{
	uint64_t eff;
	return proc_status_field(getpid(), "CapEff", 16, &eff) == 0 && (eff & (1ULL << cap));
}

bool restore_can_make_timens(void) { return have_cap(CAP_SYS_ADMIN) && have_cap(CAP_SYS_TIME); }

int restore_timens_plan(const struct image *img, struct timens_plan *plan)
{
	const struct image_clocks *ck = &img->clocks;
	int64_t own[2];

	*plan = (struct timens_plan){0};
	if (!ck->realtime) {
		log_warn("the image records no clocks: the process runs on this host's clocks");
		return 0;
	}
	if (!restore_can_make_timens())
		return log_error_errno(-EPERM, "a restore needs CAP_SYS_ADMIN and CAP_SYS_TIME to "
					       "give the process a time namespace with its clocks (in "
					       "systemd-nspawn: --capability=CAP_SYS_TIME)");
	int r = proc_timens_offsets(0, own);
	if (r < 0)
		return log_error_errno(r, "cannot read the offsets of our own time namespace");

	int64_t away = clock_ns(CLOCK_REALTIME) - ck->realtime;
	if (away < 0) {
		log_warn("this host's CLOCK_REALTIME is %lld ms behind the primary's at capture; "
			 "the process's clocks go on from the capture as if no time had passed",
			 (long long)(-away / 1000000));
		away = 0;
	}
	plan->enter = true;
	plan->off[0] = ck->monotonic + away - (clock_ns(CLOCK_MONOTONIC) - own[0]);
	plan->off[1] = ck->boottime + away - (clock_ns(CLOCK_BOOTTIME) - own[1]);
	log_debug("clocks: away %lld ms; monotonic continues at %lld s (offset %lld s), boottime "
		  "at %lld s (offset %lld s)",
		  (long long)(away / 1000000), (long long)((ck->monotonic + away) / NSEC),
		  (long long)(plan->off[0] / NSEC), (long long)((ck->boottime + away) / NSEC),
		  (long long)(plan->off[1] / NSEC));
	return 0;
}

/* "monotonic SEC NSEC" with 0 <= NSEC < 1e9, as timens_offsets takes it. */
static int format_offset(char *buf, size_t len, const char *name, int64_t off)
{
	int64_t sec = off / NSEC, nsec = off % NSEC;
	if (nsec < 0) {
		sec--;
		nsec += NSEC;
	}
	return snprintf(buf, len, "%s %lld %lld\n", name, (long long)sec, (long long)nsec);
}

int restore_timens_enter(const struct timens_plan *plan)
{
	char buf[128];
	if (!plan->enter)
		return 0;
	if (unshare(CLONE_NEWTIME) < 0)
		return log_error_errno(-errno, "cannot create a time namespace for the husk");
	int n = format_offset(buf, sizeof(buf), "monotonic", plan->off[0]);
	format_offset(buf + n, sizeof(buf) - n, "boottime", plan->off[1]);
	_cleanup_close_ int fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf))
		return log_error_errno(-errno, "cannot set the husk's clock offsets (%s)",
				       strtok(buf, "\n"));
	return 0;
}
