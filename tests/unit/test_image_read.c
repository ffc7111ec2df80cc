/*
 * test_image_read.c - the image reader against hostile core.img bodies
 * (regressions of what fuzz/fuzz_image.c found).
 *
 * Each body is wrapped in a correct header and checksum, as image_write()
 * would write it, so the reader gets to decode it; each must be refused
 * with one line saying why, without a huge allocation first. (Built with
 * -Db_sanitize=address, the 64 GiB allocation msgpack-c used to attempt
 * for an array header claiming 2^32 elements aborts the test.)
 * Also: a thread's FPU state comes back byte for byte from a record that
 * leaves its zero tail off.
 */
#include <endian.h>
#include <errno.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "unit.h"

static char dir[] = "/tmp/checksync-unit-image-XXXXXX";

static void write_core(const void *body, size_t n)
{
	uint8_t buf[4096];
	uint32_t v = htole32(IMAGE_VERSION), z = 0;
	uint64_t blen = htole64(n);
	unsigned int mdlen = 32;
	char path[4200];
	FILE *f;

	memcpy(buf, IMAGE_MAGIC, 8);
	memcpy(buf + 8, &v, 4);
	memcpy(buf + 12, &z, 4);
	memcpy(buf + 16, &blen, 8);
	memcpy(buf + 24, body, n);
	EVP_Digest(buf, 24 + n, buf + 24 + n, &mdlen, EVP_sha256(), NULL);
	snprintf(path, sizeof(path), "%s/%s", dir, IMAGE_CORE_FILE);
	f = fopen(path, "w");
	fwrite(buf, 1, 24 + n + 32, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s", dir, IMAGE_PAGES_FILE);
	fclose(fopen(path, "w"));
}

static void check_refused(const char *what, const void *body, size_t n, const char *msg)
{
	struct image *img = NULL;
	char err[1024] = "";

	write_core(body, n);
	CHECK_INT(image_read(dir, &img, err, sizeof(err)), -EBADMSG);
	CHECK_CONTAINS(err, msg);
	CHECK(!strchr(err, '\n'));
	if (img)
		image_free(img);
	printf("%-40s %s\n", what, err);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/*
 * An AMX-sized XSAVE area (11008 bytes) whose tile data is zero: the record
 * carries the used part only, and unpacking gives back all 11008 bytes, the
 * zeros included, as PTRACE_SETREGSET needs the kernel's whole size.
 */
static void check_xstate_round_trip(void)
{
	enum { SIZE = 11008, USED = 2000 };
	static uint8_t xstate[SIZE];
	struct image_thread t = {.tid = 42, .xstate = xstate, .xstate_len = SIZE};
	struct image_thread back = {0};
	msgpack_sbuffer sb;
	char err[256] = "";

	for (int i = 0; i < USED; i++)
		xstate[i] = (uint8_t)(i * 7 + 1);
	msgpack_sbuffer_init(&sb);
	CHECK_INT(image_pack_thread(&t, &sb), 0);
	CHECK(sb.size < USED + 1024);
	CHECK_INT(image_unpack_thread(&back, sb.data, sb.size, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_INT(back.xstate_len, SIZE);
	CHECK(back.xstate && memcmp(back.xstate, xstate, SIZE) == 0);
	free(back.xstate);
	image_creds_free(&back.creds);
	msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
	/* Found by fuzz_image: {"process": {..., "rlimits": array32 of 2^32-1}} */
	static const uint8_t huge_array[] = {0x81, 0xa7, 'p', 'r', 'o', 'c', 'e', 's', 's',
					     0x81, 0xa7, 'r', 'l', 'i', 'm', 'i', 't', 's',
					     0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
	static const uint8_t huge_map[] = {0xdf, 0x10, 0x00, 0x00, 0x00, 0xc0, 0xc0};
	static const uint8_t long_str[] = {0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'};
	static const uint8_t nested[] = {0x91, 0x91, 0x91, 0xdc, 0xff, 0xff, 0xc0};

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	check_refused("array32 claiming 2^32 elements", huge_array, sizeof(huge_array),
		      "an array or map claims more elements than the rest of it could hold");
	check_refused("map32 claiming 2^28 pairs", huge_map, sizeof(huge_map),
		      "an array or map claims more elements");
	check_refused("str32 of 2 GiB", long_str, sizeof(long_str),
		      "a string or binary is longer than the rest of it");
	check_refused("nested arrays, the last too long", nested, sizeof(nested),
		      "an array or map claims more elements");
	check_refused("a header cut short", (const uint8_t[]){0xdd, 0x00}, 2,
		      "it ends inside a header");
	check_refused("the reserved byte 0xc1", (const uint8_t[]){0xc1}, 1,
		      "it holds an invalid byte");
	check_xstate_round_trip();
	nftw(dir, rm_one, 4, FTW_DEPTH | FTW_PHYS);
	UNIT_EXIT();
}
