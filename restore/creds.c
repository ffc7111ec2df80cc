/*
 * creds.c - giving every restored thread the identity it had: uids and
 * gids (real, effective, saved, fs), supplementary groups, the capability
 * sets, securebits, no_new_privs and seccomp filters; and the process its
 * dumpable flag.
 *
 * This runs last among the injected steps, once everything that needs root
 * (mappings, descriptors, rlimits, PR_SET_MM_MAP, cloning the threads) is
 * done; only munmap of our area and ptrace register writes follow, and a
 * tracer that is already attached keeps its hold on a task that changed
 * uid or became non-dumpable. In each thread, with raw syscalls (they act
 * on the calling thread alone):
 *   1. setgroups;
 *   2. securebits = NO_SETUID_FIXUP, so the uid changes leave the
 *      capability sets alone (the "keep caps" dance);
 *   3. setresgid + setfsgid, setresuid + setfsuid;
 *   4. capset with the old inheritable set and our full permitted one, so
 *      that 5. the ambient set can be raised (a cap must be permitted and
 *      inheritable to be raised);
 *   6. PR_CAPBSET_DROP of what the old bounding set lacked, and
 *   7. the old securebits, both while CAP_SETPCAP is still effective;
 *   8. capset of the old sets, which can only lose capabilities;
 *   9. PR_SET_NO_NEW_PRIVS, which no later step could undo;
 *  10. the seccomp filters, oldest first (or before 8., see
 *      restore_thread_creds).
 * Then PR_SET_DUMPABLE (a uid change made the process non-dumpable), and
 * every thread's /proc status is compared with the image: what the kernel
 * holds is what the image said, or the restore fails naming the field.
 *
 * Capabilities this backupd does not hold cannot be given: the restore is
 * refused, naming them, before any thread is changed.
 */
#include <linux/capability.h>
#include <linux/prctl.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "log.h"
#include "restore.h"
#include "util.h"

/* Scratch offsets (restore.h: the scratch area is AREA_SCRATCH_LEN bytes). */
#define SCR_CAPS 0
#define SCR_DATA 256 /* groups, then seccomp programs */

static const char *const cap_names[] = {
	"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
	"setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
	"net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
	"sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
	"sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
	"audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
	"block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
};

/* "cap_sys_resource, cap_bpf" for the bits of mask. */
static void cap_list(uint64_t mask, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = 0;
	for (unsigned i = 0; i < 64 && o < len; i++) {
		if (!(mask & (1ULL << i)))
			continue;
		if (i < ARRAY_SIZE(cap_names))
			o += snprintf(buf + o, len - o, "%scap_%s", o ? ", " : "", cap_names[i]);
		else
			o += snprintf(buf + o, len - o, "%scap %u", o ? ", " : "", i);
	}
}

static unsigned cap_last_cap(void)
{
	_cleanup_free_ char *buf = NULL;
	if (read_file("/proc/sys/kernel/cap_last_cap", &buf) < 0)
		return CAP_LAST_CAP;
	return strtoul(buf, NULL, 10);
}

/* A syscall in thread t of the husk (inject.h); r must be in scope. */
#define call(t, nr, a, b, c) inject_call_in(&r->inj, t, nr, a, b, c)

static long set_caps(struct restore *r, struct tracee *t, uint64_t eff, uint64_t prm,
		     uint64_t inh)
{
	struct {
		struct __user_cap_header_struct hdr;
		struct __user_cap_data_struct data[2];
	} c = {
		.hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0},
		.data = {{(uint32_t)eff, (uint32_t)prm, (uint32_t)inh},
			 {(uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32)}},
	};
	uint64_t p;
	long rc = inject_put(&r->inj, SCR_CAPS, &c, sizeof(c), &p);
	return rc < 0 ? rc : call(t, SYS_capset, p, p + sizeof(c.hdr), 0);
}

/* What we hold must cover what the image asks for; checked before any thread changes. */
static int check_grantable(const struct image_thread *it, const struct image_creds *have)
{
	const struct image_creds *want = &it->creds;
	struct {
		const char *set;
		uint64_t missing;
	} sets[] = {
		{"permitted", want->cap_prm & ~have->cap_prm},
		{"bounding", want->cap_bnd & ~have->cap_bnd},
		{"inheritable", want->cap_inh & ~(have->cap_inh | have->cap_bnd)},
	};
	char names[512];

	for (size_t i = 0; i < ARRAY_SIZE(sets); i++) {
		if (!sets[i].missing)
			continue;
		cap_list(sets[i].missing, names, sizeof(names));
		log_error("thread %d had %s in its %s capability set, which this backupd does not "
			  "hold (run it with them to restore this service)",
			  it->tid, names, sets[i].set);
		return -EPERM;
	}
	if (want->n_groups * sizeof(uint32_t) > AREA_SCRATCH_LEN - SCR_DATA) {
		log_error("thread %d had %u supplementary groups, more than the restore can pass",
			  it->tid, want->n_groups);
		return -E2BIG;
	}
	for (uint32_t i = 0; i < want->n_filters; i++)
		if (want->filters[i].len * 8 > AREA_SCRATCH_LEN - SCR_DATA) {
			log_error("thread %d: seccomp filter %u has %u instructions, more than the "
				  "restore can pass", it->tid, i, want->filters[i].len);
			return -E2BIG;
		}
	return 0;
}

