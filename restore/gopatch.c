/*
 * gopatch.c - fix what the process cached about its old thread ids.
 *
 * Only needed when the old ids were taken on this host and the threads
 * came back under new ones. The Go runtime keeps each thread's id in
 * m.procid and sends preemption signals (tgkill) to it; glibc keeps it in
 * its thread descriptor, at the clear-child-tid address the kernel also
 * writes on thread exit. Layouts come from the executable's DWARF, found
 * on this host the way the capture finds it on the primary's (goruntime.h).
 */
#include "goruntime.h"
#include "log.h"
#include "restore.h"
#include "util.h"

static pid_t new_tid_of(const struct restore *r, uint64_t old)
{
	for (size_t i = 0; i < r->n_threads; i++)
		if ((uint64_t)r->img->threads[i].tid == old)
			return r->threads[i].tid;
	return 0;
}

static int patch_go_ms(struct restore *r, const struct go_binary *gb)
{
	uint64_t m;
	int rc = inject_fault(&r->inj);
	if (rc < 0)
		return rc;
	rc = tracer_peek(r->memfd, gb->allm_addr, &m, sizeof(m));
	if (rc < 0)
		return rc;
	for (int n = 0; m && n < 100000; n++) {
		uint64_t procid, next;
		rc = tracer_peek(r->memfd, m + gb->m_procid_off, &procid, sizeof(procid));
		if (rc < 0)
			return rc;
		pid_t tid = new_tid_of(r, procid);
		if (tid) {
			uint64_t v = tid;
			rc = tracer_poke(r->memfd, m + gb->m_procid_off, &v, sizeof(v));
			if (rc < 0)
				return rc;
			log_debug("m %#lx: procid %lu -> %d", (unsigned long)m,
				  (unsigned long)procid, tid);
		}
		rc = tracer_peek(r->memfd, m + gb->m_alllink_off, &next, sizeof(next));
		if (rc < 0)
			return rc;
		m = next;
	}
	return 0;
}

/* The layout read beforehand (restore_known), if it was read from this very version of path. */
static bool known_layout(const struct restore *r, const char *path, struct go_binary *gb)
{
	const struct restore_known *k = r->opts->known;
	struct file_id id;

	if (!k || !k->have_layout || strcmp(k->layout_path, path) != 0 ||
	    file_id_get(path, &id) < 0 || !file_id_equal(&id, &k->layout_id))
		return false;
	*gb = k->layout;
	return true;
}

int restore_patch_tids(struct restore *r)
{
	struct go_binary gb;

	if (r->same_tids)
		return 0;
	for (size_t i = 0; i < r->n_threads; i++) {
		const struct image_thread *it = &r->img->threads[i];
		int32_t tid = r->threads[i].tid;
		if (!it->clear_tid_addr)
			continue;
		int rc = inject_fault(&r->inj);
		if (rc >= 0)
			rc = tracer_poke(r->memfd, it->clear_tid_addr, &tid, sizeof(tid));
		if (rc < 0)
			return restore_fail(r, rc, "thread %d: cannot update its cached thread id at "
					    "%#lx", it->tid, (unsigned long)it->clear_tid_addr);
	}
	struct go_debuginfo di;
	int rc = go_debuginfo_find(r->img->exe, r->opts->debug_file, r->opts->debug_root, &di);
	if (rc >= 0 && di.source != GO_DEBUG_NONE && !known_layout(r, di.path, &gb))
		rc = go_binary_inspect(r->img->exe, di.path, &gb);
	if (rc < 0)
		return restore_fail(r, rc, "cannot read %s", r->img->exe);
	if (di.source == GO_DEBUG_NONE) {
		log_warn("threads have new ids and Go's preemption signals to them may go astray: "
			 "%s",
			 di.why);
		return 0;
	}
	if (!gb.allm_addr || gb.m_procid_off < 0 || gb.m_alllink_off < 0) {
		log_warn("%s has no DWARF for runtime.allm/runtime.m: threads have new ids and "
			 "Go's preemption signals to them may go astray",
			 di.path);
		return 0;
	}
	if (di.source != GO_DEBUG_EXE)
		log_info("%s: DWARF from %s (%s)", r->img->exe, di.path,
			 go_debug_source_name(di.source));
	rc = patch_go_ms(r, &gb);
	if (rc < 0)
		return restore_fail(r, rc, "cannot patch the Go runtime's thread ids (m.procid from "
				    "runtime.allm at %#lx)", (unsigned long)gb.allm_addr);
	return 0;
}
