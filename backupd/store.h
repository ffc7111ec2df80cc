/*
 * store.h - the warm image of one service: the process as its last
 * committed epoch describes it, held in memory ready for restore.
 *
 * Design decisions:
 *  - Only a verified epoch changes the store. An epoch being received is a
 *    struct store_epoch of its own: its metadata goes into a fresh struct
 *    image, its pages are copied out of the decoder, every message is
 *    added to the epoch hash. COMMIT checks the hash and only then swaps
 *    the metadata in and merges the pages. Freeing an uncommitted
 *    store_epoch is how a torn epoch is discarded: nothing of it has
 *    touched the store.
 *  - Every epoch carries the whole metadata (MAPPINGS, THREADS, FDS; see
 *    epoch.h) and only the pages are incremental, so "apply" is: replace
 *    the metadata, overwrite pages by address, then drop pages that no
 *    private anonymous, file, heap or stack mapping covers any more.
 *  - A DELTA record (common/delta.h) is rebuilt into a whole page as it
 *    arrives, from the committed copy of the base epoch, and hashed as
 *    rebuilt: from there on it is a page like any PAGES page, so commit,
 *    merge and restore never see deltas. The journal keeps the DELTA
 *    messages as received, and replays them onto the same base.
 *  - Pages are kept one malloc'd 4 KiB block per page behind a sorted
 *    address index: an epoch overwrites pages wherever they fall, no run
 *    ever needs splitting, and a merge is linear. Takeover pays one copy
 *    into a contiguous buffer (store_build_image).
 *  - The store speaks the wire format both ways: store_pack_full() writes
 *    the image back out as one full epoch, which is what the journal keeps
 *    on disk as a base, so reading a base and receiving an epoch are the
 *    same code.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "hist.h"
#include "image/image.h"
#include "wire.h"

/* An epoch may not carry more pages than this (64 GiB): a runaway primary must not take us down. */
#define STORE_MAX_EPOCH_PAGES (16u << 20)

struct store;
struct store_epoch;

/* The backup's part of the epoch cost breakdown, per committed epoch. */
enum store_cost_kind { STORE_COST_RECEIVE, STORE_COST_VERIFY, STORE_COST_APPLY, STORE_COST_COUNT };
struct store_cost {
	struct hist h[STORE_COST_COUNT];
};
struct status_report;
/* recv_read, recv_verify, recv_apply histograms for the status report. */
void store_report(const struct store *s, struct status_report *r);

struct store *store_new(void);
void store_free(struct store *s);
static inline void store_freep(struct store **s)
{
	if (*s)
		store_free(*s);
}
#define _cleanup_store_ __attribute__((cleanup(store_freep)))

/* The last committed epoch, 0 before the first. */
uint64_t store_epoch(const struct store *s);
uint64_t store_npages(const struct store *s);
/* The incarnation (wire.h) whose epochs the image holds; 0: none or not known. */
uint64_t store_incarnation(const struct store *s);
/* The committed metadata (no runs, no pages), or NULL before the first commit. */
const struct image *store_meta(const struct store *s);

/*
 * Open an epoch from its EPOCH_BEGIN. A base_epoch other than 0 (a full
 * image) must be the store's epoch, else -ESTALE and err says
 * "base epoch N, have M".
 */
int store_epoch_begin(const struct store *s, const struct wire_epoch_begin *b,
		      struct store_epoch **out, char *err, size_t errlen);

/* Right after store_epoch_begin(), for a journal file of protocol version 2: its COMMIT is SHA-256. */
int store_epoch_hash_sha256(struct store_epoch *e);

/* Add MAPPINGS, THREADS, FDS or PAGES. -EBADMSG (err says why) for a record that does not decode.
 */
int store_epoch_add(struct store_epoch *e, const struct wire_msg *m, char *err, size_t errlen);

/*
 * Verify the epoch against its COMMIT and, only if it verifies, apply it.
 * -EBADMSG with err for a checksum that differs or an epoch that lacks a
 * section or does not describe a restorable process; the store is then
 * unchanged. Either way the caller frees e afterwards.
 */
int store_epoch_commit(struct store *s, struct store_epoch *e, const struct wire_commit *c,
		       char *err, size_t errlen);

/*
 * The same in steps, so that merging a large epoch (hundreds of thousands
 * of pages, a sort, as many frees) never holds the loop: begin verifies
 * and allocates as store_epoch_commit() does and, on success, the store
 * owns e; each step does at most about budget_us of the merge and returns
 * true once the store holds the epoch. Until then the store is the
 * previous epoch, whole, for every reader, and no other epoch may begin
 * on it (the caller stops reading). store_commit_finish() does the rest
 * at once (a takeover, a new connection); store_build_image() calls it.
 */
int store_commit_begin(struct store *s, struct store_epoch *e, const struct wire_commit *c,
		       char *err, size_t errlen);
bool store_commit_step(struct store *s, uint64_t budget_us);
void store_commit_finish(struct store *s);
bool store_committing(const struct store *s);

uint64_t store_epoch_number(const struct store_epoch *e);
uint64_t store_epoch_base(const struct store_epoch *e);
uint64_t store_epoch_npages(const struct store_epoch *e);

void store_epoch_free(struct store_epoch *e);
static inline void store_epoch_freep(struct store_epoch **e)
{
	if (*e)
		store_epoch_free(*e);
}
#define _cleanup_store_epoch_ __attribute__((cleanup(store_epoch_freep)))

/*
 * An image for restore_image_mem(): *out borrows the store's metadata and
 * owns its runs (sorted by address, adjacent pages merged) and one
 * contiguous page buffer. Release it with store_release_image(), never
 * image_free(). -ENOENT before the first commit.
 */
int store_build_image(struct store *s, struct image *out);
void store_release_image(struct image *img);

/*
 * Write the store as one full epoch (EPOCH_BEGIN with base 0, MAPPINGS,
 * THREADS, FDS, PAGES, COMMIT), each message handed to emit as packed.
 * Returns 0, or the first negative value emit returned, or -ENOMEM.
 */
typedef int (*store_emit_fn)(const void *p, size_t n, void *arg);
int store_pack_full(const struct store *s, store_emit_fn emit, void *arg);
