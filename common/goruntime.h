/*
 * goruntime.h - what CheckSync reads from a Go executable's ELF and DWARF.
 *
 * Layouts come from the binary itself (libelf, libdw), never from tables of
 * offsets per Go version: a field that moves in another Go release is found
 * where it is, and one that disappears is an error naming it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

struct go_field {
	int64_t off;  /* byte offset in its struct, -1 if unknown */
	uint32_t size;
};

struct go_layout {
	/* addresses of runtime globals */
	uint64_t mheap, allm, allgs, gcphase;
	uint64_t vdso_clock_gettime, vdso_gettimeofday, epfd, netpoll_break_rd;
	/* runtime.mheap */
	struct go_field heap_lock_key, heap_allspans, heap_allarenas, heap_arenas;
	/* runtime.heapArena: its heap bitmap, when this Go version has one there (off < 0: none) */
	struct go_field arena_bitmap;
	uint64_t arena_l1_bits, arena_l2_bits;
	/* runtime.mspan */
	struct go_field span_start, span_npages, span_state, span_elemsize;
	/* runtime.m */
	struct go_field m_procid, m_alllink, m_locks, m_mallocing, m_g0, m_gsignal, m_curg;
	/* runtime.g */
	struct go_field g_status, g_stack_lo, g_stack_hi, g_sched_sp, g_syscallsp;
	uint32_t gcphase_size;
	/* constants */
	uint64_t page_size, arena_bytes, arena_base_offset;
	uint64_t gc_off, span_in_use, span_manual;
	uint64_t g_dead, g_runnable, g_waiting, g_syscall, g_preempted;
};

struct go_binary {
	bool is_go;
	bool has_dwarf;
	uint64_t allm_addr;   /* &runtime.allm */
	int64_t m_procid_off; /* offsetof(runtime.m, procid) */
	int64_t m_alllink_off;
};

/* Inspect an executable. Returns 0 (check info->is_go) or -errno if it cannot be read. */
int go_binary_inspect(const char *path, struct go_binary *info);

/*
 * Read every layout the live capture needs. Returns 0, -ENODATA when the
 * binary has no DWARF at all, or -ENOENT with err naming the first missing
 * symbol, type, field or constant.
 */
int go_layout_read(const char *path, struct go_layout *l, char *err, size_t errlen);
