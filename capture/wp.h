/*
 * wp.h - pages written since the last epoch, by userfaultfd write-protect.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct capture;

#include "range.h"

struct image;

struct wp_tracker {
	int uffd;
	struct range *dirty; /* sorted, after wp_collect() */
	size_t n, cap;
	/* written, but not copied (not live then): still owed if they become live */
	struct range *carry;
	size_t n_carry, cap_carry;
	uint64_t newly_tracked; /* bytes registered this epoch (new mappings) */
	/* what wp_collect()'s scans found written since the last scan, before the owed ranges join */
	struct range *fresh;
	size_t n_fresh, cap_fresh;
	/*
	 * +1 for each scan that succeeded (wp_collect(), wp_scan_running()),
	 * +2 for anything that may have re-armed a page without its write
	 * reaching dirty or carry (a failed scan, a new or closed
	 * userfaultfd). A reader that kept what it read right after the scan
	 * of seq s may trust what the scan of seq s + 1 found written (w->dirty
	 * of a running scan, w->fresh of a stop's) to cover every write in
	 * between (live.c's span cache).
	 */
	uint64_t seq;
};

struct proc_vma;
/* Mappings whose writes are tracked: private contents, writable. */
bool wp_vma_tracked(const struct proc_vma *v);

/* Create the userfaultfd inside the held process if there is none yet. */
int wp_open(struct capture *c, struct wp_tracker *w);

/*
 * While the process runs (pre-copy, precopy.h): gather into w->dirty, sorted,
 * the ranges written since the last scan, and re-arm them. A page written
 * after its re-arm is found by the next scan, so a copy taken after this
 * call is current unless the next scan reports the page.
 */
int wp_scan_running(struct wp_tracker *w, pid_t pid, const struct proc_vma *vmas, size_t n);

/* Sort v[0..*n) and merge the ranges that touch or overlap. */

/* Owe these ranges to the next epoch (as if written): its capture will ship what is live of them. */
int wp_owe(struct wp_tracker *w, const struct range *v, size_t n);

/* Something re-armed pages whose writes may not be owed (a failed pre-copy round): see seq. */
void wp_note_lost(struct wp_tracker *w);

void wp_init(struct wp_tracker *w);
void wp_free(struct wp_tracker *w);

/* With the threads held and c->vmas current: gather written ranges and re-arm. */
int wp_collect(struct capture *c, struct wp_tracker *w);

/*
 * After a capture: remember the written ranges that img did not copy. A
 * page written while it held no live object (a free span, the unused part
 * of a stack) has its write-protection re-armed like any other, so without
 * this it would never be shipped when it becomes live without another write.
 */
int wp_carry_unshipped(struct wp_tracker *w, const struct image *img);

/* Emit the parts of [s, e) written since the last wp_collect() before this one. */
int wp_filter(const struct wp_tracker *w, uint64_t s, uint64_t e,
	      int (*emit)(void *ctx, uint64_t s, uint64_t e), void *ctx);
