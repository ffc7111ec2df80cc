/*
 * takeover.c - see takeover.h.
 *
 * The "serving" marker is written (by failover.c, pid 0) before the
 * restore starts, gets the restored pid here before that process may run
 * (on_restore_ready), and is cleared if the restore fails. A daemon that
 * dies mid-restore takes its restorer and husk with it and leaves pid 0,
 * which failover_init() reads as "nothing runs": a backup again. Never a
 * process without a marker, which a restarted daemon would restore twice.
 */
#include "takeover.h"

#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "child.h"
#include "daemon.h"
#include "failover.h"
#include "handoff.h"
#include "journal.h"
#include "log.h"
#include "restore/restore.h"
#include "restorer.h"
#include "service.h"
#include "store.h"
#include "util.h"

#define HOOK_TIMEOUT_MS 60000 /* a hook that hangs must not hold the takeover forever */

/* ---------- the restored process ---------- */

static void on_service_ended(pid_t pid, int status, void *arg)
{
	struct service *svc = arg;
	char how[128];

	svc->to.watch = NULL;
	log_warn("%s: the restored service (pid %d) has %s", svc->cfg->name, pid,
		 child_describe(status, how, sizeof(how)));
	failover_service_ended(svc);
}

/* Whether pid is in our network namespace, where the restore put it. */
static bool in_our_netns(pid_t pid)
{
	char path[64];
	struct stat ours, its;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
	return stat("/proc/self/ns/net", &ours) < 0 || stat(path, &its) < 0 ||
	       (ours.st_ino == its.st_ino && ours.st_dev == its.st_dev);
}

/*
 * After a reboot the pid may be someone else's: it is ours only if it runs
 * the image's binary, in our network namespace (role swap: hosts that
 * share one pid space, as containers on one machine do, may each restore
 * the service under the same pid).
 */
