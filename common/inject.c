/*
 * inject.c - see inject.h.
 */
#include "inject.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "image/image.h"
#include "util.h"

int inject_find_syscall_insn(int memfd, const struct proc_vma *vmas, size_t n, uint64_t *insn)
{
	for (size_t i = 0; i < n; i++) {
		const struct proc_vma *v = &vmas[i];
		if (v->kind != VMA_VDSO)
			continue;
		size_t len = v->end - v->start;
		_cleanup_free_ uint8_t *buf = malloc(len);
		if (!buf)
			return -ENOMEM;
		int r = tracer_peek(memfd, v->start, buf, len);
		if (r < 0)
			return r;
		/* Any "0f 05" will do, even inside another instruction: we jump straight to it. */
		for (size_t j = 0; j + 1 < len; j++)
			if (buf[j] == 0x0f && buf[j + 1] == 0x05) {
				*insn = v->start + j;
				return 0;
			}
	}
	return -ENOEXEC;
}

int inject_read_fault(struct inject_fault *f, const char *side)
{
	const char *spec = getenv("CHECKSYNC_FAULT");
	char hang[8] = "";
	size_t l = strlen(side);

	*f = (struct inject_fault){0};
	if (!spec || !*spec || strncmp(spec, side, l) != 0 || spec[l] != '-')
		return 0;
	if (sscanf(spec + l + 1, "%31[a-z-]:%u:%7s", f->step, &f->n, hang) < 2 || !f->n ||
	    (hang[0] && strcmp(hang, "hang") != 0)) {
		*f = (struct inject_fault){0};
		return -EINVAL;
	}
	f->hang = hang[0] != 0;
	return 0;
}

void inject_step(struct injector *in, const char *step)
{
	in->step = step;
	in->ops = 0;
}

int inject_fault(struct injector *in)
{
	in->ops++;
	if (!in->fault.n || in->ops != in->fault.n || !in->step ||
	    strcmp(in->fault.step, in->step) != 0)
		return 0;
	return -ECANCELED;
}

int inject_scratch_map(struct injector *in, size_t len)
{
	long a = inject_call(in, SYS_mmap, 0, len, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a < 0 && a > -4096)
		return (int)a;
	in->scratch = a;
	in->scratch_len = len;
	return 0;
}

int inject_scratch_unmap(struct injector *in)
{
	long r = in->scratch ? inject_call(in, SYS_munmap, in->scratch, in->scratch_len) : 0;
	in->scratch = 0;
	in->scratch_len = 0;
	return r < 0 ? (int)r : 0;
}

int inject_put(struct injector *in, size_t off, const void *p, size_t len, uint64_t *addr)
{
	int r = inject_fault(in);
	if (r < 0)
		return r;
	if (!in->scratch || off + len > in->scratch_len)
		return -E2BIG;
	r = tracer_poke(in->memfd, in->scratch + off, p, len);
	if (r < 0)
		return r;
	*addr = in->scratch + off;
	return 0;
}

int inject_get(struct injector *in, uint64_t addr, void *p, size_t len)
{
	int r = inject_fault(in);
	return r < 0 ? r : tracer_peek(in->memfd, addr, p, len);
}

long inject_syscall(struct injector *in, struct tracee *t, long nr, uint64_t a1, uint64_t a2,
		    uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6)
{
	long ret;
	int r = inject_fault(in);

	if (r < 0 && !in->fault.hang)
		return r;
	if (r < 0) /* a call that never returns, for the deadline to end */
		nr = SYS_pause;
	if (!t)
		t = in->t;
	t->timeout_ms = in->timeout_ms;
	r = tracer_syscall(t, &ret, nr, a1, a2, a3, a4, a5, a6);
	return r < 0 ? r : ret;
}
