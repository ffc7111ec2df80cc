/*
 * session.c - see session.h.
 *
 * Each epoch reuses the one-shot capture (capture_held) with threads that
 * stay seized between epochs, then keeps only the pages whose hash differs
 * from what the backup last received. The copy into the staging buffer is
 * the only part inside the pause; hashing and filtering run after the
 * service is going again.
 */
#include "session.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

#include "goruntime.h"
#include "log.h"
#include "util.h"

int capture_session_open(pid_t pid, const char *debug_file, struct capture_session **out)
{
	struct capture_session *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->c.pid = pid;
	s->c.memfd = -1;
	s->c.cache = &s->cache;
	s->c.debug_file = debug_file;
	wp_init(&s->wp);
	s->c.seize_options = PTRACE_O_EXITKILL;
	s->c.img = image_new();
	if (!s->c.img) {
		free(s);
		return -ENOMEM;
	}
	r = capture_exe(&s->c);
	if (r >= 0)
		r = capture_load_layout(&s->c);
	if (r >= 0) {
		s->c.memfd = tracer_mem_open(pid, 0);
		if (s->c.memfd < 0)
			r = log_error_errno(s->c.memfd, "cannot open memory of pid %d", pid);
	}
	if (r < 0) {
		capture_session_close(s);
		return r;
	}
	*out = s;
	return 0;
}

void capture_session_close(struct capture_session *s)
{
	if (!s)
		return;
	if (s->c.img && s->c.img->pages == s->staging)
		s->c.img->pages = NULL;
	if (s->staging)
		munmap(s->staging, s->staging_len);
	if (s->c.img)
		image_free(s->c.img);
	capture_cleanup(&s->c);
	dirty_reset(&s->shipped);
	wp_free(&s->wp);
	free(s->cache.threads);
	capture_file_cache_free(&s->files);
	free(s);
}

struct keep_ctx {
	const struct image *img;
};

/* The backup drops pages outside the private mappings that carry contents; so do we. */
static bool page_in_content_vma(void *p, uint64_t addr)
{
	const struct image *img = ((struct keep_ctx *)p)->img;
	for (size_t i = 0; i < img->n_vmas; i++) {
		const struct image_vma *v = &img->vmas[i];
		if (addr >= v->start && addr < v->end)
			return !v->shared && (v->kind == VMA_ANON || v->kind == VMA_FILE ||
					      v->kind == VMA_HEAP || v->kind == VMA_STACK);
	}
	return false;
}

/* Replace img's pages (the staging copy) with only the changed ones, in a buffer of its own. */
static int keep_changed_pages(struct capture_session *s, struct image *img, bool full)
{
	struct image_pagerun *runs = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;

	if (full)
		dirty_reset(&s->shipped);
	struct keep_ctx kc = {.img = img};
	int r = dirty_retain(&s->shipped, page_in_content_vma, &kc);
	if (r < 0)
		return r;

	uint8_t *out = malloc(img->pages_len ? img->pages_len : 1);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_runs; i++) {
		for (uint64_t p = 0; p < img->runs[i].npages; p++) {
			uint64_t addr = img->runs[i].addr + p * PAGE_SIZE;
			const uint8_t *data = img->pages + img->runs[i].offset + p * PAGE_SIZE;
			uint64_t h = dirty_page_hash(data);
			if (!dirty_changed(&s->shipped, addr, h))
				continue;
			if (dirty_set(&s->shipped, addr, h) < 0)
				goto nomem;
			struct image_pagerun *last = n ? &runs[n - 1] : NULL;
			if (last && last->addr + last->npages * PAGE_SIZE == addr) {
				last->npages++;
			} else {
				last = array_push(&runs, &n, &cap, sizeof(*last));
				if (!last)
					goto nomem;
				*last = (struct image_pagerun){.addr = addr, .npages = 1,
							       .offset = total};
			}
			memcpy(out + total, data, PAGE_SIZE);
			total += PAGE_SIZE;
		}
	}
	free(img->runs);
	img->runs = runs;
	img->n_runs = img->cap_runs = n;
	img->pages = out;
	img->pages_len = total;
	img->pages_mapped = false;
	img->pages_map_len = 0;
	return 0;
