/*
 * epoch.c - see epoch.h.
 */
#include "epoch.h"

#include "util.h"

int epoch_wire_vmas(const struct image *img, struct wire_vma **out, uint32_t *n)
{
	struct wire_vma *v = calloc(img->n_vmas + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_vmas; i++) {
		const struct image_vma *iv = &img->vmas[i];
		v[i] = (struct wire_vma){.start = iv->start,
					 .end = iv->end,
					 .prot = iv->prot,
					 .kind = iv->kind,
					 .shared = iv->shared,
					 .pgoff = iv->pgoff};
		if (iv->file >= 0) {
			const struct image_file *f = &img->files[iv->file];
			v[i].path = f->path;
			v[i].file_size = f->size;
			v[i].sha256 = f->sha256;
		}
	}
	*out = v;
	*n = img->n_vmas;
	return 0;
}

static void clear_vmas(struct image *img)
{
	for (size_t i = 0; i < img->n_files; i++)
		free(img->files[i].path);
	free(img->files);
	free(img->vmas);
	img->files = NULL;
	img->vmas = NULL;
	img->n_files = img->cap_files = img->n_vmas = img->cap_vmas = 0;
	img->exe_file = -1;
}

int epoch_set_vmas(struct image *img, const struct wire_vma *v, uint32_t n, char *err,
		   size_t errlen)
{
	clear_vmas(img);
	for (uint32_t i = 0; i < n; i++) {
		struct image_vma *iv = array_push(&img->vmas, &img->n_vmas, &img->cap_vmas,
						  sizeof(*iv));
		if (!iv)
			return -ENOMEM;
		*iv = (struct image_vma){.start = v[i].start,
					 .end = v[i].end,
					 .prot = v[i].prot,
					 .kind = v[i].kind,
					 .shared = v[i].shared,
					 .pgoff = v[i].pgoff,
					 .file = -1};
		if (!v[i].path)
			continue;
		if (!v[i].sha256) {
			snprintf(err, errlen, "MAPPINGS: %s has no hash", v[i].path);
			return -EBADMSG;
		}
		int f = image_add_file(img, v[i].path);
		if (f < 0)
			return f;
		img->files[f].size = v[i].file_size;
		memcpy(img->files[f].sha256, v[i].sha256, 32);
		iv->file = f;
	}
	for (size_t i = 0; img->exe && i < img->n_files; i++)
		if (strcmp(img->files[i].path, img->exe) == 0)
			img->exe_file = i;
	return 0;
}

static void clear_threads(struct image *img)
{
	for (size_t i = 0; i < img->n_threads; i++) {
		free(img->threads[i].xstate);
		image_creds_free(&img->threads[i].creds);
	}
	free(img->threads);
	img->threads = NULL;
	img->n_threads = img->cap_threads = 0;
}

int epoch_set_threads(struct image *img, const struct wire_threads *t, char *err, size_t errlen)
{
	int r;

	if (t->n < 2) {
		snprintf(err, errlen, "THREADS: %u records, expected the process and >= 1 thread",
			 t->n);
		return -EBADMSG;
	}
	free(img->exe);
	free(img->cwd);
	free(img->mm.auxv);
	img->exe = img->cwd = NULL;
	img->mm.auxv = NULL;
	r = image_unpack_process(img, t->threads[0].data, t->threads[0].len, err, errlen);
	if (r < 0)
		return r;
	clear_threads(img);
	for (uint32_t i = 1; i < t->n; i++) {
		struct image_thread *it = array_push(&img->threads, &img->n_threads,
						     &img->cap_threads, sizeof(*it));
		if (!it)
			return -ENOMEM;
		r = image_unpack_thread(it, t->threads[i].data, t->threads[i].len, err, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}