/* Oldest first, as they were installed: the newest filter's answer wins a tie. */
static long install_filters(struct restore *r, struct tracee *t, const struct image_creds *cr)
{
	for (uint32_t i = 0; i < cr->n_filters; i++) {
		const struct image_seccomp_filter *f = &cr->filters[i];
		struct {
			uint16_t len;
			uint16_t pad[3];
			uint64_t filter;
		} prog = {.len = f->len};
		uint64_t p;
		long ret = inject_put(&r->inj, SCR_DATA, f->insns, f->len * 8, &prog.filter);
		if (ret >= 0)
			ret = inject_put(&r->inj, SCR_CAPS, &prog, sizeof(prog), &p);
		if (ret >= 0)
			ret = call(t, SYS_seccomp, SECCOMP_SET_MODE_FILTER, f->flags, p);
		if (ret < 0)
			return ret;
	}
	return 0;
}

#define STEP(what, expr)                                                                           \
	do {                                                                                       \
		long _ret = (expr);                                                                \
		if (_ret < 0)                                                                      \
			return restore_fail(r, _ret, "thread %d: cannot restore its " what,      \
					    it->tid);                                             \
	} while (0)

static int restore_thread_creds(struct restore *r, struct tracee *t, const struct image_thread *it,
				const struct image_creds *have, unsigned last_cap)
{
	const struct image_creds *cr = &it->creds;
	uint64_t groups = r->area + AREA_SCRATCH + SCR_DATA;

	uint64_t staged;
	if (cr->n_groups)
		STEP("supplementary groups (staging)",
		     inject_put(&r->inj, SCR_DATA, cr->groups, cr->n_groups * sizeof(uint32_t),
				&staged));
	t->insn = r->area + AREA_CODE;
	STEP("supplementary groups", call(t, SYS_setgroups, cr->n_groups, groups, 0));
	STEP("securebits", call(t, SYS_prctl, PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0));
	STEP("gids", call(t, SYS_setresgid, cr->gid, cr->egid, cr->sgid));
	/* setfs[ug]id answer the old id, never an error: a negative one is ours (inject.h). */
	STEP("fsgid", call(t, SYS_setfsgid, cr->fsgid, 0, 0));
	STEP("uids", call(t, SYS_setresuid, cr->uid, cr->euid, cr->suid));
	STEP("fsuid", call(t, SYS_setfsuid, cr->fsuid, 0, 0));
	STEP("inheritable capabilities", set_caps(r, t, have->cap_prm, have->cap_prm, cr->cap_inh));
	STEP("ambient capabilities",
	     call(t, SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0));
	for (unsigned c = 0; c <= last_cap && c < 64; c++)
		if (cr->cap_amb & (1ULL << c))
			STEP("ambient capabilities",
			     call(t, SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c));
	for (unsigned c = 0; c <= last_cap && c < 64; c++)
		if ((have->cap_bnd & ~cr->cap_bnd) & (1ULL << c))
			STEP("bounding set", call(t, SYS_prctl, PR_CAPBSET_DROP, c, 0));
	STEP("securebits", call(t, SYS_prctl, PR_SET_SECUREBITS, cr->securebits, 0));
	/*
	 * Installing a filter takes no_new_privs or CAP_SYS_ADMIN, and every call
	 * after it goes through the filter. So: last, if the thread ends with
	 * either; else now, while we still hold CAP_SYS_ADMIN (the process had
	 * it, or no_new_privs, when it installed them, and dropped it since).
	 */
	bool late = cr->no_new_privs || (cr->cap_eff & (1ULL << CAP_SYS_ADMIN));
	if (!late)
		STEP("seccomp filters", install_filters(r, t, cr));
	STEP("capabilities", set_caps(r, t, cr->cap_eff, cr->cap_prm, cr->cap_inh));
	if (cr->no_new_privs)
		STEP("no_new_privs", call(t, SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0));
	if (late)
		STEP("seccomp filters", install_filters(r, t, cr));
	return 0;
}