nomem:
	free(out);
	free(runs);
	return -ENOMEM;
}

/* Give the image a copy of the staged pages, so the staging buffer stays ours. */
static int take_staged_pages(struct image *img)
{
	uint8_t *out = malloc(img->pages_len ? img->pages_len : 1);
	if (!out)
		return -ENOMEM;
	memcpy(out, img->pages, img->pages_len);
	img->pages = out;
	img->pages_mapped = false;
	img->pages_map_len = 0;
	return 0;
}

int capture_session_epoch(struct capture_session *s, bool full, struct image **out,
			  struct epoch_report *rep)
{
	struct capture *c = &s->c;
	int r;

	image_free(c->img);
	c->img = image_new();
	if (!c->img)
		return -ENOMEM;
	c->img->pid = c->pid;
	r = capture_exe(c);
	if (r < 0)
		return r;
	if (!s->staging) {
		r = capture_staging_prepare(c, capture_staging_estimate(c->pid));
		if (r < 0)
			return r;
	} else {
		c->img->pages = s->staging;
		c->img->pages_mapped = true;
		c->img->pages_map_len = s->staging_len;
	}

	c->wp = s->use_wp ? &s->wp : NULL;
	if (full)
		s->cache.valid = false; /* a full epoch re-reads everything */
	c->wp_filter = s->use_wp && !full;
	r = capture_stop_all(c);
	if (r >= 0)
		r = capture_held(c);
	/* A final epoch (handover) leaves the service held, frozen, exactly as captured. */
	int rr = s->hold_after_epoch && r >= 0 ? 0 : capture_resume_all(c);
	if (r >= 0)
		r = rr;
	if (s->hold_after_epoch && r >= 0)
		s->frozen = true;
	rep->pause_us = now_us() - c->stop_us;

	/* The staging buffer may have been replaced by a bigger one: keep whichever is current. */
	s->staging = c->img->pages;
	s->staging_len = c->img->pages_map_len;
	if (r < 0) {
		c->img->pages = NULL;
		return r;
	}
	rep->pages_captured = c->img->pages_len / PAGE_SIZE;
	rep->mode = c->stats.mode;
	rep->safepoint_tries = c->stats.safepoint_tries;
	rep->fallback = c->stats.fallback;

	r = capture_hash_files(c->img, &s->files);
	/* Write tracking already limited the copy to written pages; hashing would only cost. */
	if (r >= 0)
		r = s->use_wp ? take_staged_pages(c->img) : keep_changed_pages(s, c->img, full);
	if (r < 0) {
		/* Leave the staging buffer with the session, not with the image. */
		if (c->img->pages == s->staging)
			c->img->pages = NULL;
		return r;
	}
	rep->pages_shipped = c->img->pages_len / PAGE_SIZE;
	*out = c->img;
	c->img = image_new();
	return c->img ? 0 : -ENOMEM;
}

int capture_session_freeze(struct capture_session *s)
{
	if (s->frozen)
		return 0;
	int r = capture_stop_all(&s->c);
	if (r >= 0)
		s->frozen = true;
	return r;
}

int capture_session_thaw(struct capture_session *s)
{
	if (!s->frozen)
		return 0;
	s->frozen = false;
	return capture_resume_all(&s->c);
}

static void forget_thread(struct capture *c, pid_t tid)
{
	for (size_t i = 0; i < c->n_threads; i++)
		if (c->threads[i].tid == tid) {
			c->threads[i] = c->threads[--c->n_threads];
			c->leader = NULL;
			return;
		}
}

int capture_session_reap(struct capture_session *s, int *status)
{
	int st;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG | __WALL)) > 0) {
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			forget_thread(&s->c, pid);
			if (pid == s->c.pid) {
				*status = st;
				return 1;
			}
			continue;
		}
		if (!WIFSTOPPED(st))
			continue;
		int sig = WSTOPSIG(st), event = st >> 16;
		/* A signal for the service: pass it on. Anything else: let it run. */
		int deliver = (event == 0 && sig != SIGTRAP) ? sig : 0;
		if (event == PTRACE_EVENT_STOP && s->frozen)
			continue;
		ptrace(PTRACE_CONT, pid, 0, deliver);
	}
	return 0;
}