static bool runs_the_image(const struct service *svc, pid_t pid)
{
	const struct image *meta = store_meta(svc->store);
	char link[64], exe[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/%d/exe", pid);
	n = readlink(link, exe, sizeof(exe) - 1);
	if (n < 0)
		return false;
	exe[n] = 0;
	if (!in_our_netns(pid))
		return false;
	return !meta || !meta->exe || strcmp(exe, meta->exe) == 0;
}

int takeover_watch(struct service *svc, pid_t pid)
{
	int r;

	if (!runs_the_image(svc, pid)) {
		log_warn("%s: the restored service (pid %d) is not running", svc->cfg->name, pid);
		return -ESRCH;
	}
	r = child_watch(svc->d->base, pid, on_service_ended, svc, &svc->to.watch);
	if (r == -ESRCH)
		log_warn("%s: the restored service (pid %d) is not running", svc->cfg->name, pid);
	else if (r < 0)
		log_warn("%s: cannot watch the restored service (pid %d): %s", svc->cfg->name, pid,
			 strerror(-r));
	return r == -ESRCH ? r : 0;
}

/* ---------- role swap ---------- */

void takeover_hand_off(struct service *svc, pid_t pid, uint64_t epoch)
{
	handoff_free(svc->to.handoff);
	svc->to.handoff = handoff_start(svc, pid, epoch);
}

/* ---------- the takeover hook ---------- */

static void on_hook_done(pid_t pid, int status, void *arg)
{
	struct service *svc = arg;
	char how[128];

	(void)pid;
	svc->to.hook = NULL;
	child_describe(status, how, sizeof(how));
	if (status == 0)
		log_info("%s: takeover hook done", svc->cfg->name);
	else
		log_error("%s: takeover hook '%s' %s", svc->cfg->name, svc->cfg->takeover_hook.line,
			  how);
}

void takeover_run_hook(struct service *svc, pid_t pid, uint64_t epoch)
{
	char env_service[WIRE_MAX_NAME + 32], env_pid[48], env_epoch[48];
	char *env[] = {env_service, env_pid, env_epoch, NULL};
	int r;

	if (!svc->cfg->takeover_hook.argc)
		return;
	snprintf(env_service, sizeof(env_service), "CHECKSYNC_SERVICE=%s", svc->cfg->name);
	snprintf(env_pid, sizeof(env_pid), "CHECKSYNC_PID=%d", pid);
	snprintf(env_epoch, sizeof(env_epoch), "CHECKSYNC_EPOCH=%" PRIu64, epoch);
	r = child_spawn(svc->d->base, svc->cfg->takeover_hook.argv, env, HOOK_TIMEOUT_MS,
			on_hook_done, svc, &svc->to.hook);
	if (r < 0)
		log_error("%s: cannot run the takeover hook '%s': %s", svc->cfg->name,
			  svc->cfg->takeover_hook.line, strerror(-r));
}

/* ---------- the restore ---------- */

static void hex12(const uint8_t *sum, char out[13])
{
	for (int i = 0; i < 6; i++)
		snprintf(out + 2 * i, 3, "%02x", sum[i]);
}

int takeover_check_executable(const struct service *svc, bool hash, char *err, size_t errlen)
{
	const struct image *meta = store_meta(svc->store);
	const char *want = svc->cfg->executable;
	uint8_t sum[32];
	char a[13], b[13];
	int r;

	if (!meta || !meta->exe)
		return 0;
	char real[PATH_MAX];

	if (strcmp(meta->exe, want) != 0 &&
	    (!realpath(want, real) || strcmp(meta->exe, real) != 0)) {
		snprintf(err, errlen,
			 "the image's executable is %s, but %s says executable = %s: restore "
			 "refused",
			 meta->exe, svc->cfg->path, want);
		return -ESTALE;
	}
	if (!hash || meta->exe_file < 0 || (size_t)meta->exe_file >= meta->n_files)
		return 0;
	struct file_id id;
	r = file_id_get(want, &id);
	if (r == 0 && !restore_known_sha256(svc->to.known, want, &id, sum))
		r = file_sha256(want, sum);
	if (r < 0) {
		snprintf(err, errlen, "cannot read executable = %s (%s): %s: restore refused", want,
			 svc->cfg->path, strerror(-r));
		return r;
	}
	if (memcmp(sum, meta->files[meta->exe_file].sha256, 32) != 0) {
		hex12(sum, a);
		hex12(meta->files[meta->exe_file].sha256, b);
		snprintf(err, errlen,
			 "executable = %s (%s) has sha256 %s..., the image's executable %s had "
			 "%s...: restore refused",
			 want, svc->cfg->path, a, meta->exe, b);
		return -ESTALE;
	}
	return 0;
}

/* Rebuilt and still held: the marker names the pid before the process may run (restorer.h). */
static int on_restore_ready(pid_t pid, void *arg)
{
	struct service *svc = arg;
	int r = journal_mark_serving(svc->journal, pid, store_epoch(svc->store));

	if (r < 0)
		log_error_errno(r, "%s: cannot record pid %d as serving", svc->cfg->name, pid);
	return r;
}

static void on_restore_done(pid_t pid, int err, const char *why, void *arg)
{
	struct service *svc = arg;

	svc->to.restorer = NULL;
	if (err < 0) {
		log_warn("%s: the restore failed: %s", svc->cfg->name, why);
		failover_restore_failed(svc, err);
	} else {
		failover_restore_done(svc, pid);
	}
}

/* Off the event loop, in a child with a deadline (restorer.h); on_restore_done() reports. */
static int restore_warm_image(struct service *svc)
{
	struct image img;
	char err[512];
	int r = takeover_check_executable(svc, true, err, sizeof(err));

	if (r < 0) {
		log_error("%s: %s", svc->cfg->name, err);
		return r;
	}
	r = store_build_image(svc->store, &img);
	if (r < 0)
		return log_error_errno(r, "%s: cannot assemble the image", svc->cfg->name);
	r = image_validate(&img, err, sizeof(err));
	if (r < 0)
		log_error("%s: the image is not restorable: %s", svc->cfg->name, err);
	else if ((r = restorer_start(svc->d->base, &img,
				     &(struct restore_opts){.debug_file = svc->cfg->debug_file,
							    .known = svc->to.known,
							    .service = svc->cfg->name},
				     RESTORER_DEADLINE_MS, on_restore_ready, on_restore_done, svc,
				     &svc->to.restorer)) < 0)
		log_error_errno(r, "%s: cannot start the restore", svc->cfg->name);
	store_release_image(&img); /* the restorer's child has its own copy */
	return r;
}

void takeover_start_restore(struct service *svc)
{
	int r = restore_warm_image(svc);

	if (r < 0)
		failover_restore_failed(svc, r);
}

/* ---------- reading ahead ---------- */

static void known_free(struct restore_known **k)
{
	if (*k)
		munmap(*k, sizeof(**k));
	*k = NULL;
}

static int known_add(struct restore_known *k, const char *path)
{
	for (size_t i = 0; i < k->n_files; i++)
		if (strcmp(k->files[i].path, path) == 0)
			return 0;
	if (k->n_files == RESTORE_KNOWN_FILES || strlen(path) >= sizeof(k->files[0].path))
		return 0; /* the restore reads it itself */
	int r = file_sha256_id(path, k->files[k->n_files].sha256, &k->files[k->n_files].id);
	if (r == 0)
		snprintf(k->files[k->n_files++].path, sizeof(k->files[0].path), "%s", path);
	return r == -ENOENT || r == -EINVAL ? 0 : r; /* the restore says what is wrong with it */
}

/* In the child: fill the shared page; exit status 0 when all of it is true. */
static int read_ahead(void *arg)
{
	struct service *svc = arg;
	const struct image *meta = store_meta(svc->store);
	struct restore_known *k = svc->to.reading;
	struct go_debuginfo di;
	struct file_id before;
	int r = known_add(k, svc->cfg->executable);

	for (size_t i = 0; r == 0 && meta && i < meta->n_files; i++)
		r = known_add(k, meta->files[i].path);
	if (r < 0)
		return 1;
	if (go_debuginfo_find(svc->cfg->executable, svc->cfg->debug_file, NULL, &di) < 0 ||
	    di.source == GO_DEBUG_NONE || strlen(di.path) >= sizeof(k->layout_path) ||
	    file_id_get(di.path, &before) < 0)
		return 0; /* no layout to read: the restore looks and says why */
	if (go_binary_inspect(svc->cfg->executable, di.path, &k->layout) < 0 ||
	    file_id_get(di.path, &k->layout_id) < 0 || !file_id_equal(&before, &k->layout_id))
		return 0;
	snprintf(k->layout_path, sizeof(k->layout_path), "%s", di.path);
	k->have_layout = true;
	return 0;
}

/* Whether what was read ahead is still what the files hold (one stat each). */
static bool known_current(const struct service *svc)
{
	const struct restore_known *k = svc->to.known;
	const struct image *meta = store_meta(svc->store);
	struct file_id id;
	uint8_t sum[32];

	if (!k || file_id_get(svc->cfg->executable, &id) < 0 ||
	    !restore_known_sha256(k, svc->cfg->executable, &id, sum))
		return false;
	for (size_t i = 0; meta && i < meta->n_files; i++)
		if (file_id_get(meta->files[i].path, &id) == 0 &&
		    !restore_known_sha256(k, meta->files[i].path, &id, sum))
			return false;
	return !k->have_layout || (file_id_get(k->layout_path, &id) == 0 &&
				   file_id_equal(&id, &k->layout_id));
}

static void on_read_ahead(pid_t pid, int status, void *arg)
{
	struct service *svc = arg;
	char how[128];

	(void)pid;
	svc->to.prep = NULL;
	if (status == 0) {
		known_free(&svc->to.known);
		svc->to.known = svc->to.reading;
		svc->to.reading = NULL;
		log_debug("%s: read ahead for a takeover: %zu files hashed, runtime layout %s",
			  svc->cfg->name, svc->to.known->n_files,
			  svc->to.known->have_layout ? svc->to.known->layout_path : "none");
	} else {
		known_free(&svc->to.reading);
		log_warn("%s: reading the service's files ahead of a takeover %s; a takeover reads "
			 "them itself", svc->cfg->name, child_describe(status, how, sizeof(how)));
	}
	if (svc->to.prep_again) {
		svc->to.prep_again = false;
		takeover_prepare(svc);
	}
}

void takeover_prepare(struct service *svc)
{
	if (svc->to.prep) {
		svc->to.prep_again = true; /* the image may have changed since it started */
		return;
	}
	if (known_current(svc))
		return;
	svc->to.reading = mmap(NULL, sizeof(*svc->to.reading), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (svc->to.reading == MAP_FAILED) {
		svc->to.reading = NULL;
		return;
	}
	int r = child_fork(svc->d->base, read_ahead, svc, on_read_ahead, svc, &svc->to.prep);
	if (r < 0) {
		known_free(&svc->to.reading);
		log_warn("%s: cannot read the service's files ahead of a takeover: %s",
			 svc->cfg->name, strerror(-r));
	}
}

/* ---------- fencing ---------- */

static void on_fence_done(pid_t pid, int status, void *arg)
{
	struct service *svc = arg;
	char how[128];

	(void)pid;
	svc->to.fence = NULL;
	if (status != 0)
		log_warn("%s: fence hook '%s' %s; trying again in %u ms", svc->cfg->name,
			 svc->cfg->fence_hook.line, child_describe(status, how, sizeof(how)),
			 svc->cfg->heartbeat_interval_ms);
	failover_fence_done(svc, status == 0);
}

int takeover_start_fence(struct service *svc)
{
	char env_service[WIRE_MAX_NAME + 32];
	char *env[] = {env_service, NULL};
	int r;

	snprintf(env_service, sizeof(env_service), "CHECKSYNC_SERVICE=%s", svc->cfg->name);
	r = child_spawn(svc->d->base, svc->cfg->fence_hook.argv, env, HOOK_TIMEOUT_MS,
			on_fence_done, svc, &svc->to.fence);
	if (r < 0)
		log_error("%s: cannot run the fence hook '%s': %s; trying again in %u ms",
			  svc->cfg->name, svc->cfg->fence_hook.line, strerror(-r),
			  svc->cfg->heartbeat_interval_ms);
	return r;
}

void takeover_free(struct service *svc)
{
	restorer_cancel(svc->to.restorer);
	child_free(svc->to.fence, false);
	child_free(svc->to.hook, false);
	child_free(svc->to.watch, false);
	child_free(svc->to.prep, true);
	known_free(&svc->to.known);
	known_free(&svc->to.reading);
	handoff_free(svc->to.handoff);
	svc->to = (struct takeover){0};
}
