/*
 * mem.c - rebuilding the address space at the old addresses.
 *
 * The husk's own mappings go first (all but our area and the vDSO group),
 * then the vDSO, [vvar] and [vvar_vclock] move to where the old process had
 * them - the Go runtime and glibc both cached pointers into the vDSO - and
 * every old mapping is recreated with MAP_FIXED. Page contents are written
 * last, through /proc/PID/mem, which also reaches read-only pages.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "log.h"
#include "restore.h"
#include "util.h"

static bool is_vdso_group(uint32_t kind)
{
	return kind == VMA_VDSO || kind == VMA_VVAR || kind == VMA_VVAR_VCLOCK;
}

static bool overlaps(uint64_t s1, uint64_t e1, uint64_t s2, uint64_t e2)
{
	return s1 < e2 && s2 < e1;
}

uint64_t restore_find_free_area(const struct restore *r, uint64_t len)
{
	for (uint64_t a = 0x100000000ULL; a < 0x7f0000000000ULL; a += 0x10000000ULL) {
		bool busy = false;
		for (size_t i = 0; i < r->img->n_vmas && !busy; i++)
			busy = overlaps(a, a + len, r->img->vmas[i].start, r->img->vmas[i].end);
		for (size_t i = 0; i < r->n_husk_vmas && !busy; i++)
			busy = overlaps(a, a + len, r->husk_vmas[i].start, r->husk_vmas[i].end);
		if (r->area && !busy)
			busy = overlaps(a, a + len, r->area, r->area + AREA_LEN);
		if (!busy)
			return a;
	}
	return 0;
}

static int unmap_husk(struct restore *r)
{
	for (size_t i = 0; i < r->n_husk_vmas; i++) {
		const struct proc_vma *v = &r->husk_vmas[i];
		if (is_vdso_group(v->kind) || v->kind == VMA_VSYSCALL || v->start == r->area)
			continue;
		long ret = restore_call(r, SYS_munmap, v->start, v->end - v->start);
		if (ret < 0)
			return restore_fail(r, ret, "cannot unmap husk mapping %#lx-%#lx (munmap)",
					    (unsigned long)v->start, (unsigned long)v->end);
	}
	return 0;
}

static const struct image_vma *image_vma_of_kind(const struct image *img, uint32_t kind)
{
	for (size_t i = 0; i < img->n_vmas; i++)
		if (img->vmas[i].kind == kind)
			return &img->vmas[i];
	return NULL;
}

/*
 * Move the husk's vDSO group to its old addresses. Through a temporary spot
 * first, since the old and new places may overlap.
 */
static int move_vdso(struct restore *r)
{
	uint64_t lo = UINT64_MAX, hi = 0;

	for (size_t i = 0; i < r->n_husk_vmas; i++)
		if (is_vdso_group(r->husk_vmas[i].kind)) {
			lo = r->husk_vmas[i].start < lo ? r->husk_vmas[i].start : lo;
			hi = r->husk_vmas[i].end > hi ? r->husk_vmas[i].end : hi;
		}
	if (!hi)
		return 0;
	uint64_t tmp = restore_find_free_area(r, hi - lo);
	if (!tmp)
		return restore_fail(r, -ENOMEM, "no free address range to move the vDSO through");

	for (int phase = 0; phase < 2; phase++)
		for (size_t i = 0; i < r->n_husk_vmas; i++) {
			const struct proc_vma *v = &r->husk_vmas[i];
			if (!is_vdso_group(v->kind))
				continue;
			uint64_t len = v->end - v->start, from, to;
			if (phase == 0) {
				from = v->start;
				to = tmp + (v->start - lo);
			} else {
				const struct image_vma *old = image_vma_of_kind(r->img, v->kind);
				from = tmp + (v->start - lo);
				if (!old) {
					long ret = restore_call(r, SYS_munmap, from, len);
					if (ret < 0)
						return restore_fail(r, ret, "cannot unmap %s at %#lx "
								    "(munmap)", v->path,
								    (unsigned long)from);
					continue;
				}
				if (old->end - old->start != len)
					return restore_fail(r, -EXDEV,
							    "%s is %lu bytes here and was %lu: the "
							    "kernels differ",
							    v->path, (unsigned long)len,
							    (unsigned long)(old->end - old->start));
				to = old->start;
			}
			long ret = restore_call(r, SYS_mremap, from, len, len,
						MREMAP_MAYMOVE | MREMAP_FIXED, to);
			if (ret < 0 && ret > -4096)
				return restore_fail(r, ret, "cannot move %s from %#lx to %#lx (mremap)",
						    v->path, (unsigned long)from, (unsigned long)to);
		}
	return 0;
}

