/*
 * fuzz_image.c - the image reader (common/image/image_io.c) against any
 * core.img body.
 *
 * The input is the msgpack body; the target wraps it in a correct header
 * and checksum (as image_write() does), so every input reaches the body's
 * decoding and the checks after it instead of stopping at the checksum. The
 * pages file is empty. image_read() must either succeed or fail with one
 * line.
 */
#include <endian.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/image.h"
#include "seeds.h"

#define HDR_LEN 24

static char dir[] = "/tmp/checksync-fuzz-image-XXXXXX";
static char core[4200], pages[4200];

static int write_all(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "we");
	int ok = f && fwrite(p, 1, n, f) == n;

	if (f)
		fclose(f);
	return ok ? 0 : -1;
}

/* A seed: the body of a core.img that image_write() made of a small image. */
static void seed_from_image(const char *corpus)
{
	struct image *img = image_new();
	const char *what;
	char *buf = NULL;
	size_t n = 0;
	FILE *f;

	if (!img)
		return;
	img->pid = 42;
	if (image_write(img, dir, &what) == 0 && (f = fopen(core, "re"))) {
		buf = malloc(1 << 20);
		n = buf ? fread(buf, 1, 1 << 20, f) : 0;
		fclose(f);
		if (n > HDR_LEN + 32)
			seeds_write(corpus, "small", buf + HDR_LEN, n - HDR_LEN - 32);
	}
	free(buf);
	image_free(img);
}

static void remove_dir(void)
{
	unlink(core);
	unlink(pages);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *corpus = seeds_dir_if_empty(*argc, *argv);

	if (!mkdtemp(dir))
		abort();
	atexit(remove_dir);
	snprintf(core, sizeof(core), "%s/%s", dir, IMAGE_CORE_FILE);
	snprintf(pages, sizeof(pages), "%s/%s", dir, IMAGE_PAGES_FILE);
	if (corpus)
		seed_from_image(corpus);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(HDR_LEN + size + 32);
	uint32_t v = htole32(IMAGE_VERSION), z = 0;
	uint64_t blen = htole64(size);
	unsigned int mdlen = 32;
	struct image *img = NULL;
	char err[1024] = "";

	if (!buf)
		return 0;
	memcpy(buf, IMAGE_MAGIC, 8);
	memcpy(buf + 8, &v, 4);
	memcpy(buf + 12, &z, 4);
	memcpy(buf + 16, &blen, 8);
	memcpy(buf + HDR_LEN, data, size);
	EVP_Digest(buf, HDR_LEN + size, buf + HDR_LEN + size, &mdlen, EVP_sha256(), NULL);
	if (write_all(core, buf, HDR_LEN + size + 32) == 0 && write_all(pages, "", 0) == 0) {
		if (image_read(dir, &img, err, sizeof(err)) == 0)
			image_free(img);
		else if (!err[0] || strchr(err, '\n'))
			abort(); /* a failure says why, in one line */
	}
	free(buf);
	return 0;
}
