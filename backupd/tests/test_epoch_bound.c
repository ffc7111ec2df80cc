/*
 * test_epoch_bound.c - an epoch may not carry more pages than the service's
 * mappings can hold (store.c): every page waits in memory until COMMIT, so
 * without the bound a peer could make the backup hold up to
 * STORE_MAX_EPOCH_PAGES (64 GiB) for a service of a few megabytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "unit.h"
#include "wire.h"

#define PAGE 4096

static int add_pages(struct store_epoch *e, uint64_t addr, uint32_t n, char *err, size_t len)
{
	uint8_t *data = calloc(n, PAGE);
	struct wire_msg m = {.type = WIRE_PAGES, .pages = {.addr = addr, .npages = n, .data = data}};
	int r = store_epoch_add(e, &m, err, len);

	free(data);
	return r;
}

int main(void)
{
	struct wire_vma vmas[] = {
	    {.start = 0x10000, .end = 0x14000, .prot = 3, .kind = VMA_ANON},  /* 4 pages */
	    {.start = 0x20000, .end = 0x22000, .prot = 3, .kind = VMA_HEAP}}; /* 2 pages */
	struct wire_msg maps = {.type = WIRE_MAPPINGS, .mappings = {.vmas = vmas, .n = 2}};
	struct store *s = store_new();
	struct store_epoch *e = NULL;
	char err[512] = "";

	CHECK(s != NULL);
	CHECK_INT(store_epoch_begin(s, &(struct wire_epoch_begin){.epoch = 1}, &e, err, sizeof(err)), 0);
	CHECK_INT(store_epoch_add(e, &maps, err, sizeof(err)), 0);
	/* Six pages fit... */
	CHECK_INT(add_pages(e, 0x10000, 4, err, sizeof(err)), 0);
	CHECK_INT(add_pages(e, 0x20000, 2, err, sizeof(err)), 0);
	CHECK_INT(store_epoch_npages(e), 6);
	/* ... a seventh does not: refused, with a reason naming the bound. */
	CHECK_INT(add_pages(e, 0x20000, 1, err, sizeof(err)), -EBADMSG);
	CHECK_STR(err, "PAGES: epoch 1 carries more than the 6 pages its mappings can hold");
	/* Nor does one PAGES message larger than all the mappings. */
	store_epoch_free(e);
	e = NULL;
	CHECK_INT(store_epoch_begin(s, &(struct wire_epoch_begin){.epoch = 1}, &e, err, sizeof(err)), 0);
	CHECK_INT(store_epoch_add(e, &maps, err, sizeof(err)), 0);
	CHECK_INT(add_pages(e, 0x10000, 1024, err, sizeof(err)), -EBADMSG);
	CHECK_INT(store_epoch_npages(e), 0);
	store_epoch_free(e);
	store_free(s);
	UNIT_EXIT();
}