static int open_in_husk(struct restore *r, const struct image_vma *v, int *fds)
{
	if (fds[v->file] >= 0)
		return fds[v->file];
	const char *path = r->img->files[v->file].path;
	uint64_t p;
	int flags = (v->shared && (v->prot & PROT_WRITE)) ? O_RDWR : O_RDONLY;
	long fd = inject_put(&r->inj, 0, path, strlen(path) + 1, &p);
	if (fd >= 0)
		fd = restore_call(r, SYS_openat, AT_FDCWD, p, flags | O_CLOEXEC | O_NONBLOCK, 0);
	if (fd < 0)
		return restore_fail(r, fd, "mapping %#lx-%#lx: cannot open %s (openat)",
				    (unsigned long)v->start, (unsigned long)v->end, path);
	fds[v->file] = fd;
	return fd;
}

static int map_vma(struct restore *r, const struct image_vma *v, int *fds)
{
	int flags = MAP_FIXED | (v->shared ? MAP_SHARED : MAP_PRIVATE);
	long fd = -1, ret;

	if (v->kind == VMA_FILE) {
		fd = open_in_husk(r, v, fds);
		if (fd < 0)
			return fd;
	} else {
		flags |= MAP_ANONYMOUS;
		if (v->kind == VMA_STACK)
			flags |= MAP_GROWSDOWN;
	}
	ret = restore_call(r, SYS_mmap, v->start, v->end - v->start, v->prot, flags, fd,
			   v->kind == VMA_FILE ? v->pgoff : 0);
	if (ret < 0 && ret > -4096)
		return restore_fail(r, ret, "mapping %#lx-%#lx: cannot map it (mmap)",
				    (unsigned long)v->start, (unsigned long)v->end);
	if ((uint64_t)ret != v->start)
		return restore_fail(r, -EFAULT, "mapping %#lx-%#lx landed at %#lx",
				    (unsigned long)v->start, (unsigned long)v->end,
				    (unsigned long)ret);
	return 0;
}

static int map_image_vmas(struct restore *r)
{
	const struct image *img = r->img;
	_cleanup_free_ int *fds = malloc(sizeof(int) * (img->n_files + 1));
	int rc = 0;

	if (!fds)
		return restore_fail(r, -ENOMEM, "no memory for %zu files", img->n_files);
	for (size_t i = 0; i < img->n_files; i++)
		fds[i] = -1;
	for (size_t i = 0; i < img->n_vmas && rc == 0; i++) {
		const struct image_vma *v = &img->vmas[i];
		if (is_vdso_group(v->kind) || v->kind == VMA_VSYSCALL)
			continue;
		rc = map_vma(r, v, fds);
	}
	for (size_t i = 0; i < img->n_files && rc == 0; i++) {
		long ret = fds[i] >= 0 ? restore_call(r, SYS_close, fds[i]) : 0;
		if (ret < 0)
			rc = restore_fail(r, ret, "cannot close %s after mapping it (close)",
					  img->files[i].path);
	}
	return rc;
}

static int write_pages(struct restore *r)
{
	const struct image *img = r->img;
	for (size_t i = 0; i < img->n_runs; i++) {
		const struct image_pagerun *run = &img->runs[i];
		int rc = inject_fault(&r->inj);
		if (rc >= 0)
			rc = tracer_poke(r->memfd, run->addr, img->pages + run->offset,
					 run->npages * PAGE_SIZE);
		if (rc < 0)
			return restore_fail(r, rc, "cannot write memory %#lx-%#lx",
					    (unsigned long)run->addr,
					    (unsigned long)(run->addr + run->npages * PAGE_SIZE));
	}
	return 0;
}

int restore_mem(struct restore *r)
{
	int rc = unmap_husk(r);
	if (rc >= 0)
		rc = move_vdso(r);
	if (rc >= 0)
		rc = map_image_vmas(r);
	if (rc >= 0)
		rc = write_pages(r);
	return rc;
}
