/*
 * test_image_creds.c - the identity and clock records of an image survive
 * image_write()/image_read() and the epoch's process and thread records
 * exactly, and images and records of another version are refused with a
 * line that says which version.
 */
#include <fcntl.h>
#include <msgpack.h>
#include <stdlib.h>
#include <unistd.h>

#include "image/image.h"
#include "unit.h"

static uint32_t groups[] = {4, 24, 4242};
static uint64_t insns_a[] = {0x0000000400000020ULL, 0x7fff000000000006ULL};
static uint64_t insns_b[] = {0x0005000d00000006ULL};

static struct image *sample(void)
{
	struct image *img = image_new();
	img->pid = 4242;
	img->exe = strdup("/bin/true");
	img->exe_file = image_add_file(img, "/bin/true");
	img->dumpable = 0;
	img->clocks = (struct image_clocks){.monotonic = 100000123456789LL,
					    .boottime = 100001123456789LL,
					    .realtime = 1764622800123456789LL};
	img->threads = calloc(1, sizeof(*img->threads));
	img->n_threads = img->cap_threads = 1;
	struct image_creds *cr = &img->threads[0].creds;
	img->threads[0].tid = 4242;
	*cr = (struct image_creds){.uid = 65534, .euid = 1, .suid = 2, .fsuid = 3,
				   .gid = 65534, .egid = 5, .sgid = 6, .fsgid = 7,
				   .cap_inh = 0x400, .cap_prm = 0x401, .cap_eff = 0x1,
				   .cap_bnd = 0x1fffeffffffULL, .cap_amb = 0x400,
				   .securebits = 0x2f, .no_new_privs = true};
	cr->groups = malloc(sizeof(groups));
	memcpy(cr->groups, groups, sizeof(groups));
	cr->n_groups = 3;
	cr->filters = calloc(2, sizeof(*cr->filters));
	cr->n_filters = 2;
	cr->filters[0] = (struct image_seccomp_filter){.flags = 0, .len = 2,
						       .insns = malloc(sizeof(insns_a))};
	memcpy(cr->filters[0].insns, insns_a, sizeof(insns_a));
	cr->filters[1] = (struct image_seccomp_filter){.flags = 2, .len = 1,
						       .insns = malloc(sizeof(insns_b))};
	memcpy(cr->filters[1].insns, insns_b, sizeof(insns_b));
	return img;
}

static void check_same(const struct image *a, const struct image *b)
{
	const struct image_creds *x = &a->threads[0].creds, *y = &b->threads[0].creds;

	CHECK_INT(a->dumpable, b->dumpable);
	CHECK_INT(a->clocks.monotonic, b->clocks.monotonic);
	CHECK_INT(a->clocks.boottime, b->clocks.boottime);
	CHECK_INT(a->clocks.realtime, b->clocks.realtime);
	CHECK_INT(x->uid, y->uid);
	CHECK_INT(x->euid, y->euid);
	CHECK_INT(x->suid, y->suid);
	CHECK_INT(x->fsuid, y->fsuid);
	CHECK_INT(x->gid, y->gid);
	CHECK_INT(x->egid, y->egid);
	CHECK_INT(x->sgid, y->sgid);
	CHECK_INT(x->fsgid, y->fsgid);
	CHECK_INT(x->n_groups, y->n_groups);
	CHECK(x->n_groups == y->n_groups &&
	      memcmp(x->groups, y->groups, x->n_groups * sizeof(uint32_t)) == 0);
	CHECK_INT(x->cap_inh, y->cap_inh);
	CHECK_INT(x->cap_prm, y->cap_prm);
	CHECK_INT(x->cap_eff, y->cap_eff);
	CHECK_INT(x->cap_bnd, y->cap_bnd);
	CHECK_INT(x->cap_amb, y->cap_amb);
	CHECK_INT(x->securebits, y->securebits);
	CHECK_INT(x->no_new_privs, y->no_new_privs);
	CHECK_INT(x->n_filters, y->n_filters);
	for (uint32_t i = 0; i < x->n_filters && i < y->n_filters; i++) {
		CHECK_INT(x->filters[i].flags, y->filters[i].flags);
		CHECK_INT(x->filters[i].len, y->filters[i].len);
		CHECK(x->filters[i].len == y->filters[i].len &&
		      memcmp(x->filters[i].insns, y->filters[i].insns, x->filters[i].len * 8) == 0);
	}
}

static void test_file_round_trip(const char *dir)
{
	struct image *img = sample(), *back = NULL;
	const char *what;
	char err[512] = "";

	CHECK_INT(image_write(img, dir, &what), 0);
	CHECK_INT(image_read(dir, &back, err, sizeof(err)), 0);
	if (back) {
		check_same(img, back);
		image_free(back);
	} else {
		fprintf(stderr, "image_read: %s\n", err);
	}
	image_free(img);
}

/* An image written by an older build is refused, saying which version it is. */
static void test_old_file_refused(const char *dir)
{
	char path[4096], err[512] = "";
	struct image *back = NULL;
	uint32_t v1 = 1; /* little-endian, at offset 8 */

	snprintf(path, sizeof(path), "%s/core.img", dir);
	int fd = open(path, O_WRONLY);
	CHECK(fd >= 0 && pwrite(fd, &v1, 4, 8) == 4);
	close(fd);
	CHECK(image_read(dir, &back, err, sizeof(err)) < 0);
	CHECK_CONTAINS(err, "unsupported image version 1 (this build reads version 2)");
	if (back)
		image_free(back);
}

static void test_records(void)
{
	struct image *img = sample();
	struct image *back = image_new();
	msgpack_sbuffer p, t;
	char err[512] = "";

	msgpack_sbuffer_init(&p);
	msgpack_sbuffer_init(&t);
	image_pack_process(img, &p);
	image_pack_thread(&img->threads[0], &t);
	back->threads = calloc(1, sizeof(*back->threads));
	back->n_threads = back->cap_threads = 1;
	CHECK_INT(image_unpack_process(back, p.data, p.size, err, sizeof(err)), 0);
	CHECK_INT(image_unpack_thread(&back->threads[0], t.data, t.size, err, sizeof(err)), 0);
	check_same(img, back);
	image_free(back);

	/* A process record from a primary of another version. */
	msgpack_sbuffer_clear(&p);
	img->version = 1;
	image_pack_process(img, &p);
	back = image_new();
	CHECK(image_unpack_process(back, p.data, p.size, err, sizeof(err)) < 0);
	CHECK_CONTAINS(err, "process record: unsupported image version 1");
	image_free(back);

	/* dumpable out of range names the field. */
	img->version = IMAGE_VERSION;
	img->dumpable = 5;
	CHECK(image_validate(img, err, sizeof(err)) < 0);
	CHECK_CONTAINS(err, "'dumpable' is 5");
	msgpack_sbuffer_destroy(&p);
	msgpack_sbuffer_destroy(&t);
	image_free(img);
}

int main(void)
{
	char dir[] = "/tmp/test_image_creds-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	test_file_round_trip(dir);
	test_old_file_refused(dir);
	test_records();
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	UNIT_EXIT();
}
