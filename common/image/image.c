/*
 * image.c - construction and teardown of the in-memory image.
 */
#include "image.h"

#include <sys/mman.h>

#include "../util.h"

struct image *image_new(void)
{
	struct image *img = calloc(1, sizeof(*img));
	if (!img)
		return NULL;
	img->version = IMAGE_VERSION;
	img->exe_file = -1;
	img->dumpable = 1;
	return img;
}

void image_free(struct image *img)
{
	for (size_t i = 0; i < img->n_files; i++)
		free(img->files[i].path);
	for (size_t i = 0; i < img->n_threads; i++) {
		free(img->threads[i].xstate);
		image_creds_free(&img->threads[i].creds);
	}
	for (size_t i = 0; i < img->n_fds; i++) {
		free(img->fds[i].path);
		free(img->fds[i].data);
		free(img->fds[i].tfds);
	}
	free(img->files);
	free(img->vmas);
	free(img->runs);
	free(img->threads);
	free(img->fds);
	free(img->exe);
	free(img->cwd);
	free(img->mm.auxv);
	if (img->pages_mapped && img->pages)
		munmap(img->pages, img->pages_map_len ? img->pages_map_len : img->pages_len);
	else
		free(img->pages);
	free(img);
}

void image_creds_free(struct image_creds *cr)
{
	for (uint32_t i = 0; i < cr->n_filters; i++)
		free(cr->filters[i].insns);
	free(cr->filters);
	free(cr->groups);
	cr->filters = NULL;
	cr->groups = NULL;
	cr->n_filters = cr->n_groups = 0;
}

int image_add_file(struct image *img, const char *path)
{
	for (size_t i = 0; i < img->n_files; i++)
		if (strcmp(img->files[i].path, path) == 0)
			return i;

	struct image_file *f = array_push(&img->files, &img->n_files, &img->cap_files, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->path = strdup(path);
	if (!f->path)
		return -ENOMEM;
	return img->n_files - 1;
}

bool vma_carries_contents(bool shared, uint32_t kind)
{
	return !shared &&
	       (kind == VMA_ANON || kind == VMA_FILE || kind == VMA_HEAP || kind == VMA_STACK);
}
