/*
 * journal.h - a service's warm image made durable, under STATE_DIR/SERVICE/.
 *
 * Files. Every committed epoch is written as one file holding an 8-byte
 * magic and then exactly the wire messages of the epoch, EPOCH_BEGIN to
 * COMMIT, as wire.h encodes them:
 *   NNNNNNNNNNNNNNNNNNNN.full    an epoch with base 0: a whole image
 *   NNNNNNNNNNNNNNNNNNNN.delta   an epoch that applies to the one before it
 * N is the journal's own sequence number, not the epoch: a primary that
 * starts afresh numbers its epochs from 1 again, and file order must not
 * go back with it. So the on-disk format is the wire format, and loading a
 * file is receiving an epoch again (store.h): its COMMIT carries the
 * epoch checksum over everything before it (XXH3-128, wire.h says why that
 * is enough), which is the file's checksum, and nothing of a file reaches
 * the store before that checksum has verified. Files of protocol version 2,
 * magic JOURNAL_MAGIC_SHA256, hold a SHA-256 COMMIT and still load, so an
 * upgraded backup keeps the image it held; it writes JOURNAL_MAGIC files.
 *
 * Loading takes the newest .full that replays, then each later file in
 * order. A file that fails (torn, corrupt, or not chaining on the one
 * before) is dropped with a log line, and so are the files after it:
 * the image stays one whole epoch, the last good one. Files older than the
 * .full in use are deleted.
 *
 * Writing is done by one thread for the whole daemon: write, fsync,
 * rename into place, fsync the directory. The event loop never waits on
 * the disk, so heartbeats and failover timing do not depend on it; each
 * write's callback runs back on the loop, in the order the writes were
 * queued, and that is when an epoch may be acknowledged.
 *
 * Compaction. After JOURNAL_COMPACT_EPOCHS deltas, or once the deltas
 * outweigh four times the .full they build on (plus some slack), a forked child writes the store as a
 * new .full: fork() gives it a copy-on-write snapshot of the warm image for
 * free (Redis's BGSAVE), so the loop goes on receiving epochs meanwhile.
 * When it has written and renamed the file, the files it merged are
 * deleted.
 *
 * After a takeover a marker file "serving" (pid, epoch) says so, written
 * before the restore starts: a daemon that restarts must never restore a
 * second copy of a service that already runs here.
 */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "store.h"

#define JOURNAL_MAGIC "CSEPOCH2"	       /* 8 bytes, no NUL on disk: XXH3-128 COMMIT */
#define JOURNAL_MAGIC_SHA256 "CSEPOCH1" /* written by protocol version 2: SHA-256 COMMIT */
#define JOURNAL_COMPACT_EPOCHS 256
#define JOURNAL_COMPACT_SLACK (64u << 20) /* bytes of deltas always allowed */

struct event_base;
struct journal_writer;
struct journal;

int journal_writer_new(struct event_base *base, struct journal_writer **out);
/* Finish every queued write (running its callback) and stop the thread. */
void journal_writer_free(struct journal_writer *w);

/*
 * Open dir (created if missing, 0700) and load the image it holds into a
 * new store (empty if there is none). Returns 0 or -errno, logged.
 * Free the journal before its writer is freed, the store after the journal.
 */
int journal_open(struct journal_writer *w, const char *dir, const char *service,
		 struct journal **out, struct store **store_out);
/* A compaction under way is killed; its temporary file is removed at the next open. */
void journal_free(struct journal *j);

/*
 * Queue one committed epoch: record holds its messages as packed, EPOCH_BEGIN
 * to COMMIT (it is taken; the sbuffer is left empty). done runs on the loop
 * once the file is durable (r == 0) or could not be made so (r < 0, logged).
 * After a failed write, deltas fail until a full epoch has been written:
 * a delta on top of a missing file would be lost on the next load anyway.
 * Returns 0, or -ENOMEM (then done never runs and record is untouched).
 */
typedef void (*journal_done_fn)(int r, uint64_t epoch, void *arg);
int journal_append(struct journal *j, uint64_t epoch, uint64_t base_epoch, msgpack_sbuffer *record,
		   journal_done_fn done, void *arg);

/* Bytes queued and not yet durable. */
uint64_t journal_backlog(const struct journal *j);
/* The newest epoch on disk (0: none). */
uint64_t journal_durable_epoch(const struct journal *j);
/* How long ago the newest file journal_open() loaded had been written (0: none). */
uint64_t journal_loaded_age_us(const struct journal *j);
/* Bytes of the files the image is loaded from. */
uint64_t journal_disk_bytes(const struct journal *j);

/* journal_write, journal_fsync, journal_durable histograms for the status report. */
struct status_report;
void journal_report(const struct journal *j, struct status_report *r);

/* The takeover marker: written and synced before a restore, cleared if the restore failed. */
int journal_mark_serving(struct journal *j, pid_t pid, uint64_t epoch);
int journal_clear_serving(struct journal *j);
/* The marker as journal_open() found it or the last mark left it. */
bool journal_serving(const struct journal *j, pid_t *pid, uint64_t *epoch);

/* The stood-down marker (the service was stopped everywhere): set or cleared, synced. */
int journal_mark_stood_down(struct journal *j, bool on);
bool journal_stood_down(const struct journal *j);

/*
 * The operator's accept-new-incarnation, kept until it is used: set (over:
 * the incarnation whose image may be replaced) or cleared, synced. An
 * unreadable marker reads as given over incarnation 0 (any image).
 */
int journal_mark_accept_new(struct journal *j, bool on, uint64_t over);
bool journal_accept_new(const struct journal *j, uint64_t *over);
