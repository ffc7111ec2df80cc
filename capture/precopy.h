/*
 * precopy.h - copying an epoch's pages while the service runs, in rounds,
 * so that the stop copies only what changed since the last round (as VM
 * live migration's pre-copy does).
 *
 * A round re-arms write tracking (wp_scan_running), then copies what it
 * found written (the first round of a full epoch: every present page of the
 * tracked mappings) into a store of its own, and owes those ranges to the
 * epoch (wp_owe). A page in the store is current unless a later scan finds
 * it written. At the epoch's stop the capture takes each live page from the
 * store when it is there and not written since the last round, and from
 * the process otherwise; the image's runs then point into the store, which
 * the image owns from then on.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "image/image.h"
#include "wp.h"

struct capture;

/* One range of the store: [addr, addr + len) of the process is at buf + off. */
struct precopy_extent {
	uint64_t addr, len, off;
};

struct precopy_stats {
	uint64_t epochs, rounds, bytes_copied;
	uint64_t final_bytes_copied; /* copied inside the stops */
	uint64_t store_bytes;	     /* taken from the store by the stops */
	uint64_t stores_reused;	     /* epochs whose store was a shipped epoch's */
	uint64_t round_reread;	     /* bytes a round read again that an earlier round of the epoch had read */
	uint64_t stop_reread;	     /* bytes the stops read again that a round had read */
	uint64_t retry_rounds;	     /* rounds run between two tries of a stop for a safepoint */
	uint64_t retry_round_cpu_us; /* primaryd's CPU time in those */
};

struct precopy {
	uint8_t *buf;
	uint64_t cap, used;
	/* A store a shipped epoch gave back (precopy_recycle): the next store
	 * starts in it, its pages already faulted in, instead of in a new
	 * mapping the kernel must zero page by page. */
	uint8_t *spare;
	uint64_t spare_cap;
	const uint8_t *lent; /* the store the last image took, to know it when it comes back */
	struct precopy_extent *ext; /* sorted by address, disjoint */
	size_t n_ext, cap_ext;
	struct range *stale; /* could not be read by a round: copy at the stop */
	size_t n_stale, cap_stale;
	/* the round being copied: pieces still to read */
	struct image_pagerun *todo;
	size_t n_todo, cap_todo, todo_pos;
	struct proc_vma *vmas; /* the mappings at the last round's start */
	size_t n_vmas;
	bool active;	     /* rounds have started for the next epoch */
	bool full;	     /* the first round copied every present page */
	unsigned rounds;     /* rounds of this epoch */
	uint64_t round_bytes, last_round_bytes;
	struct precopy_stats stats;
};

void precopy_init(struct precopy *p);
void precopy_free(struct precopy *p);
/* Forget the rounds (the store's contents); the written ranges stay owed. */
void precopy_reset(struct precopy *p);
/* Take back a store an image was given (precopy_place) once it is shipped;
 * unmaps it when a spare is held already. */
void precopy_recycle(struct precopy *p, uint8_t *buf, uint64_t cap);

/*
 * Start the next round with the process running: scan and re-arm, then
 * list what to copy. The first round of a full epoch copies every present
 * page of the tracked mappings. The uffd must exist (wp_open()).
 */
int precopy_round_begin(struct precopy *p, struct wp_tracker *w, pid_t pid, bool full);
/* Copy up to budget bytes of the round; 1 when the round is done, 0 when not, <0 on error. */
int precopy_round_step(struct precopy *p, pid_t pid, uint64_t budget);
/* After a round: is what the stop would still copy small enough, or are more rounds useless? */
bool precopy_converged(const struct precopy *p);

/*
 * Inside the stop, from capture_pages(): place c->img's runs in the store,
 * copying from the process what the store lacks or what was written since
 * the last round (c->wp's fresh ranges), and hand the store to the image.
 */
int precopy_place(struct capture *c, struct precopy *p);
