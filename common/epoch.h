/*
 * epoch.h - an image as the wire carries it, and back.
 *
 * The primary sends each epoch as MAPPINGS (the whole mapping table, with
 * the hash of every file behind a mapping), THREADS (blob 0 the process
 * record, then one blob per thread, leader first), FDS (the fd table) and
 * PAGES (only the pages that changed since the epoch it builds on). These
 * helpers turn a struct image into those messages' payloads and rebuild the
 * image's metadata on the backup; pages are the caller's business.
 */
#pragma once

#include "image/image.h"
#include "wire.h"

/* Sender. *out is malloc'd and points into img (paths, hashes): keep img alive. */
int epoch_wire_vmas(const struct image *img, struct wire_vma **out, uint32_t *n);

/* Receiver: replace img's mappings and files with these. */
int epoch_set_vmas(struct image *img, const struct wire_vma *v, uint32_t n, char *err,
		   size_t errlen);

/* Receiver: process record and threads from a THREADS message. */
int epoch_set_threads(struct image *img, const struct wire_threads *t, char *err, size_t errlen);
