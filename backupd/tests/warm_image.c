/*
 * warm_image.c - the backup's image as an image directory, for a restore
 * beside the original (tests/test_reach.py).
 *
 *   warm_image STATE_DIR/SERVICE IMAGE_DIR
 *
 * Loads the journal under STATE_DIR/SERVICE into a store, exactly as the
 * backup does when it starts, and writes the image it holds into IMAGE_DIR
 * for `checksync-backupd restore --image`. Give it a copy of a running
 * backupd's journal: loading may trim a torn tail. Prints "epoch E" and
 * exits 0, or one error line and exits 2.
 */
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>

#include "image/image.h"
#include "journal.h"
#include "store.h"
#include "util.h"

int main(int argc, char **argv)
{
	struct event_base *base = event_base_new();
	struct journal_writer *w = NULL;
	struct journal *j = NULL;
	struct store *s = NULL;
	struct image warm = {0};
	const char *what = NULL;
	int rc = 2;

	if (argc != 3) {
		fprintf(stderr, "usage: %s STATE_DIR/SERVICE IMAGE_DIR\n", argv[0]);
		return 2;
	}
	if (!base || journal_writer_new(base, &w) < 0 ||
	    journal_open(w, argv[1], "warm_image", &j, &s) < 0)
		fprintf(stderr, "warm_image: cannot load the journal in %s\n", argv[1]);
	else if (store_build_image(s, &warm) < 0)
		fprintf(stderr, "warm_image: the journal in %s holds no image\n", argv[1]);
	else if (image_write(&warm, argv[2], &what) < 0)
		fprintf(stderr, "warm_image: cannot %s in %s\n", what, argv[2]);
	else
		rc = 0;
	if (rc == 0)
		printf("epoch %" PRIu64 "\n", store_epoch(s));
	if (warm.n_runs || warm.pages)
		store_release_image(&warm);
	journal_free(j);
	store_free(s);
	journal_writer_free(w);
	if (base)
		event_base_free(base);
	return rc;
}