static bool same_groups(const struct image_creds *a, const struct image_creds *b)
{
	return a->n_groups == b->n_groups &&
	       (!a->n_groups || memcmp(a->groups, b->groups, a->n_groups * sizeof(uint32_t)) == 0);
}

static bool same_filters(const struct image_creds *a, const struct image_creds *b)
{
	if (a->n_filters != b->n_filters)
		return false;
	for (uint32_t i = 0; i < a->n_filters; i++)
		if (a->filters[i].len != b->filters[i].len || a->filters[i].flags != b->filters[i].flags ||
		    memcmp(a->filters[i].insns, b->filters[i].insns, a->filters[i].len * 8) != 0)
			return false;
	return true;
}

/*
 * What the kernel now holds for the thread against the image; NULL if they
 * agree. env filters are the husk's own, inherited from backupd's
 * environment beneath the image's; a confined backupd cannot read filters,
 * so then only their number is compared.
 */
static const char *compare_thread(pid_t pid, pid_t tid, const struct image_creds *want, int env,
				  struct image_creds *got, int *rc)
{
	int seccomp[2];

	*rc = proc_task_creds(pid, tid, got, seccomp);
	if (*rc >= 0 && seccomp[0] == 2 && env == 0)
		*rc = task_seccomp_filters(tid, 0, seccomp[1], got);
	if (*rc < 0)
		return "credentials (unreadable)";
	if (env > 0 && seccomp[1] != env + (int)want->n_filters)
		return "seccomp filters";
	if (got->uid != want->uid || got->euid != want->euid || got->suid != want->suid ||
	    got->fsuid != want->fsuid)
		return "uids";
	if (got->gid != want->gid || got->egid != want->egid || got->sgid != want->sgid ||
	    got->fsgid != want->fsgid)
		return "gids";
	if (!same_groups(got, want))
		return "supplementary groups";
	if (got->cap_inh != want->cap_inh || got->cap_prm != want->cap_prm ||
	    got->cap_eff != want->cap_eff || got->cap_bnd != want->cap_bnd ||
	    got->cap_amb != want->cap_amb)
		return "capability sets";
	if (got->no_new_privs != want->no_new_privs)
		return "no_new_privs";
	if (env == 0 && !same_filters(got, want))
		return "seccomp filters";
	return NULL;
}

static int verify_thread(struct restore *r, pid_t tid, const struct image_thread *it, int env)
{
	struct image_creds got = {0};
	int rc;
	const char *bad = compare_thread(r->pid, tid, &it->creds, env, &got, &rc);

	image_creds_free(&got);
	if (bad)
		return restore_fail(r, rc < 0 ? rc : -EPERM,
				    "thread %d: the restored thread does not have the %s it had", tid,
				    bad);
	return 0;
}

int restore_creds(struct restore *r)
{
	const struct image *img = r->img;
	unsigned last_cap = cap_last_cap();
	struct image_creds have = {0};
	int seccomp[2];
	int rc;

	/* What the husk holds now: ours, inherited through fork and exec as root. */
	rc = proc_task_creds(r->pid, r->pid, &have, seccomp);
	free(have.groups);
	if (rc < 0)
		return restore_fail(r, rc, "cannot read the credentials of husk %d", r->pid);
	if (seccomp[0] == 1)
		return restore_fail(r, -EPERM, "backupd runs in seccomp strict mode");
	/* A container's filters (backupd's, so the husk's): the new host's, beneath the image's. */
	int env = seccomp[0] == 2 ? seccomp[1] : 0;
	for (size_t i = 0; i < r->n_threads; i++) {
		rc = check_grantable(&img->threads[i], &have);
		if (rc < 0)
			return rc;
	}
	/* The others first, then the leader, which goes on to set the dumpable flag. */
	for (size_t k = 1; k <= r->n_threads; k++) {
		size_t i = k % r->n_threads;
		rc = restore_thread_creds(r, &r->threads[i], &img->threads[i], &have, last_cap);
		if (rc < 0)
			return rc;
	}
	if (img->dumpable == 0 || img->dumpable == 1) {
		long ret = restore_call(r, SYS_prctl, PR_SET_DUMPABLE, img->dumpable);
		if (ret < 0)
			return restore_fail(r, ret, "cannot restore the dumpable flag %d (PR_SET_DUMPABLE)",
					    img->dumpable);
	}
	for (size_t i = 0; i < r->n_threads; i++) {
		rc = verify_thread(r, r->threads[i].tid, &img->threads[i], env);
		if (rc < 0)
			return rc;
	}
	return 0;
}
