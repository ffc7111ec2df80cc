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
	/*
	 * What the reachability scan of new objects (capture/reach.c) reads;
	 * reach_ok is false when any of it is missing (then no scan).
	 * span_largetype is there from Go 1.22 on, with malloc headers.
	 */
	struct go_field span_freeindex, span_nelems, span_allocbits, span_sweepgen;
	struct go_field span_specials, span_spanclass, span_largetype, heap_sweepgen;
	struct go_field span_limit; /* optional (off -1): the end of a span's objects */
	bool reach_ok, malloc_headers;
	uint64_t min_size_malloc_header; /* objects larger than this carry a type word */
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

/*
 * Where an executable's DWARF is, found the way debuggers find it: in the
 * executable itself; else by libdwfl's standard lookup (by build-id under
 * ROOT/.build-id/xx/yyyy.debug, then by the .gnu_debuglink name in the
 * executable's directory, its .debug/ and ROOT/<its directory>, each
 * candidate checked by build-id or the link's CRC); else in a debug file the
 * service's configuration names, taken only when its build-id (or, for a Go
 * binary without one, Go's build ID) is the executable's. ROOT is
 * /usr/lib/debug unless the caller says otherwise.
 */
enum go_debug_source {
	GO_DEBUG_NONE = 0,
	GO_DEBUG_EXE,	    /* in the executable */
	GO_DEBUG_BUILD_ID,  /* ROOT/.build-id/xx/yyyy.debug */
	GO_DEBUG_DEBUGLINK, /* by .gnu_debuglink */
	GO_DEBUG_CONFIG,    /* the configured debug_file */
};

#define GO_DEBUG_ROOT_DEFAULT "/usr/lib/debug"

struct go_debuginfo {
	enum go_debug_source source;
	char path[4096];    /* the file with the DWARF; "" when none */
	char build_id[128]; /* the executable's: "gnu:HEX", "go:ID" or "" */
	char why[1024];	    /* when none: what was looked for, and what was refused */
};

const char *go_debug_source_name(enum go_debug_source s);

/*
 * Find the DWARF of exe. debug_file (the service's debug_file, or NULL) is
 * tried last; debug_root NULL means GO_DEBUG_ROOT_DEFAULT. Returns 0 with
 * out->source GO_DEBUG_NONE and out->why set when there is none, or -errno
 * if exe cannot be read.
 */
int go_debuginfo_find(const char *exe, const char *debug_file, const char *debug_root,
		      struct go_debuginfo *out);

/*
 * Inspect an executable; its DWARF is read from dwarf_file (as found by
 * go_debuginfo_find), or from the executable itself when NULL. Returns 0
 * (check info->is_go) or -errno if it cannot be read.
 */
int go_binary_inspect(const char *path, const char *dwarf_file, struct go_binary *info);

/*
 * Read every layout the live capture needs from the file holding the
 * executable's DWARF (the executable or its debug file). Returns 0, -ENODATA
 * when it has no DWARF at all, or -ENOENT with err naming the first missing
 * symbol, type, field or constant.
 */
int go_layout_read(const char *path, struct go_layout *l, char *err, size_t errlen);
